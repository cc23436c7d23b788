"""The instruments beyond the paper, applied to finished runs; each returns a JSON-ready dict named by its "analysis"
field, which `figures.save` writes as <name>.json + <name>.png and `report` renders when it finds it under a sweep
root's analyses/ folder.

  probes         per block, at init and after training: k-NN and linear-probe AUC on frozen features
  resilience     per block: the run's metrics with that block reset to its init (or to a fresh random draw)
  interpolation  loss and AUC along the straight line between two runs' final weights, BN recomputed; the barrier
  sanity         Ding et al.'s specificity / sensitivity table for layers of two seeds (or two activation arrays)
  calibration    reliability diagrams, ECE and AUC from each run's per-example test scores
  reuse          the feature-reuse decomposition (transfer, Mean-Var, random) per group and model of a sweep

Splits: nothing here chooses anything on the test split. Probes are fitted on the run's training split and scored
on its validation split; resilience and interpolation report on the validation split. `split='test'` reports on
the test split instead: reported only, never used to pick a block, a probe setting or an alpha. Calibration and
reuse read what the run recorded on its test split at the validation-selected and the final step (test_scores.npz,
summary.json), as the report's tables do.

Training images (probe fitting, BN statistics along the interpolation path) come from the run's own training stream
(`training_stream`): its seed, its small-data subset if it trained on one, augmentation off, so each example is seen
once as the evaluation sees it, in the order of the stream's first epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from transfusion_jax import data as data_lib
from transfusion_jax.analysis import activations, interpolation, paper, probes, resilience, reuse, sanity
from transfusion_jax.experiments import run_weights, runs
from transfusion_jax.experiments.run_weights import RunWeights
from transfusion_jax.train import batch_stats, partition, rundir, steps, trainer
from transfusion_jax.train import metrics as metrics_lib
from transfusion_jax.train.state import TrainState

SPLITS = ("val", "test")  # the run's roles, as in summary.json
RANDOM_DRAW_SEED = 10_000  # fresh random references are drawn from key(this) folded with the run's seed


def split_name(config, split: str) -> str:
    """The dataset split a run uses for the role `split` ('val' or 'test'); raises if the run has none."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    name = config.val_split if split == "val" else config.test_split
    if not name:
        raise ValueError(f"the run has no {split} split (config.{split}_split is empty): choose another --split")
    return name


def _copy(config) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(config.to_dict())


def _training_dataset(config, max_examples: int = 0):
    """The run's training split, augmentation off, restricted to its own small-data subset, or to a stratified
    subset of `max_examples` (drawn like one, with the run's seed) when that is smaller."""
    c = _copy(config)
    c.data.augment.enabled = False
    if max_examples and (not c.data.subset_size or max_examples < c.data.subset_size):
        c.data.subset_size = max_examples
    return data_lib.build_dataset(c, c.train_split, train=True)


def training_stream(config, batch_size: int, *, max_examples: int = 0, num_batches: int = 0) -> Iterator[dict]:
    """Host batches (image, label, label_mask, valid) of the run's training stream without augmentation.

    num_batches = 0: one pass, each training example once (`valid` is False for the rows of the last batch that
    belong to the next epoch). num_batches > 0: the first `num_batches` full batches, across epoch ends if needed.
    """
    dataset = _training_dataset(config, max_examples)
    total = len(dataset)
    count = num_batches or -(-total // batch_size)
    with dataset.batches(batch_size, mesh=partition.make_data_mesh(), seed=config.seed) as it:
        for index in range(count):
            batch = {k: np.asarray(jax.device_get(v)) for k, v in next(it).items()}
            if not num_batches:
                batch["valid"] = batch["valid"] & (index * batch_size + np.arange(batch_size) < total)
            yield batch


def _eval_dataset(config, split: str):
    return data_lib.build_dataset(config, split_name(config, split), train=False)


def evaluator(run: RunWeights, split: str = "val"):
    """variables -> the trainer's evaluation metrics (loss, AUCs, ECE, ...) of `run`'s model over one whole split."""
    dataset = _eval_dataset(run.config, split)
    mesh = partition.make_data_mesh()
    eval_step = steps.make_eval_step(run.model, dataset.task.loss, mesh)
    batch_size = run.config.eval_batch_size or run.config.batch_size

    def evaluate(variables) -> dict[str, float]:
        state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables.get("batch_stats", {}), None)
        state = jax.device_put(state, partition.replicated(mesh))
        metrics, _ = trainer.evaluate(eval_step, state, dataset, batch_size, mesh, run.config.calibration_bins)
        return {k: v for k, v in metrics.items() if k != "reliability"}

    return evaluate


def _split_record(config, split: str) -> dict[str, str]:
    return {"role": split, "name": split_name(config, split)}


# ---------------------------------------------------------------- probes


