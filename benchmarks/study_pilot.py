"""Pilot of the miniature study's generators, diagnostics and cost (docs/study.md, "Pilot"). Not a test of any claim.

  python benchmarks/study_pilot.py --workdir DIR                  # every part, ~15-25 min on the loaded 2-core CPU
  python benchmarks/study_pilot.py --workdir DIR --parts timing   # one part (data is generated once per DIR)
  python benchmarks/study_pilot.py --workdir DIR --parts report   # the tables of docs/study.md from DIR/*.json

Parts (each writes DIR/<part>.json; `report` prints them as the tables of docs/study.md):
  data    the study's source (IFS fractals, image-folder layout) and target (polarity lesions, Kaggle DR layout)
  source  (a) pretrains each planned model on the source with the planned recipe, then compares per-layer kernel
          std / He std, BN moments and conv1 spectral peakedness with 5 random inits and the Gabor bank
  probe   (b) frozen random-init features (5 inits per model, and Gabor conv1 + random rest): linear-probe AUC per
          block, 5-fold cross-validated within the target's train split
  learn   (c) random init trained on the target at the planned budget (5 seeds per model): validation AUC curve
  timing  (d) one train step per model at the planned size: one run alone, and N runs as one vmapped program,
          interleaved; one validation pass; then the study's cost from the design's run counts
Only random, Gabor-conv1 and source-pretraining runs happen here. No transfer, Mean-Var, transfusion, Slim or Gabor
fine-tuning is run: comparing inits on the target is the study's job, and running it now would be tuning towards
the answer.
"""

import argparse
import dataclasses
import functools
import inspect
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

PARTS = ("data", "source", "probe", "learn", "timing", "report")


@dataclasses.dataclass(frozen=True)
class Plan:
    """The design's sizes (docs/study.md is their source of truth; round 2 moves them into configs/study.py)."""

    image_size: int = 32
    models: tuple = (("small", (8, 16, 32, 32)), ("large", (16, 32, 64, 128)))  # cbr_small family: 7x7, 4 CBRs
    source_classes: int = 64
    source_per_class: int = 40
    source_test_per_class: int = 8
    pretrain_steps: int = 800
    pretrain_lr: float = 1e-3  # Adam, constant (the source loss only takes off after ~400 steps), no augmentation
    target_train: int = 2000  # the large training set; the small one is a per-seed subset of 200
    target_test: int = 1000  # 300 Public (validation), 700 Private (test)
    finetune_steps: int = 300
    finetune_lr: float = 1e-3  # Adam, cosine decay to 0
    batch_size: int = 32
    threshold: float = 0.90  # absolute steps-to-threshold level, fixed before this pilot ran
    probe_ceiling: float = 0.80  # a random-feature probe must stay below this (threshold - 0.1)
    eval_points: int = 32  # validation evaluations per fine-tuning run (40 log-spaced steps, ~32 distinct)
    # Fine-tuning runs per model in the design (docs/study.md, "Runs"): inits x data sizes x 5 seeds.
    runs: tuple = (("small", 25), ("large", 50))


PLAN = Plan()


def log(*args):
    print(*args, flush=True)


def _load_json(workdir, part):
    path = os.path.join(workdir, f"{part}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def _save_json(workdir, part, value):
    with open(os.path.join(workdir, f"{part}.json"), "w") as f:
        json.dump(value, f, indent=1)


def machine() -> str:
    load = os.getloadavg()
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}"


# ---------------------------------------------------------------- data


