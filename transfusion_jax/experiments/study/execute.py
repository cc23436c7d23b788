"""The study's data and training: the generated source and target sets, source pretraining, and every fine-tuning
run of the design, all through `experiments.runs.train_many` (compatible runs stacked as one program, each in its
own run directory; finished runs are read back, not retrained)."""

import os
import time
from collections.abc import Sequence

import ml_collections

from transfusion_jax import data as data_lib
from transfusion_jax.data import generate
from transfusion_jax.experiments import runs
from transfusion_jax.experiments.study import measures
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import RunKey, plan
from transfusion_jax.experiments.study.recipes import finetune_config, pretrain_config
from transfusion_jax.train import preflight, writer


def _data_jobs(c, paths: dict[str, str]) -> list:
    """The target's jobs, and the source's when the design pretrains here (shipped checkpoints need no source)."""
    s, t = c.source, c.target
    source = generate.source_jobs(
        paths["source"],
        s.classes * s.train_per_class,
        seed=s.seed,
        size=c.image_size,
        num_classes=s.classes,
        num_test=s.classes * s.test_per_class,
        kind="fractals",
        block=c.data_block,
    )
    target = generate.tfds_dr_manual_jobs(
        paths["target"],
        t.train,
        seed=t.seed,
        size=c.image_size,
        num_test=t.validation + t.test,
        lesions="polarity",
        public_fraction=t.validation / (t.validation + t.test),
        block=c.data_block,
    )
    return (source if c.sources == "build" else []) + target


def make_data(workdir: str, c, log=print) -> dict[str, str]:
    """The source and target sets in their on-disk layouts (skipped when DIR/data/READY exists), written by
    `data_workers` processes (0: one per core); the files do not depend on how many (data/generate.py)."""
    paths, ready = workdir_lib.data_paths(workdir), workdir_lib.data_ready(workdir)
    if os.path.exists(ready):
        return paths
    start = time.perf_counter()
    jobs = _data_jobs(c, paths)
    workers = min(c.data_workers or os.cpu_count() or 1, len(jobs))
    generate.run_jobs(jobs, workers)
    with open(ready, "w") as f:
        f.write(writer.dumps({"seconds": time.perf_counter() - start, "workers": workers}))
    s, t = c.source, c.target
    source_images = s.classes * (s.train_per_class + s.test_per_class) if c.sources == "build" else 0
    log(f"data: {source_images} source and {t.train + t.validation + t.test} target images in "
        f"{time.perf_counter() - start:.0f} s ({len(jobs)} jobs, {workers} process(es))")  # fmt: skip
    return paths


def train(
    jobs: Sequence[tuple[str, ml_collections.ConfigDict, str]],
    max_runs_per_program: int = 0,
    log=print,
    programs_at_once: int = 1,
    after_run=None,
) -> list[dict]:
    """Trains every (label, config, workdir) not finished yet, returns their summaries in order (a finished run's is
    read back). The one place the study trains: compatible runs (one model and training set, different inits and
    seeds) stacked as one program by `runs.train_many`, each still in its own workdir; `programs_at_once` programs
    at a time; `after_run(index, summary)` in a program's thread after it (`runs.train_many`)."""

    def report(n: int, summary) -> None:
        label, config, _ = jobs[n]
        if isinstance(summary, BaseException):
            log(f"[{n + 1}/{len(jobs)}] {label}: FAILED: {summary}")
            return
        final = (summary.get("val") or {}).get("final") or {}
        metric = "accuracy" if config.data.name == "image_folder" else "auc"  # source pretraining: 1-of-N accuracy
        shown = f"held-out {metric} {final[metric]:.3f}" if isinstance(final.get(metric), float) else "no score"
        took = "finished before" if summary["skipped"] else f"{summary['seconds']:.0f} s"
        log(f"[{n + 1}/{len(jobs)}] {label}: {shown}, {took}")

    return runs.train_many(
        list(jobs),
        max_runs_per_program=max_runs_per_program,
        programs_at_once=programs_at_once,
        on_done=report,
        after_run=after_run,
        log=log,
    )


def pretrain_all(workdir: str, c, paths: dict[str, str], log=print) -> dict[str, dict]:
    """Each model's source pretraining, here (a design with shipped checkpoints installs them instead: `sources`)."""
    jobs = [
        (f"pretrain {m} on the source", pretrain_config(c, paths, m), workdir_lib.pretrain_dir(workdir, m))
        for m in c.models_run
    ]
    return dict(zip(c.models_run, train(jobs, c.max_runs_per_program, log, c.programs_at_once)))


def check_target_splits(workdir: str, c, paths: dict[str, str]) -> None:
    """The preflight every training run gives its splits (`preflight.check_run`: files exist, labels parse, the first
    image decodes, both classes present, no example in two splits), given to the test split too: the runs evaluate
    validation only and the test images are scored after training (`measures.score_test`), so without this a
    damaged test split would surface only after every run had trained."""
    for data in dict.fromkeys(k.data for k in plan(c)):
        key = next(k for k in plan(c) if k.data == data)
        config = finetune_config(c, paths, key, workdir)
        config.test_split = "test"
        eval_sets = {
            role: data_lib.build_dataset(config, config[f"{role}_split"], train=False) for role in ("val", "test")
        }
        preflight.check_run(config, data_lib.build_dataset(config, config.train_split, train=True), eval_sets)


def finetune_all(workdir: str, c, paths: dict[str, str], log=print) -> dict[RunKey, dict]:
    check_target_splits(workdir, c, paths)
    keys = plan(c)
    jobs = [(f"fine-tune {k.label()}", finetune_config(c, paths, k, workdir), k.workdir(workdir)) for k in keys]

    def score_test(index: int, summary: dict) -> None:  # while the other program trains (measure_runs reads it)
        measures.score_test(jobs[index][2], int(summary["final_step"]))

    return dict(zip(keys, train(jobs, c.max_runs_per_program, log, c.programs_at_once, score_test)))
