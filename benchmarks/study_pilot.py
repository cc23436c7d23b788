"""Pilot of the miniature study's generators, diagnostics and cost (docs/study.md, "Pilot"). Not a test of any claim.

  python benchmarks/study_pilot.py --workdir DIR                  # every part, ~15-25 min on the loaded 2-core CPU
  python benchmarks/study_pilot.py --workdir DIR --parts timing   # one part (data is generated once per DIR)
  python benchmarks/study_pilot.py --workdir DIR --parts report   # the tables of docs/study.md from DIR/*.json
  ... --variant mini --config.seeds='(0, 1)'                      # any design and field the quickstart takes

The sizes are the study's own design (transfusion_jax/experiments/study/design.py, the schema the quickstart reads;
'default' unless --variant), its data (study.execute.make_data) and its pretraining recipe (study.recipes); both
models are piloted whatever the design's cut. Parts (each writes DIR/<part>.json; `report` prints them as the tables
of docs/study.md):
  data    the study's source (IFS fractals, image-folder layout) and target (polarity lesions, Kaggle DR layout)
  source  (a) pretrains each model on the source with the study's recipe, then compares per-layer kernel std / He
          std, BN moments and conv1 spectral peakedness with 5 random inits and the Gabor bank
  probe   (b) frozen random-init features (5 inits per model, and Gabor conv1 + random rest): linear-probe AUC per
          block, 5-fold cross-validated within the target's train split
  learn   (c) random init trained on the target at the design's budget (its seeds, per model): validation AUC curve
  timing  (d) one train step per model at the design's size: one run alone, and N runs as one vmapped program,
          interleaved; one validation pass; then the study's cost from the design's run counts
Only random, Gabor-conv1 and source-pretraining runs happen here. No transfer, Mean-Var, transfusion, Slim or Gabor
fine-tuning is run: comparing inits on the target is the study's job, and running it now would be tuning towards
the answer. Round 1's tables (docs/study.md §8) came from this script before the design moved into the package, at
the sizes it then had (1,000 target test images, evaluations every 10 steps).
"""

import argparse
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

from transfusion_jax.experiments.study import design, execute, recipes  # noqa: E402
from transfusion_jax.experiments.study import workdir as workdir_lib  # noqa: E402
from transfusion_jax.train import config_lib, rundir  # noqa: E402

PARTS = ("data", "source", "probe", "learn", "timing", "report")
LEARN_EVAL_EVERY = 10  # the learning curves are read every 10 steps (the design's own grid is log-spaced)


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


def piloted(c):
    """The design with both models run: the pilot measures both, whatever the CPU cut."""
    c = c.copy_and_resolve_references()
    c.models_run = design.MODELS
    return c


def runs_per_model(c) -> dict[str, int]:
    """Fine-tuning runs of each model in the whole design (Slim's among the large model's)."""
    return {m: sum(1 for k in design.plan(piloted(c)) if k.model == m) for m in design.MODELS}


# ---------------------------------------------------------------- data


def make_data(workdir, c) -> dict:
    paths = execute.make_data(workdir, c, log)
    if not os.path.exists(os.path.join(workdir, "data.json")):
        _save_json(workdir, "data", {"machine": machine(), **paths})
    return paths


def target_config(c, paths, model, seed, workdir=""):
    """The study's fine-tuning config of a random-init run on the full data, read every LEARN_EVAL_EVERY steps and
    without a checkpoint (random init needs none; the pilot may run before any pretraining)."""
    config = recipes.finetune_config(c, paths, design.RunKey(model, "full", "random", seed), workdir)
    config.pretrained = ""
    config.eval_steps = ()
    config.eval_every_steps = config.log_every_steps = LEARN_EVAL_EVERY
    return config


# ---------------------------------------------------------------- (a) source pretraining and weight diagnostics


def _random_variables(c, widths, num_classes, seed):
    import jax
    import jax.numpy as jnp

    from transfusion_jax.models import get_model

    model = get_model(c.family, num_classes, widths=tuple(widths))
    x = jnp.zeros((1, c.image_size, c.image_size, 3))
    return model, jax.device_get(model.init(jax.random.key(seed), x, train=False))


def _weight_diagnostics(variables) -> dict:
    from transfusion_jax.analysis import diagnostics

    params = variables["params"]
    return {
        "kernel_std_ratio": {k.split("/")[0]: v for k, v in diagnostics.kernel_std_ratios(params).items()},
        "bn": {k.split("/")[0]: v for k, v in diagnostics.batchnorm_moments(params).items()},
        "conv1_peakedness": diagnostics.conv1_structure(np.asarray(params["layer1"]["conv"]["kernel"]))["mean"],
    }