def make_data(workdir, plan=PLAN) -> dict:
    from transfusion_jax.data import generate

    paths = {"source": os.path.join(workdir, "source"), "target": os.path.join(workdir, "target")}
    ready = os.path.join(workdir, "DATA_READY")
    if not os.path.exists(ready):
        start = time.perf_counter()
        generate.write_source(
            paths["source"],
            plan.source_classes * plan.source_per_class,
            seed=0,
            size=plan.image_size,
            num_classes=plan.source_classes,
            num_test=plan.source_classes * plan.source_test_per_class,
            kind="fractals",
        )
        generate.write_tfds_dr_manual(
            paths["target"],
            plan.target_train,
            seed=1,
            size=plan.image_size,
            num_test=plan.target_test,
            lesions="polarity",
        )
        _save_json(workdir, "data", {"seconds": time.perf_counter() - start, "machine": machine(), **paths})
        open(ready, "w").close()
    return paths


def _common(config, widths, steps, seed, plan=PLAN):
    config.model.name = "cbr_small"
    config.model.overrides.widths = tuple(widths)
    config.data.image_size = plan.image_size
    config.data.num_workers = 0
    config.batch_size = plan.batch_size
    config.num_train_steps = steps
    config.checkpoint_every_steps = steps
    config.keep_checkpoints = 1
    config.progress_bar = False
    config.seed = seed
    config.optimizer.schedule = "cosine"
    return config


def target_config(paths, widths, seed, plan=PLAN, init="random"):
    from transfusion_jax.train import config_lib

    c = _common(config_lib.retina_config("cbr_small", init), widths, plan.finetune_steps, seed, plan)
    c.data.root = paths["target"]
    c.train_split, c.val_split, c.test_split = "train", "validation", ""  # the pilot never scores test
    c.optimizer.learning_rate = plan.finetune_lr
    c.auc_threshold = plan.threshold
    c.eval_every_steps = 10
    c.log_every_steps = 10
    return c


# ---------------------------------------------------------------- (a) source pretraining and weight diagnostics


def _random_variables(widths, num_classes, seed, plan=PLAN):
    import jax
    import jax.numpy as jnp

    from transfusion_jax.models import get_model

    model = get_model("cbr_small", num_classes, widths=tuple(widths))
    x = jnp.zeros((1, plan.image_size, plan.image_size, 3))
    return model, jax.device_get(model.init(jax.random.key(seed), x, train=False))


def _weight_diagnostics(variables) -> dict:
    from transfusion_jax.analysis import diagnostics

    params = variables["params"]
    return {
        "kernel_std_ratio": {k.split("/")[0]: v for k, v in diagnostics.kernel_std_ratios(params).items()},
        "bn": {k.split("/")[0]: v for k, v in diagnostics.batchnorm_moments(params).items()},
        "conv1_peakedness": diagnostics.conv1_structure(np.asarray(params["layer1"]["conv"]["kernel"]))["mean"],
    }


def part_source(workdir, paths, plan=PLAN) -> dict:
    from transfusion_jax import pretrained
    from transfusion_jax.analysis import diagnostics
    from transfusion_jax.surgery import gabor_filters
    from transfusion_jax.train import config_lib, trainer
    from transfusion_jax.train.writer import read_records

    out = {"machine": machine(), "models": {}}
    for name, widths in plan.models:
        wd = os.path.join(workdir, "pretrain", name)
        c = _common(config_lib.base_config(), widths, plan.pretrain_steps, 0, plan)
        c.data.name, c.data.root = "image_folder", paths["source"]
        c.train_split, c.val_split, c.test_split = "train", "test", ""  # source held-out split as validation
        c.optimizer.learning_rate, c.optimizer.schedule = plan.pretrain_lr, "constant"
        c.data.augment.enabled = False  # every source image is already a fresh instance of its class
        c.eval_every_steps = c.log_every_steps = plan.pretrain_steps // 4
        c.export_pretrained = True
        start = time.perf_counter()
        if not os.path.exists(os.path.join(wd, "pretrained.npz")):
            trainer.train_and_evaluate(c, wd)
        seconds = time.perf_counter() - start
        accuracy = {
            r["step"]: r["accuracy"] for r in read_records(os.path.join(wd, "metrics.jsonl")) if r["split"] == "val"
        }
        variables, _ = pretrained.load(os.path.join(wd, "pretrained.npz"))
        randoms = [_weight_diagnostics(_random_variables(widths, plan.source_classes, s, plan)[1]) for s in range(5)]
        kernel = np.asarray(variables["params"]["layer1"]["conv"]["kernel"])
        out["models"][name] = {
            "widths": list(widths),
            "seconds": seconds,
            "source_accuracy": accuracy,
            "chance": 1.0 / plan.source_classes,
            "pretrained": _weight_diagnostics(variables),
            "random": randoms,
            "gabor_peakedness": diagnostics.conv1_structure(gabor_filters.gabor_bank(kernel.shape))["mean"],
        }
        log(f"source {name}: {json.dumps(out['models'][name]['pretrained'])[:400]}")
    _save_json(workdir, "source", out)
    return out


