"""The miniature study end to end (docs/study.md), resumable, and its command line:

  python -m transfusion_jax.experiments.quickstart --workdir DIR [--scale | --mini] [--rebuild_sources]
                                                   [--config.FIELD=VALUE ...]
  python -m transfusion_jax.experiments study --workdir DIR [...]          (the same)

1. generates the target set (polarity lesions, Kaggle DR layout: train, Public = validation, Private = test) under
   DIR/data, and the source set (IFS fractals, image-folder layout) when the design pretrains here (`execute`);
2. installs each model's "ImageNet" checkpoint: the one shipped in the package, its sha256 checked (`sources`), or
   with --rebuild_sources (`sources='build'`; --scale and --mini always) pretrains it on the source here;
3. fine-tunes every (model, training set, init, seed) of the design's cells, evaluating on validation at the
   design's log-spaced steps; then scores every run's final weights on the test images (its test_scores.npz,
   `measures`);
4. measures the gates' diagnostics (`diagnose`) and the runs' representational similarity (`representations`);
5. computes the gates and every claim's verdict (`verdicts`) and writes DIR/report.md with its figures (`report`).

Rerunning with the same DIR skips everything finished (a run's summary.json and test_scores.npz, the analyses' JSON
files). DIR remembers the design it was started with (study_config.json) and refuses another, except that the models
run may grow. The report's header gives the invocation's wall time and peak memory (this process and its children,
`resource.getrusage`).
"""

import argparse
import os
import resource
import sys
import time
from collections.abc import Sequence

import jax
import ml_collections

from transfusion_jax.experiments import runs
from transfusion_jax.experiments.study import design, execute, report, sources
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.cost import describe_cost, design_cost
from transfusion_jax.experiments.study.diagnose import diagnose
from transfusion_jax.experiments.study.measures import measure_runs
from transfusion_jax.experiments.study.representations import measure_similarity
from transfusion_jax.experiments.study.verdicts import evaluate
from transfusion_jax.train import compile_cache, config_lib


def run_study(workdir: str, c, log=print) -> str:
    """Everything, resumable; returns the path of DIR/report.md."""
    start, cpu, load = time.perf_counter(), os.times(), os.getloadavg()
    workdir = os.path.abspath(workdir)  # configs record paths under it; keep them valid from any directory
    design.check_config(c)
    if c.sources == "shipped":
        sources.check_shipped(c, c.models_run)
    workdir_lib.check_workdir(workdir, c)
    pretraining = "the shipped source checkpoints" if c.sources == "shipped" else "pretraining"
    log(f"miniature study in {workdir}: {len(c.models_run)} model(s), {len(design.plan(c))} fine-tuning runs + "
        f"{pretraining}")  # fmt: skip
    log(describe_cost(design_cost(c)))
    paths = execute.make_data(workdir, c, log)
    pretrain_summaries = sources.installed_or_pretrained(workdir, c, paths, log)
    summaries = execute.finetune_all(workdir, c, paths, log)
    jax.clear_caches()  # the training programs do not run again here: their executables go (BENCHMARKS.md)
    runs.release_freed_memory()
    measures, labels = measure_runs(workdir, summaries, log)
    runs.release_freed_memory()
    diagnosed = diagnose(workdir, c, pretrain_summaries, log)
    runs.release_freed_memory()
    similarity = measure_similarity(workdir, c, log)
    layers = {m: list(design.blocks(c, m)) for m in c.models_run}
    verdicts = evaluate(c, measures, labels, diagnosed, similarity, layers)
    now, every = os.times(), list(summaries.values()) + list(pretrain_summaries.values())
    timing = report.Timing(
        wall=time.perf_counter() - start,
        cpu=now.user - cpu.user + now.system - cpu.system,
        load=(load[0], os.getloadavg()[0]),
        trained=sum(1 for s in every if not s["skipped"]),
        runs=len(every),
        peak_memory=peak_memory(),
    )
    checkpoints = {m: workdir_lib.checkpoint_of(workdir, m) for m in c.models_run}
    path = report.write(workdir, c, verdicts, measures, diagnosed, similarity, checkpoints, timing)
    log(f"done in {timing.wall:.0f} s: {path}")
    return path


def peak_memory() -> float:
    """Peak resident memory of this process in bytes (`resource.getrusage`'s ru_maxrss: KiB on Linux, bytes on
    macOS). The data generators' worker processes run before any model is built, while this process is small;
    benchmarks/study_budget.py samples the whole process tree as an independent check."""
    unit = 1 if sys.platform == "darwin" else 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit)


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's own arguments; `--config.FIELD=VALUE` ones are left for `config_from_args`."""
    parser.add_argument("--workdir", required=True)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scale", action="store_true", help="the larger version for one GPU (an estimate: not run yet)")
    size.add_argument("--mini", action="store_true", help="tiny models and data: the tests' size, ~3 min on 2 cores")
    parser.add_argument(
        "--rebuild_sources",
        action="store_true",
        help="pretrain the source checkpoints here instead of using the ones shipped in the package",
    )


def config_from_args(args: argparse.Namespace, config_flags: Sequence[str]) -> ml_collections.ConfigDict:
    """The design the arguments name, with the `--config.FIELD=VALUE` flags applied by ml_collections, checked."""
    variant = "scale" if args.scale else "mini" if args.mini else "default"
    c = config_lib.apply_flags(design.get_config(variant), config_flags)
    if args.rebuild_sources:
        c.sources = "build"
    design.check_config(c)
    return c


def enable_compile_cache(workdir: str) -> None:
    """Every run compiles the same programs; a persistent cache (train/compile_cache.py) makes that once per
    workdir: DIR/jax_cache, unless JAX_COMPILATION_CACHE_DIR is set (e.g. one cache shared by several workdirs)."""
    compile_cache.enable(os.path.join(os.path.abspath(workdir), workdir_lib.COMPILE_CACHE), min_compile_seconds=0.0)


def main(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    """Parses `argv` with `parser` (which has `add_arguments`'), runs the study; returns the exit status."""
    args, config_flags = parser.parse_known_args(list(argv))
    try:
        c = config_from_args(args, config_flags)
    except ValueError as e:
        parser.error(str(e))
    enable_compile_cache(args.workdir)
    run_study(args.workdir, c)
    return 0
