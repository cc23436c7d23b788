"""The quickstart driver: configs/quickstart.py end to end, offline, on a laptop CPU.

  python -m transfusion_jax.experiments.quickstart --workdir DIR [--mini] [--config.FIELD=VALUE ...]

1. writes a synthetic "natural image" source set (image-folder layout) and a synthetic fundus target set in the
   Kaggle DR / TFDS manual-dir layout (transfusion_jax.data.generate) under DIR/data;
2. pretrains a tiny CBR-Small on the source set and exports it as a transfusion_jax.pretrained checkpoint (the
   stand-in for ImageNet weights);
3. fine-tunes on the target (moderate DR = grade >= 2) from random, transfer, Mean-Var, transfusion of each prefix,
   and synthetic Gabor conv1, over a few seeds (DIR/runs/<init>/seed_<k>), with configs/retina.py's recipe, the
   runs stacked into one program (`runs.train_many`; each still writes its own workdir);
4. measures CCA(Rand, ImNet) vs CCA(Rand, Rand) per layer, each layer's similarity to its init, relative weight
   change, and draws AUC curves, CCA bars and conv1 filters before/after (transfusion_jax.experiments.figures);
5. writes DIR/report.md (quickstart_report). Every number in it is computed from the runs in DIR.

Rerunning with the same DIR skips finished data, runs and analyses (each run's summary.json is its DONE marker).
"""

import argparse
import json
import os
import sys
import time

import ml_collections

from transfusion_jax.data import generate
from transfusion_jax.experiments import figures, quickstart_report, run_weights, runs
from transfusion_jax.models import block_names
from transfusion_jax.train import compile_cache, config_lib
from transfusion_jax.train.writer import read_records

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def load_config(mini: bool = False, overrides=()) -> ml_collections.ConfigDict:
    """configs/quickstart.py ('mini' or 'default') with `FIELD=VALUE` overrides applied."""
    module = runs.load_config_module(os.path.join(CONFIG, "quickstart.py"))
    return config_lib.apply_overrides(module.get_config("mini" if mini else "default"), overrides)


def blocks(q) -> tuple:
    return block_names(q.model, widths=tuple(q.widths))


def run_dir(workdir: str, init: str, seed: int) -> str:
    return os.path.join(workdir, "runs", runs.init_dirname(init), f"seed_{seed}")


# ---------------------------------------------------------------- data and the training configs


def make_data(workdir: str, q) -> dict[str, str]:
    """Generated source and target sets in their real on-disk layouts (skipped if already complete)."""
    paths = {"source": os.path.join(workdir, "data", "source"), "target": os.path.join(workdir, "data", "retina")}
    ready = os.path.join(workdir, "data", "READY")
    if not os.path.exists(ready):
        generate.write_source(
            paths["source"],
            q.source_train,
            seed=0,
            size=q.native_size,
            num_classes=q.source_classes,
            num_test=q.source_test,
        )
        generate.write_tfds_dr_manual(
            paths["target"], q.target_train, seed=1, size=q.native_size, num_test=q.target_test
        )
        with open(ready, "w") as f:
            json.dump(q.to_dict(), f)
    return paths


def _common(config, q, steps: int, seed: int):
    config.model.name = q.model
    config.model.overrides.widths = tuple(q.widths)
    config.data.image_size = q.image_size
    config.data.num_workers = 0
    config.batch_size = q.batch_size
    config.num_train_steps = steps
    config.eval_every_steps = q.eval_every
    config.log_every_steps = q.eval_every
    config.checkpoint_every_steps = steps  # one checkpoint, at the end: runs are short, resume is rarely needed
    config.keep_checkpoints = 1
    config.progress_bar = False  # the quickstart prints one line per run instead
    config.export_pretrained = True  # final weights as .npz: the pretrained model, and the analyses' inputs
    config.seed = seed
    return config