# ---------------------------------------------------------------- (b) frozen random-feature probes


def _images_and_labels(config, split):
    import jax

    from transfusion_jax.data import build_dataset
    from transfusion_jax.train import partition

    ds = build_dataset(config, split, train=False)
    mesh = partition.make_data_mesh(jax.devices()[:1])
    images, labels = [], []
    for batch in ds.batches(250, mesh=mesh):
        valid = np.asarray(batch["valid"])
        images.append(np.asarray(batch["image"])[valid])
        labels.append(np.asarray(batch["label"])[valid])
    return np.concatenate(images), np.concatenate(labels)


def part_probe(workdir, paths, plan=PLAN) -> dict:
    """Probe AUC per block by 5-fold cross-validation within the target's train split (no validation or test image
    is used), for 5 random initialisations and the same with the Gabor bank as conv1."""
    from transfusion_jax.analysis import probes
    from transfusion_jax.surgery import schemes

    config = target_config(paths, plan.models[0][1], 0, plan)
    images, labels = _images_and_labels(config, "train")
    out = {"machine": machine(), "n_images": len(labels), "folds": 5, "models": {}}
    for name, widths in plan.models:
        per_init = {"random": [], "gabor_conv1": []}
        for seed in range(5):
            model, variables = _random_variables(widths, 2, 100 + seed, plan)
            gabor, _ = schemes.gabor(variables, [f"layer{i + 1}" for i in range(len(widths))])
            for init, v in (("random", variables), ("gabor_conv1", gabor)):
                chunks = (images[i : i + 250] for i in range(0, len(images), 250))
                pooled = probes.pooled_features(functools.partial(model.apply, train=False), v, chunks)
                per_init[init].append(
                    {block: probes.cross_validated_probe_auc(f, labels, seed=seed) for block, f in pooled.items()}
                )
        out["models"][name] = per_init
        log(f"probe {name}: {json.dumps(per_init)[:600]}")
    _save_json(workdir, "probe", out)
    return out


# ---------------------------------------------------------------- (c) random init learns the target


def part_learn(workdir, paths, plan=PLAN, seeds=(0, 1, 2, 3, 4)) -> dict:
    from transfusion_jax.train import trainer
    from transfusion_jax.train.writer import read_records

    out = {"machine": machine(), "models": {}}
    for name, widths in plan.models:
        runs = []
        for seed in seeds:
            wd = os.path.join(workdir, "learn", name, f"seed_{seed}")
            start = time.perf_counter()
            if not os.path.exists(os.path.join(wd, "summary.json")):
                trainer.train_and_evaluate(target_config(paths, widths, seed, plan), wd)
            curve = {
                r["step"]: r["auc"] for r in read_records(os.path.join(wd, "metrics.jsonl")) if r["split"] == "val"
            }
            runs.append({"seed": seed, "seconds": time.perf_counter() - start, "curve": curve})
            log(f"learn {name} seed {seed}: {curve}")
        out["models"][name] = runs
    _save_json(workdir, "learn", out)
    return out


# ---------------------------------------------------------------- (d) step cost and the study's budget