def probe_runs(
    loaded: Sequence[RunWeights],
    *,
    split: str = "val",
    k: int = probes.DEFAULT_K,
    kinds: Sequence[str] = probes.PROBES,
    max_train: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Per run, at init and after training: per block the AUC of each probe (analysis.probes.layerwise_probes),
    fitted on the run's training stream (at most `max_train` examples, 0 = all) and scored on `split`."""
    result = {
        "analysis": "probes",
        "fit": "training split, augmentation off (the run's subset if any)",
        "max_train": max_train,
        "k": k,
        "probes": list(kinds),
        "runs": {},
    }
    for run in loaded:
        eval_ds = _eval_dataset(run.config, split)
        task, mesh = eval_ds.task, partition.make_data_mesh()
        per_run = {"split": _split_record(run.config, split)}
        for when, variables in (("init", run.initial()), ("final", run.final())):
            per_run[when] = probes.layerwise_probes(
                run.apply,
                variables,
                training_stream(run.config, batch_size, max_examples=max_train),
                eval_ds.batches(batch_size, mesh=mesh),
                kind=task.loss,
                label_names=task.label_names,
                layers=list(run.blocks),
                probes=kinds,
                k=k,
            )
        result["runs"][run.workdir] = per_run
    return result


# ---------------------------------------------------------------- re-initialisation resilience


def random_variables(run: RunWeights, key: jax.Array) -> dict:
    """A fresh `model.init` of the run's architecture (the distribution init='random' starts from)."""
    size = data_lib.image_size(run.config)
    sample = jnp.zeros((1, size, size, run.config.data.get("channels", 3)), jnp.float32)  # 1: a grey run
    variables = jax.jit(lambda k: run.model.init(k, sample, train=False))(key)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def resilience_runs(
    loaded: Sequence[RunWeights], *, reference: str = "init", split: str = "val", draw_seed: int = RANDOM_DRAW_SEED
) -> dict[str, Any]:
    """Per run: analysis.resilience.reinit_resilience of its final weights, each block reset to its value at init
    (reference='init') or to a fresh random draw (reference='random', key fold_in(key(draw_seed), run seed))."""
    if reference not in ("init", "random"):
        raise ValueError(f"reference must be 'init' or 'random', got {reference!r}")
    result = {"analysis": "resilience", "reference": reference, "runs": {}}
    if reference == "random":
        result["draw_seed"] = draw_seed
    for run in loaded:
        evaluate = evaluator(run, split)
        if reference == "init":
            ref = run.initial()
        else:
            ref = random_variables(run, jax.random.fold_in(jax.random.key(draw_seed), int(run.config.seed)))
        out = resilience.reinit_resilience(run.final(), ref, evaluate, list(run.blocks), reference_name=reference)
        result["runs"][run.workdir] = {"split": _split_record(run.config, split), **out}
    return result


# ---------------------------------------------------------------- linear interpolation


def interpolate_runs(
    run_a: RunWeights,
    run_b: RunWeights,
    *,
    alphas: Sequence[float] = interpolation.DEFAULT_ALPHAS,
    split: str = "val",
    bn_batches: int = batch_stats.DEFAULT_BN_BATCHES,
) -> dict[str, Any]:
    """analysis.interpolation.interpolate between the final weights of two runs of one architecture, evaluated on
    run a's `split`, with BatchNorm statistics recomputed at every alpha from the first `bn_batches` batches of run
    a's training stream (at its training batch size)."""
    run_weights.check_same_architecture([run_a, run_b])
    evaluate = evaluator(run_a, split)
    batch_size = run_a.config.batch_size
    images = [b["image"] for b in training_stream(run_a.config, batch_size, num_batches=bn_batches)]
    recompute = batch_stats.BatchStatsRecomputer(run_a.model, images)
    out = interpolation.interpolate(run_a.final(), run_b.final(), evaluate, alphas=alphas, batch_stats_fn=recompute)
    return {
        "analysis": "interpolation",
        "runs": [run_a.workdir, run_b.workdir],
        "split": _split_record(run_a.config, split),
        "bn_batches": bn_batches,
        "bn_batch_size": batch_size,
        **out,
    }


# ---------------------------------------------------------------- similarity sanity checks


def sanity_runs(
    run_a: RunWeights,
    run_b: RunWeights,
    batches,
    layers: Sequence[str],
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
    reduction: activations.Reduction = paper.DEFAULT_REDUCTION,
) -> dict[str, Any]:
    """analysis.sanity.sanity_table per layer on the final weights of two runs (two seeds of one setup) over the
    same images, with the datapoints of the paper's analyses (`reduction`, same positions for both)."""
    run_weights.check_same_architecture([run_a, run_b])
    rows = activations.collect_pair_rows(
        (run_a.apply, run_a.final()), (run_b.apply, run_b.final()), batches, layers, reduction
    )
    return {
        "analysis": "sanity",
        "runs": [run_a.workdir, run_b.workdir],
        "num_images": int(sum(len(b) for b in batches)),
        "reduction": reduction.describe(),
        "layers": {layer: sanity.sanity_table(x, y, ks) for layer, (x, y) in rows.items()},
    }


def sanity_arrays(x: np.ndarray, y: np.ndarray, names: Sequence[str], *, ks: Sequence[int] = (1, 2, 4, 8)) -> dict:
    """The same table for two (examples, features) activation arrays of one layer, e.g. from .npy files."""
    return {"analysis": "sanity", "arrays": list(names), "layers": {"activations": sanity.sanity_table(x, y, ks)}}


# ---------------------------------------------------------------- calibration


def calibration_runs(workdirs: Sequence[str], *, when: str = "selected", bins: int = 0) -> dict[str, Any]:
    """Per run: the reliability diagram per decision (train.metrics.reliability_diagram), ECE, ACE and AUC of its
    test logits at the validation-selected or the final step, from test_scores.npz; `bins` = 0 uses the run's own
    config.calibration_bins (then the diagrams equal summary.json's)."""
    if when not in ("selected", "final"):
        raise ValueError(f"when must be 'selected' or 'final', got {when!r}")
    result = {"analysis": "calibration", "when": when, "split": "test", "runs": {}}
    for workdir in workdirs:
        workdir = str(workdir)
        config = run_weights.load_config(workdir)
        scores = rundir.load_test_scores(workdir)
        if scores is None:
            raise FileNotFoundError(
                f"run {workdir} has no {rundir.TEST_SCORES}: calibration needs a finished run with a test split"
            )
        if f"{when}_logits" not in scores:
            raise ValueError(f"run {workdir} has no test scores at a {when} step (no validation AUC was ever defined?)")
        kind, names = str(scores["loss"]), [str(n) for n in scores["label_names"]]
        num_bins = bins or int(config.calibration_bins)
        args = (kind, names, scores[f"{when}_logits"], scores["label"], scores["label_mask"])
        calibration, diagram = metrics_lib.calibration_metrics(*args, num_bins)
        result["runs"][workdir] = {
            "step": int(scores[f"{when}_step"]),
            "bins": num_bins,
            **metrics_lib.auc_metrics(*args),
            **calibration,
            "reliability": diagram,
        }
    return result


# ---------------------------------------------------------------- the feature-reuse decomposition


REUSE_INITS = {"WT": "transfer", "ST": "mean_var", "RI": "random"}  # Matsoukas et al.'s names -> our inits


def _relative_steps(summary: dict) -> int | None:
    return (summary.get("val") or {}).get("steps_to_relative_threshold")


# (key, description, value of a run summary, higher is better)
REUSE_MEASURES = (
    ("auc_selected", "test AUC at the validation-selected step", runs.selected_test_auc, True),
    ("auc_final", "test AUC at the final step", runs.final_test_auc, True),
    ("steps_to_threshold", "steps to test AUC > the threshold", runs.test_steps_to_threshold, False),
    ("steps_to_relative_threshold", "steps to validation AUC > relative x final", _relative_steps, False),
)


def reuse_decomposition(results: Sequence) -> dict[str, Any]:
    """analysis.reuse.decompose per (group, model) of a sweep that has transfer, mean_var and random runs, on every
    measure of REUSE_MEASURES. `results` items have .group, .model, .init, .seed and .summary (report.RunResult).

    Seeds: paired over the seeds all three inits share (seed i of each shares data order, subset and head init)
    when at least two are shared, else unpaired over every run (stated in each row). A group is one data size (e.g.
    retina vs retina_small); the training examples of its runs are recorded beside."""
    by: dict[tuple[str, str], dict[str, dict[int, dict]]] = {}
    for r in results:
        by.setdefault((r.group, r.model), {}).setdefault(r.init, {})[r.seed] = r.summary
    rows = []
    for (group, model), inits in by.items():
        if not all(init in inits for init in REUSE_INITS.values()):
            continue
        seeds = {name: inits[init] for name, init in REUSE_INITS.items()}
        shared = sorted(set.intersection(*(set(s) for s in seeds.values())))
        paired = len(shared) >= 2
        chosen = {name: shared if paired else sorted(s) for name, s in seeds.items()}
        examples = sorted({s.get("train_examples") for per in seeds.values() for s in per.values()} - {None})
        for key, description, value, higher in REUSE_MEASURES:
            values = {name: [value(seeds[name][seed]) for seed in chosen[name]] for name in REUSE_INITS}
            row = {"group": group, "model": model, "train_examples": examples, "measure": key}
            row.update(description=description, seeds={name: chosen[name] for name in REUSE_INITS})
            try:
                row.update(
                    reuse.decompose(**{k.lower(): v for k, v in values.items()}, higher_is_better=higher, paired=paired)
                )
            except ValueError as err:  # fewer than 2 seeds of an init: no variance over seeds
                row.update(gain=None, share={"status": "undefined", "reason": str(err)}, paired=paired)
            rows.append(row)
    return {"analysis": "reuse", "inits": dict(REUSE_INITS), "rows": rows}
