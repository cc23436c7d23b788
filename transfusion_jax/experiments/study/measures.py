"""Per-run measures: what the verdicts read of each fine-tuning run (its validation curve and steps to threshold,
its final validation AUC, its test scores, its weight change), and the images the study's analyses see.

The test split is scored once per run, after training, by the study's own forward pass over every test image at the
final weights (`score_test`: `execute.finetune_all` calls it in each program's thread as soon as the program is done,
so that it overlaps the programs still training; `measure_runs` reads the file, or scores a run it lacks), and
written as the run's test_scores.npz by the trainer's one writer (`train.rundir.write_test_scores`): the same file,
keys and ranking (`train.metrics.auc_inputs`, logits' log-odds) as a run that evaluated its test split itself.
"""

import dataclasses
import functools
import json
import math
import os
import time

import jax
import ml_collections
import numpy as np

from transfusion_jax import data as data_lib
from transfusion_jax.analysis import activations, weights
from transfusion_jax.experiments import run_weights
from transfusion_jax.experiments.study.design import RunKey
from transfusion_jax.train import metrics as metrics_lib
from transfusion_jax.train import partition, rundir
from transfusion_jax.train.writer import read_records

PROBE_BATCH = 256  # images per forward pass of the analyses (a multiple of every usual device count)


@dataclasses.dataclass
class RunMeasures:
    """What the verdicts read of one run: the validation curve and its thresholds, final validation AUC, test scores
    at the final step, weight change per block."""

    curve: dict[int, float]
    final_step: int
    steps: int | None  # first evaluation with validation AUC > threshold (None: never; censored at final_step)
    steps_relative: int | None  # ... > relative_threshold x the run's own final validation AUC
    final_val_auc: float
    test_scores: np.ndarray  # what AUC ranks: the log-odds of the positive class, float64
    weight_change: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Split:
    """A whole split in order, without augmentation, normalised as the runs see it."""

    images: np.ndarray  # [N, H, W, 3]
    labels: np.ndarray
    label_mask: np.ndarray
    ids: tuple
    loss: str  # the task's loss kind ('softmax' | 'sigmoid')
    label_names: tuple


@functools.cache
def _split_cached(data_json: str, split: str) -> Split:
    dataset = data_lib.build_dataset(ml_collections.ConfigDict(json.loads(data_json)), split, train=False)
    parts = {"image": [], "label": [], "label_mask": []}
    for batch in dataset.batches(PROBE_BATCH, mesh=partition.make_data_mesh()):
        valid = np.asarray(jax.device_get(batch["valid"])).astype(bool)
        for key, values in parts.items():
            values.append(np.asarray(jax.device_get(batch[key]))[valid])
    arrays = {key: np.concatenate(values) for key, values in parts.items()}
    task = dataset.task
    return Split(
        arrays["image"], arrays["label"], arrays["label_mask"], tuple(dataset.example_ids()), task.loss,
        tuple(task.label_names),
    )  # fmt: skip


def split_arrays(config, split: str) -> Split:
    """A whole split of `config`'s data, kept for the process (a few tens of MB at the study's sizes)."""
    return _split_cached(json.dumps(config.data.to_dict(), sort_keys=True), split)


def chunks(images: np.ndarray) -> list[np.ndarray]:
    return [images[i : i + PROBE_BATCH] for i in range(0, len(images), PROBE_BATCH)]


@functools.partial(jax.jit, static_argnames=("apply",))
def _logits_step(variables, images, *, apply: activations.StaticApply):
    """Traced once per architecture and chunk shape across runs (see `activations.StaticApply`): the study scores 80
    runs' test images, and tracing a fresh program for each cost more than scoring."""
    return apply.fn(variables, images)[0].astype(np.float32)


def _logits(apply_fn, variables, images: np.ndarray) -> np.ndarray:
    apply = activations.StaticApply(apply_fn)
    return np.concatenate([np.asarray(_logits_step(variables, x, apply=apply)) for x in chunks(images)])


def score_test(run_dir: str, final_step: int) -> dict[str, np.ndarray]:
    """The run's test_scores.npz: its final weights' logits on every test image, computed and written once."""
    scores = rundir.load_test_scores(run_dir)
    if scores is not None:
        return scores
    run = run_weights.RunWeights(run_dir)
    test = split_arrays(run.config, "test")
    return rundir.write_test_scores(
        run_dir,
        loss=test.loss,
        label_names=test.label_names,
        final_step=final_step,
        final_logits=_logits(run.apply, run.final(), test.images),
        ids=test.ids,
        label=test.labels,
        label_mask=test.label_mask,
    )


def auc_inputs(scores: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(targets, float64 ranking scores) of the final step's binary AUC, as train.metrics ranks them (the log-odds
    of the positive class, without the ties float32 probabilities of confident examples make)."""
    loss, logits = str(scores["loss"]), scores["final_logits"]
    return metrics_lib.auc_inputs(loss, logits, scores["label"], scores["label_mask"])[0]


def run_measures(run_dir: str, summary: dict, ranks: np.ndarray) -> RunMeasures:
    curve = {
        int(r["step"]): float(r["auc"])
        for r in read_records(os.path.join(run_dir, rundir.METRICS))
        if r["split"] == "val" and isinstance(r.get("auc"), float)
    }
    run = run_weights.RunWeights(run_dir)
    val = summary.get("val") or {}
    final_auc = (val.get("final") or {}).get("auc")
    if not isinstance(final_auc, float) or not math.isfinite(final_auc):
        raise RuntimeError(f"{run_dir} has no final validation AUC: the run cannot enter the study's measures.")
    return RunMeasures(
        curve=curve,
        final_step=int(summary["final_step"]),
        steps=val.get("steps_to_threshold"),
        steps_relative=val.get("steps_to_relative_threshold"),
        final_val_auc=final_auc,
        test_scores=np.asarray(ranks, np.float64),
        weight_change=weights.relative_weight_change(run.initial()["params"], run.final()["params"]),
    )


def measure_runs(workdir: str, summaries: dict[RunKey, dict], log=print) -> tuple[dict, np.ndarray]:
    """({RunKey: RunMeasures}, test labels); every run scored on the same test images (checked by id)."""
    out, labels, ids = {}, None, None
    start = time.perf_counter()
    for key, summary in summaries.items():
        run_dir = key.workdir(workdir)
        scores = score_test(run_dir, int(summary["final_step"]))
        targets, ranks = auc_inputs(scores)
        if ids is None:
            labels, ids = targets, scores["id"]
        elif not np.array_equal(scores["id"], ids):
            raise RuntimeError(f"{run_dir} was scored on other test images than the other runs.")
        out[key] = run_measures(run_dir, summary, ranks)
    log(f"test scores and measures of {len(out)} runs: {time.perf_counter() - start:.0f} s")
    return out, np.asarray(labels).astype(bool)