def _timed(fn):
    """(wall seconds, process CPU seconds) of one call. CPU time (all threads of this process) hardly depends on
    what else the machine runs; wall time does."""
    import jax

    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - wall, time.process_time() - cpu


def _step_body(model, tx):
    """The function `steps.make_train_step` jits, with every option off (nothing frozen, no aux loss): vmapping it is
    what a multi-run program does. It is private and its option parameters differ across versions, so they are
    filled by name."""
    from transfusion_jax.train import steps

    off = {"frozen": frozenset(), "frozen_stats": None, "aux_loss_weight": 0.0, "eval_blocks": ()}
    options = list(inspect.signature(steps._train_step).parameters)[3:-3]  # between loss_kind and (state, batch, rng)
    return functools.partial(steps._train_step, model, tx, "softmax", *(off[name] for name in options))


def part_timing(workdir, plan=PLAN, vmapped_runs=5, reps=10) -> dict:
    """Median seconds per train step (one run; `vmapped_runs` runs as one jax.vmap program), interleaved per round,
    and per validation pass. The step is the project's (train/steps.py), vmapped as-is."""
    import jax
    import jax.numpy as jnp
    import optax

    from transfusion_jax.train.state import TrainState

    b, s, n = plan.batch_size, plan.image_size, vmapped_runs
    out = {"machine": machine(), "jax": jax.__version__, "vmapped_runs": n, "models": {}}
    for name, widths in plan.models:
        model, _ = _random_variables(widths, 2, 0, plan)
        tx = optax.adam(1e-3)

        def init(rng, model=model, tx=tx):
            v = model.init(rng, jnp.zeros((1, s, s, 3)), train=False)
            return TrainState(jnp.zeros((), jnp.int32), v["params"], v["batch_stats"], tx.init(v["params"]))

        step = _step_body(model, tx)

        def batch(lead=()):
            return {
                "image": jax.random.normal(jax.random.key(1), lead + (b, s, s, 3)),
                "label": jnp.zeros(lead + (b,), jnp.int32),
                "label_mask": jnp.ones(lead + (b, 1)),
                "valid": jnp.ones(lead + (b,), bool),
            }

        one, many = init(jax.random.key(0)), jax.vmap(init)(jax.random.split(jax.random.key(0), n))
        one_step, many_step = jax.jit(step), jax.jit(jax.vmap(step))
        one_batch, many_batch = batch(), batch((n,))
        rng, rngs = jax.random.key(2), jax.random.split(jax.random.key(2), n)
        forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
        val = jnp.zeros((plan.target_test * 3 // 10, s, s, 3))
        variables = {"params": one.params, "batch_stats": one.batch_stats}
        jax.block_until_ready(
            (one_step(one, one_batch, rng), many_step(many, many_batch, rngs), forward(variables, val))
        )
        timed = {"step_one_run": [], "step_vmapped": [], "validation_pass": []}
        for _ in range(reps):  # interleaved, so load changes hit all three alike
            timed["step_one_run"].append(_timed(lambda: one_step(one, one_batch, rng)[1]))
            timed["step_vmapped"].append(_timed(lambda: many_step(many, many_batch, rngs)[1]))
            timed["validation_pass"].append(_timed(lambda: forward(variables, val)))
        row = {"widths": list(widths)}
        for what, values in timed.items():
            row[f"{what}_s"] = statistics.median(v[0] for v in values)
            row[f"{what}_cpu_s"] = statistics.median(v[1] for v in values)
        row["per_run_step_vmapped_s"] = row["step_vmapped_s"] / n
        row["per_run_step_vmapped_cpu_s"] = row["step_vmapped_cpu_s"] / n
        out["models"][name] = row
        log(f"timing {name}: {out['models'][name]}")
    out["budget"] = budget(out, plan)
    _save_json(workdir, "timing", out)
    return out


def budget(timing: dict, plan=PLAN) -> dict:
    """Seconds of pretraining + fine-tuning (with its validation passes) at the measured costs, one run after another
    ('sequential') or with the fine-tuning steps at the measured per-run cost of a vmapped program ('vmapped'); in
    wall seconds of this (loaded) machine and in CPU seconds (~ wall seconds of an idle machine, if XLA keeps one
    core busy per step; less if it keeps both)."""
    counts = dict(plan.runs)
    result = {}
    for unit, suffix in (("wall", "_s"), ("cpu", "_cpu_s")):
        for mode, key in (("sequential", "step_one_run"), ("vmapped", "per_run_step_vmapped")):
            total = 0.0
            for name, _ in plan.models:
                m = timing["models"][name]
                per_run = plan.finetune_steps * m[key + suffix] + plan.eval_points * m["validation_pass" + suffix]
                total += counts[name] * per_run + plan.pretrain_steps * m["step_one_run" + suffix]
            result[f"{mode}_{unit}_s"] = total
    return result


# ---------------------------------------------------------------- report


def _mean_sd(values):
    v = np.asarray(list(values), np.float64)
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v.mean():.3f}"


def _upper95(values):
    """Upper end of the two-sided 95 % t interval of the mean."""
    from scipy import stats

    v = np.asarray(list(values), np.float64)
    return v.mean() + stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)