def pretrain_config(paths: dict[str, str], q):
    """The source-task pretraining: CBR on the 10-class image folder, Adam 1e-3 (a stand-in for ImageNet)."""
    c = _common(config_lib.base_config(), q, q.pretrain_steps, seed=0)
    c.data.name = "image_folder"
    c.data.root = paths["source"]
    c.train_split, c.val_split, c.test_split = "train", "test", ""  # source accuracy only; the final weights export
    c.eval_every_steps = max(q.eval_every, q.pretrain_steps // 5)
    return c


def finetune_config(paths: dict[str, str], q, init: str, seed: int, pretrained: str):
    """The target task as configs/retina.py sets it up (moderate DR, Adam 1e-3), at quickstart size."""
    c = _common(config_lib.retina_config(q.model, init), q, q.finetune_steps, seed)
    c.data.root = paths["target"]
    c.train_split, c.val_split, c.test_split = "train", "validation", "test"  # Kaggle Public / Private
    c.pretrained = "" if init == "random" else pretrained  # gabor uses it only to scale the filters
    c.auc_threshold = q.threshold
    return c


# ---------------------------------------------------------------- training


def train_all(workdir: str, paths: dict[str, str], q, log=print) -> dict:
    """Pretrain, then every (init, seed), the fine-tuning runs stacked into one program (`runs.train_many`, at most
    q.max_runs_per_program together); prints a line per run; returns {'pretrained', 'summaries', 'seconds'}."""
    pretrained = os.path.join(workdir, "runs", "pretrain", "pretrained.npz")
    jobs = [(init, seed) for init in q.inits for seed in q.seeds]
    total = len(jobs) + 1
    log(f"[1/{total}] pretrain on source ...")
    summary = runs.run(pretrain_config(paths, q), os.path.dirname(pretrained))
    accuracy = (summary["val"]["final"] or {}).get("accuracy", float("nan"))
    took = "skipped (finished before)" if summary["skipped"] else f"{summary['seconds']:.1f}s"
    log(f"[1/{total}] pretrain on source: source accuracy {accuracy:.3f}, {took}")
    seconds, summaries = {"pretrain/None": summary["seconds"]}, {("pretrain", None): summary}
    labels = [f"[{n}/{total}] fine-tune {init} seed {seed}" for n, (init, seed) in enumerate(jobs, 2)]
    for label in labels:
        log(f"{label} ...")

    def done(k: int, outcome) -> None:
        if not isinstance(outcome, Exception):
            log(f"{labels[k]}: {runs.describe(outcome)}")

    configs = [finetune_config(paths, q, init, seed, pretrained) for init, seed in jobs]
    results = runs.train_many(
        configs,
        [run_dir(workdir, init, seed) for init, seed in jobs],
        max_runs_per_program=q.max_runs_per_program,
        on_done=done,
        log=log,
    )
    for (init, seed), result in zip(jobs, results):
        seconds[f"{init}/{seed}"] = result["seconds"]
        summaries[(init, seed)] = result
    return {"pretrained": pretrained, "summaries": summaries, "seconds": seconds}


# ---------------------------------------------------------------- analyses


def analyse(workdir: str, q, log=print) -> dict:
    """Fig. 2 (random vs transfer at the same seed; two random seeds), similarity to init per layer (Fig. 3) and
    relative weight change (paper 5.3); SVCCA (99 % variance) with spatial positions as datapoints, on every test
    image. Cached in DIR/analysis/analysis.json."""
    out_path = os.path.join(workdir, "analysis", "analysis.json")
    if os.path.exists(out_path):
        with open(out_path) as f:
            return json.load(f)
    run = {(init, seed): run_weights.RunWeights(run_dir(workdir, init, seed)) for init in q.inits for seed in q.seeds}
    layers = list(blocks(q))
    batches = run_weights.eval_batches(run[(q.inits[0], q.seeds[0])].config, q.batch_size)
    seeds = list(q.seeds[: q.analysis_seeds])
    result = {"method": "svcca", "layers": layers, "num_images": int(sum(len(b) for b in batches))}
    pairs = {"rand_imnet": [], "rand_rand": []}
    if "transfer" in q.inits and "random" in q.inits:
        log(f"analysis: CCA(Rand, ImNet) and CCA(Rand, Rand), seeds {seeds}")
        pairs["rand_imnet"] = [(run[("random", s)], run[("transfer", s)]) for s in seeds]
        pairs["rand_rand"] = [
            (run[("random", a)], run[("random", b)]) for i, a in enumerate(seeds) for b in seeds[i + 1 :]
        ]
    fig2 = figures.fig2(pairs, batches, layers)
    result.update(rand_imnet=fig2["rand_imnet"], rand_rand=fig2["rand_rand"], to_init={}, weight_change={})
    for init in [i for i in ("random", "transfer") if i in q.inits]:
        log(f"analysis: similarity to init, {init}, seeds {seeds}")
        fig3 = figures.fig3([run[(init, s)] for s in seeds], batches, layers=layers)
        result["to_init"][init] = [r["similarity"] for r in fig3["runs"].values()]
    for init in q.inits:
        change = figures.weight_change([run[(init, s)] for s in q.seeds])
        result["weight_change"][init] = list(change["runs"].values())
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    return result


def draw_filters(workdir: str, q) -> dict[str, str]:
    """conv1 filters at init and after fine-tuning (paper Fig. 5) for random, transfer and Gabor, first seed."""
    out = {}
    for init in [i for i in ("random", "transfer", "gabor") if i in q.inits]:
        run = run_weights.RunWeights(run_dir(workdir, init, q.seeds[0]))
        paths = figures.conv1_filters(run, os.path.join(workdir, "figures"), f"filters_{init}", scale=10)
        out.update({f"{init}_{when}": path for when, path in paths.items()})
    return out


# ---------------------------------------------------------------- entry point


def run_quickstart(workdir: str, q, log=print) -> str:
    """Everything, resumable; returns the path of report.md."""
    start, cpu = time.perf_counter(), os.times()
    workdir = os.path.abspath(workdir)  # configs record paths under it; keep them valid from any directory
    os.makedirs(workdir, exist_ok=True)
    log(f"quickstart in {workdir}: {len(q.inits)} inits x {len(q.seeds)} seeds + pretraining")
    paths = make_data(workdir, q)
    trained = train_all(workdir, paths, q, log)
    analysis = analyse(workdir, q, log)
    log("drawing figures and writing the report")
    filter_paths = draw_filters(workdir, q)
    now = os.times()
    timing = {
        "wall": time.perf_counter() - start,
        "user": now.user - cpu.user + now.children_user - cpu.children_user,
        "system": now.system - cpu.system,
        "skipped": any(x["skipped"] for x in trained["summaries"].values()),
    }
    curves = {init: [eval_curve(run_dir(workdir, init, seed)) for seed in q.seeds] for init in q.inits}
    path = quickstart_report.write(workdir, q, trained, curves, analysis, filter_paths, timing)
    with open(os.path.join(workdir, "timings.jsonl"), "a") as f:
        f.write(json.dumps({**timing, "runs": trained["seconds"]}) + "\n")
    log(f"done in {timing['wall']:.0f} s: {path}")
    return path


def eval_curve(workdir: str) -> dict[int, float]:
    """step -> test AUC of one run, from its metrics.jsonl (the paper plots test curves; nothing is chosen here)."""
    return {
        r["step"]: r["auc"]
        for r in read_records(os.path.join(workdir, "metrics.jsonl"))
        if r["split"] == "test" and isinstance(r.get("auc"), float)
    }


def enable_compile_cache(workdir: str) -> None:
    """Every fine-tuning run compiles the same programs; a persistent cache (train/compile_cache.py) makes that once
    per quickstart: DIR/jax_cache, unless JAX_COMPILATION_CACHE_DIR is set (e.g. one cache shared by workdirs)."""
    compile_cache.enable(os.path.join(os.path.abspath(workdir), "jax_cache"), min_compile_seconds=0.0)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a[len("--config.") :] for a in argv if a.startswith("--config.")]
    parser = argparse.ArgumentParser(
        prog="python -m transfusion_jax.experiments.quickstart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--mini", action="store_true", help="configs/quickstart.py:mini, a ~1 minute smoke test")
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    try:
        q = load_config(args.mini, overrides)
    except ValueError as e:
        parser.error(str(e))
    enable_compile_cache(args.workdir)
    run_quickstart(args.workdir, q)
    return 0


if __name__ == "__main__":
    sys.exit(main())
