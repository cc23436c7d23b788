"""Toy runs: a handful of tiny fine-tuning runs on generated data, for the tests and the notebooks' MINI path.

Not a study (the quickstart is: experiments.study): a tiny CBR pretrained for a few steps on a 10-class shapes
folder, then fine-tuned on generated fundus images in the Kaggle DR layout from a few inits and seeds, in a minute
on a CPU. What every analysis of finished runs needs (init.npz, pretrained.npz, config.json, summary.json,
test_scores.npz, metrics.jsonl) is written as for any run.

  q = toy_runs.load_config(["finetune_steps=4"])            # fields below; overrides as FIELD=VALUE
  toy_runs.train_all(WORKDIR, toy_runs.make_data(WORKDIR, q), q)
  toy_runs.run_dir(WORKDIR, "transfer", 0)                  # a finished run's workdir
"""

import json
import os
from collections.abc import Sequence

import ml_collections

from transfusion_jax.data import generate
from transfusion_jax.experiments import runs
from transfusion_jax.train import config_lib, rundir
from transfusion_jax.train.writer import read_records


def load_config(overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The toy runs' sizes, with `FIELD=VALUE` overrides applied."""
    c = ml_collections.ConfigDict()
    c.model = "cbr_small"
    c.widths = (4, 8, 8, 8)
    c.image_size = 32
    c.native_size = 64  # generated image size (the pipeline resizes to image_size)
    c.source_train, c.source_test, c.source_classes = 64, 16, 10
    c.target_train, c.target_test = 96, 48  # ~70 % of target_test form 'test' (Private), the rest 'validation'
    c.batch_size = 32
    c.pretrain_steps, c.finetune_steps, c.eval_every = 10, 20, 10
    c.threshold = 0.91  # the paper's convergence measure: steps until the AUC is above 0.91
    c.seeds = (0,)
    c.inits = ("random", "transfer")
    return config_lib.apply_overrides(c, overrides)


def run_dir(workdir: str, init: str, seed: int) -> str:
    return os.path.join(workdir, "runs", runs.init_dirname(init), f"seed_{seed}")


def make_data(workdir: str, q) -> dict[str, str]:
    """Generated source and target sets in their real on-disk layouts (skipped if already complete)."""
    paths = {"source": os.path.join(workdir, "data", "source"), "target": os.path.join(workdir, "data", "retina")}
    ready = os.path.join(workdir, "data", "READY")
    if not os.path.exists(ready):
        generate.write_source(
            paths["source"], q.source_train, seed=0, size=q.native_size, num_classes=q.source_classes,
            num_test=q.source_test,
        )  # fmt: skip
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
    config.checkpoint_every_steps = steps  # one checkpoint, at the end: runs are short
    config.keep_checkpoints = 1
    config.progress_bar = False
    config.export_pretrained = True  # final weights as .npz: the pretrained model, and the analyses' inputs
    config.seed = seed
    return config


def pretrain_config(paths: dict[str, str], q):
    """Pretraining on the shapes folder, Adam 1e-3 (a toy stand-in for ImageNet)."""
    c = _common(config_lib.base_config(), q, q.pretrain_steps, seed=0)
    c.data.name = "image_folder"
    c.data.root = paths["source"]
    c.train_split, c.val_split, c.test_split = "train", "test", ""  # source accuracy only; the final weights export
    c.eval_every_steps = max(q.eval_every, q.pretrain_steps // 5)
    return c


def finetune_config(paths: dict[str, str], q, init: str, seed: int, pretrained: str):
    """The target task as configs/retina.py sets it up (moderate DR, Adam 1e-3), at toy size."""
    c = _common(config_lib.retina_config(q.model, init), q, q.finetune_steps, seed)
    c.data.root = paths["target"]
    c.train_split, c.val_split, c.test_split = "train", "validation", "test"  # Kaggle Public / Private
    c.pretrained = "" if init == "random" else pretrained  # gabor uses it only to scale the filters
    c.auc_threshold = q.threshold
    return c


def train_all(workdir: str, paths: dict[str, str], q, log=print) -> dict:
    """Pretrain, then every (init, seed); prints a line per run; returns {'pretrained', 'summaries', 'seconds'}."""
    jobs = [("pretrain", None)] + [(init, seed) for init in q.inits for seed in q.seeds]
    pretrained = os.path.join(workdir, "runs", "pretrain", rundir.FINAL)
    seconds, summaries = {}, {}
    for n, (init, seed) in enumerate(jobs, 1):
        if init == "pretrain":
            config, wd, label = pretrain_config(paths, q), os.path.dirname(pretrained), "pretrain on source"
        else:
            config, wd = finetune_config(paths, q, init, seed, pretrained), run_dir(workdir, init, seed)
            label = f"fine-tune {init} seed {seed}"
        summary = runs.run(config, wd)
        seconds[f"{init}/{seed}"] = summary["seconds"]
        summaries[(init, seed)] = summary
        log(f"[{n}/{len(jobs)}] {label}: {runs.describe(summary) if init != 'pretrain' else 'done'}")
    return {"pretrained": pretrained, "summaries": summaries, "seconds": seconds}


def eval_curve(workdir: str, split: str = "test") -> dict[int, float]:
    """step -> AUC of one run on `split` ('test' or 'val'), from its metrics.jsonl."""
    return {
        r["step"]: r["auc"]
        for r in read_records(os.path.join(workdir, rundir.METRICS))
        if r["split"] == split and isinstance(r.get("auc"), float)
    }