def _first_above(curve: dict, level: float):
    return next((int(step) for step, auc in sorted(curve.items(), key=lambda kv: int(kv[0])) if auc > level), None)


def report(workdir, plan=PLAN) -> str:
    """The pilot's tables (markdown) from the parts' JSON files."""
    lines = []
    source = _load_json(workdir, "source")
    if source:
        lines += [f"### (a) Source pretraining ({source['machine']})", ""]
        for name, m in source["models"].items():
            acc = m["source_accuracy"]
            last = acc[max(acc, key=int)]
            layers = list(m["pretrained"]["kernel_std_ratio"])
            lines += [
                f"**{name}** {tuple(m['widths'])}: source test accuracy {last:.3f} after {plan.pretrain_steps} steps "
                f"(chance {m['chance']:.3f}); {m['seconds']:.0f} s.",
                "",
                "| layer | kernel std / He std, pretrained | random init (5 seeds) | BN gamma mean ± std (pretrained) "
                "| BN beta mean ± std (pretrained) |",
                "|---|---|---|---|---|",
            ]
            for layer in layers:
                bn = m["pretrained"]["bn"][layer]
                lines.append(
                    f"| {layer} | {m['pretrained']['kernel_std_ratio'][layer]:.3f} | "
                    f"{_mean_sd(r['kernel_std_ratio'][layer] for r in m['random'])} | "
                    f"{bn['scale_mean']:.3f} ± {bn['scale_std']:.3f} | {bn['bias_mean']:.3f} ± {bn['bias_std']:.3f} |"
                )
            lines += [
                "",
                f"conv1 spectral peakedness (share of power in the top 4 of 49 DFT bins; white-noise floor "
                f"{4 / 49:.3f}): pretrained {m['pretrained']['conv1_peakedness']:.3f}, random "
                f"{_mean_sd(r['conv1_peakedness'] for r in m['random'])}, Gabor bank {m['gabor_peakedness']:.3f}.",
                "",
            ]
    probe = _load_json(workdir, "probe")
    if probe:
        lines += [
            f"### (b) Frozen-feature linear probes on the target ({probe['machine']})",
            "",
            f"AUC of out-of-fold scores, {probe['folds']}-fold cross-validation within the {probe['n_images']} train "
            "images; 5 initialisations each: mean ± sd, upper end of the 95 % t interval of the mean, and the "
            "largest value.",
            "",
            "| model | init | " + " | ".join(f"{b}" for b in ("layer1", "layer2", "layer3", "layer4")) + " |",
            "|---|---|---|---|---|---|",
        ]
        for name, per_init in probe["models"].items():
            for init, runs in per_init.items():
                cells = [
                    f"{_mean_sd(r[b] for r in runs)} (≤ {_upper95(r[b] for r in runs):.3f}; "
                    f"max {max(r[b] for r in runs):.3f})"
                    for b in ("layer1", "layer2", "layer3", "layer4")
                ]
                lines.append(f"| {name} | {init} | " + " | ".join(cells) + " |")
        lines.append("")
    learn = _load_json(workdir, "learn")
    if learn:
        lines += [
            f"### (c) Random init on the target, planned budget ({learn['machine']})",
            "",
            f"Validation AUC every 10 steps; {plan.finetune_steps} steps of Adam 1e-3 with cosine decay, batch "
            f"{plan.batch_size}, {plan.target_train} train images.",
            "",
            f"| model | seed | first eval with AUC > {plan.threshold} | final validation AUC "
            "| sd of the last 5 evals |",
            "|---|---|---|---|---|",
        ]
        for name, runs in learn["models"].items():
            finals = []
            for run in runs:
                curve = {int(k): v for k, v in run["curve"].items()}
                tail = [curve[k] for k in sorted(curve)[-5:]]
                finals.append(curve[max(curve)])
                lines.append(
                    f"| {name} | {run['seed']} | {_first_above(curve, plan.threshold)} | {curve[max(curve)]:.3f} | "
                    f"{np.std(tail, ddof=1):.4f} |"
                )
            lines.append(f"| {name} | sd across seeds | | {np.std(finals, ddof=1):.4f} | |")
        lines.append("")
    timing = _load_json(workdir, "timing")
    if timing:
        lines += [
            f"### (d) Cost ({timing['machine']}, jax {timing['jax']})",
            "",
            f"Median over interleaved rounds; wall seconds on this machine and process CPU seconds; vmapped = "
            f"{timing['vmapped_runs']} runs as one `jax.vmap` program of the project's train step.",
            "",
            "| model | train step, one run | per run-step, vmapped | one run / vmapped (wall) "
            "| validation pass (300 images) |",
            "|---|---|---|---|---|",
        ]
        for name, m in timing["models"].items():
            lines.append(
                f"| {name} {tuple(m['widths'])} | {1e3 * m['step_one_run_s']:.0f} ms wall, "
                f"{1e3 * m['step_one_run_cpu_s']:.0f} ms CPU | {1e3 * m['per_run_step_vmapped_s']:.0f} ms wall, "
                f"{1e3 * m['per_run_step_vmapped_cpu_s']:.0f} ms CPU | "
                f"{m['step_one_run_s'] / m['per_run_step_vmapped_s']:.2f}x | "
                f"{1e3 * m['validation_pass_s']:.0f} ms wall, "
                f"{1e3 * m['validation_pass_cpu_s']:.0f} ms CPU |"
            )
        b = budget(timing, plan)
        lines += [
            "",
            "Pretraining + fine-tuning of the whole design: sequential "
            f"{b['sequential_wall_s'] / 60:.1f} min wall here, "
            f"{b['sequential_cpu_s'] / 60:.1f} CPU-min; vmapped {b['vmapped_wall_s'] / 60:.1f} min wall, "
            f"{b['vmapped_cpu_s'] / 60:.1f} CPU-min.",
            "",
        ]
    text = "\n".join(lines)
    print(text)
    return text


# ---------------------------------------------------------------- entry point


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = p.parse_args(argv)
    import jax

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(os.path.abspath(args.workdir), "jax_cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    os.makedirs(args.workdir, exist_ok=True)
    parts = [x for x in args.parts.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    paths = make_data(args.workdir)
    for part in parts:
        start = time.perf_counter()
        if part == "source":
            part_source(args.workdir, paths)
        elif part == "probe":
            part_probe(args.workdir, paths)
        elif part == "learn":
            part_learn(args.workdir, paths)
        elif part == "timing":
            part_timing(args.workdir)
        elif part == "report":
            report(args.workdir)
            continue
        log(f"{part}: {time.perf_counter() - start:.0f} s ({machine()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