def part_source(workdir, paths, c) -> dict:
    from transfusion_jax import pretrained
    from transfusion_jax.analysis import diagnostics
    from transfusion_jax.surgery import gabor_filters
    from transfusion_jax.train.writer import read_records

    out = {"machine": machine(), "models": {}}
    summaries = execute.pretrain_all(workdir, piloted(c), paths, log)
    for name in design.MODELS:
        wd = workdir_lib.pretrain_dir(workdir, name)
        accuracy = {
            r["step"]: r["accuracy"] for r in read_records(os.path.join(wd, rundir.METRICS)) if r["split"] == "val"
        }
        variables, _ = pretrained.load(workdir_lib.checkpoint_of(workdir, name))
        randoms = [_weight_diagnostics(_random_variables(c, c.widths[name], c.source.classes, s)[1]) for s in range(5)]
        kernel = np.asarray(variables["params"]["layer1"]["conv"]["kernel"])
        out["models"][name] = {
            "widths": list(c.widths[name]),
            "seconds": summaries[name]["seconds"],
            "source_accuracy": accuracy,
            "chance": 1.0 / c.source.classes,
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


def part_probe(workdir, paths, c) -> dict:
    """Probe AUC per block by 5-fold cross-validation within the target's train split (no validation or test image
    is used), for 5 random initialisations and the same with the Gabor bank as conv1."""
    from transfusion_jax.analysis import probes
    from transfusion_jax.surgery import schemes

    images, labels = _images_and_labels(target_config(c, paths, "small", 0), "train")
    out = {"machine": machine(), "n_images": len(labels), "folds": 5, "models": {}}
    for name in design.MODELS:
        widths = c.widths[name]
        per_init = {"random": [], "gabor_conv1": []}
        for seed in range(5):
            model, variables = _random_variables(c, widths, 2, 100 + seed)
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


def part_learn(workdir, paths, c) -> dict:
    from transfusion_jax.train import trainer
    from transfusion_jax.train.writer import read_records

    out = {"machine": machine(), "models": {}}
    for name in design.MODELS:
        runs = []
        for seed in c.seeds:
            wd = os.path.join(workdir, "learn", name, f"seed_{seed}")
            start = time.perf_counter()
            if not rundir.is_finished(wd):
                trainer.train_and_evaluate(target_config(c, paths, name, seed), wd)
            curve = {r["step"]: r["auc"] for r in read_records(os.path.join(wd, rundir.METRICS)) if r["split"] == "val"}
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


def part_timing(workdir, c, vmapped_runs=5, reps=10) -> dict:
    """Median seconds per train step (one run; `vmapped_runs` runs as one jax.vmap program), interleaved per round,
    and per validation pass. The step is the project's (train/steps.py), vmapped as-is."""
    import jax
    import jax.numpy as jnp
    import optax

    from transfusion_jax.train.state import TrainState

    b, s, n = c.batch_size, c.image_size, vmapped_runs
    out = {"machine": machine(), "jax": jax.__version__, "vmapped_runs": n, "models": {}}
    for name in design.MODELS:
        widths = c.widths[name]
        model, _ = _random_variables(c, widths, 2, 0)
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
        val = jnp.zeros((c.target.validation, s, s, 3))
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
    out["budget"] = budget(out, c)
    _save_json(workdir, "timing", out)
    return out


def budget(timing: dict, c) -> dict:
    """Seconds of pretraining + fine-tuning (with its validation passes) at the measured costs, one run after another
    ('sequential') or with the fine-tuning steps at the measured per-run cost of a vmapped program ('vmapped'); in
    wall seconds of this (loaded) machine and in CPU seconds (~ wall seconds of an idle machine, if XLA keeps one
    core busy per step; less if it keeps both)."""
    counts, evaluations = runs_per_model(c), len(c.eval_steps)
    result = {}
    for unit, suffix in (("wall", "_s"), ("cpu", "_cpu_s")):
        for mode, key in (("sequential", "step_one_run"), ("vmapped", "per_run_step_vmapped")):
            total = 0.0
            for name in design.MODELS:
                m = timing["models"][name]
                per_run = c.finetune.steps * m[key + suffix] + evaluations * m["validation_pass" + suffix]
                total += counts[name] * per_run + c.pretrain.steps * m["step_one_run" + suffix]
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


def report(workdir, c) -> str:
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
                f"**{name}** {tuple(m['widths'])}: source test accuracy {last:.3f} after {c.pretrain.steps} steps "
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
            f"Validation AUC every {LEARN_EVAL_EVERY} steps; {c.finetune.steps} steps of Adam "
            f"{c.finetune.learning_rate:g} with cosine decay, batch {c.batch_size}, {c.target.train} train images.",
            "",
            f"| model | seed | first eval with AUC > {c.threshold} | final validation AUC | sd of the last 5 evals |",
            "|---|---|---|---|---|",
        ]
        for name, runs in learn["models"].items():
            finals = []
            for run in runs:
                curve = {int(k): v for k, v in run["curve"].items()}
                tail = [curve[k] for k in sorted(curve)[-5:]]
                finals.append(curve[max(curve)])
                lines.append(
                    f"| {name} | {run['seed']} | {_first_above(curve, c.threshold)} | {curve[max(curve)]:.3f} | "
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
            f"| validation pass ({c.target.validation} images) |",
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
        b = budget(timing, c)
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
    p.add_argument("--variant", default="default", choices=design.VARIANTS, help="the study design piloted")
    args, config_flags = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:  # --config.FIELD=VALUE, parsed by ml_collections as the quickstart parses them
        c = config_lib.apply_flags(design.get_config(args.variant), config_flags)
    except ValueError as e:
        p.error(str(e))
    import jax

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(os.path.abspath(args.workdir), "jax_cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    os.makedirs(args.workdir, exist_ok=True)
    parts = [x for x in args.parts.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    paths = make_data(args.workdir, c)
    for part in parts:
        start = time.perf_counter()
        if part == "source":
            part_source(args.workdir, paths, c)
        elif part == "probe":
            part_probe(args.workdir, paths, c)
        elif part == "learn":
            part_learn(args.workdir, paths, c)
        elif part == "timing":
            part_timing(args.workdir, c)
        elif part == "report":
            report(args.workdir, c)
            continue
        log(f"{part}: {time.perf_counter() - start:.0f} s ({machine()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
