"""The miniature study (docs/study.md) end to end: data, pretraining, every run, gates, measures, verdicts, report.

  python -m transfusion_jax.experiments.quickstart --workdir DIR [--full | --scale | --mini]  (configs/study.py)

1. generates the source set (IFS fractals, image-folder layout) and the target set (polarity lesions, Kaggle DR
   layout: train, Public = validation, Private = test) under DIR/data;
2. pretrains each model on the source: its final weights are that model's "ImageNet" checkpoint;
3. fine-tunes every (model, training set, init, seed) of the design's cells (DIR/runs/<model>/<data>/<init>/
   seed_<k>), evaluating on validation at the design's log-spaced steps; then scores every run's final weights on
   the test images (DIR/runs/.../test_final.npz: per-example scores, for DeLong);
4. measures the gates' diagnostics (G1: kernel std ratio to He, BN moments, conv1 spectral peakedness, source
   accuracy; G2: frozen-random-feature probes), each run's similarity to its init and the Rand-ImNet / Rand-Rand
   pairs (SVCCA and CKA, each beside its shuffled-image null, at the size it was computed at), weight change;
5. computes the gates and every claim's verdict (experiments.study_verdicts) and writes DIR/report.md with its
   figures (experiments.study_report).

Rerunning with the same DIR skips everything finished (a run's summary.json, its test_final.npz, the analyses'
JSON files). DIR remembers the design it was started with (study_config.json) and refuses another, except that the
models run may grow (the CPU cut's runs are reused by --full).
"""

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from transfusion_jax import data as data_lib
from transfusion_jax import models, pretrained, surgery
from transfusion_jax.analysis import activations, diagnostics, nulls, probes, similarity, weights
from transfusion_jax.data import generate
from transfusion_jax.experiments import run_weights, runs, study_report, study_verdicts
from transfusion_jax.experiments.study_verdicts import RunKey, RunMeasures
from transfusion_jax.models import cpu_kernels
from transfusion_jax.surgery import gabor_filters
from transfusion_jax.train import config_lib, partition, preflight, writer
from transfusion_jax.train import metrics as metrics_lib
from transfusion_jax.train import state as state_lib
from transfusion_jax.train import steps as steps_lib
from transfusion_jax.train.writer import read_records

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
DATA_SIZES = ("full", "small")
MODELS = ("small", "large")
TEST_FILE = "test_final.npz"
_PROBE_BATCH = 256  # images per forward pass of the analyses (a multiple of every usual device count)


class StudyConfigError(ValueError):
    """The study's config cannot give a meaningful study, or DIR holds a study with other settings."""


def blocks(c, model: str) -> tuple[str, ...]:
    return models.block_names(c.family, widths=tuple(c.widths[model]))


def widths_of(c, key: RunKey) -> tuple[int, ...]:
    return tuple(c.slim_widths) if key.init == "slim" else tuple(c.widths[key.model])


def plan(c) -> list[RunKey]:
    """Every fine-tuning run of the models run, cell by cell, seed by seed."""
    return [
        RunKey(model, data, init, seed)
        for model, data, inits in c.cells
        if model in c.models_run
        for init in inits
        for seed in c.seeds
    ]


# ---------------------------------------------------------------- config checks, before anything runs


def check_config(c) -> None:
    """Everything the study will use, checked before the first image is generated."""
    errors = []
    if not set(c.models_run) <= set(MODELS) or not c.models_run:
        errors.append(f"models_run {tuple(c.models_run)} must be a non-empty subset of {MODELS}")
    for model, data, inits in c.cells:
        if model not in MODELS or data not in DATA_SIZES:
            errors.append(f"cell ({model!r}, {data!r}) needs a model in {MODELS} and a training set in {DATA_SIZES}")
            continue
        for init in inits:
            if init == "slim":
                if model != "large":
                    errors.append("init 'slim' is the Slim of the large model: only in a 'large' cell")
                continue
            try:
                surgery.parse_init(init, blocks(c, model))
            except ValueError as e:
                errors.append(str(e))
    if len(c.seeds) < 2 or len(set(c.seeds)) != len(c.seeds):
        errors.append(f"seeds {tuple(c.seeds)}: at least 2 distinct seeds (a verdict needs an interval)")
    if not 0 < c.target.small_train < c.target.train:
        errors.append(f"target.small_train={c.target.small_train} must lie in 1..target.train-1")
    bad_steps = [s for s in c.eval_steps if not 1 <= s <= c.finetune.steps]
    if bad_steps or not c.eval_steps:
        errors.append(f"eval_steps must be non-empty and within 1..finetune.steps ({c.finetune.steps}): {bad_steps}")
    if not 0.5 < c.threshold < 1 or not 0 < c.relative_threshold < 1:
        errors.append(f"threshold {c.threshold} and relative_threshold {c.relative_threshold} must lie in (0.5, 1)")
    if min(c.margins.values()) <= 0:
        errors.append(f"margins must be > 0: {dict(c.margins)}")
    methods = tuple(c.similarity.methods)
    if not set(methods) <= set(similarity.METHODS) or c.similarity.verdict_method not in methods:
        errors.append(f"similarity.methods {methods} (verdict_method {c.similarity.verdict_method!r} among them)")
    if c.source.classes < 2 or c.source.test_per_class < 1 or c.target.validation < 2 or c.target.test < 2:
        errors.append("source needs >= 2 classes and test images; target needs validation and test images")
    if c.gates.random_inits < 2 or c.gates.probe_folds < 2 or c.gates.last_evals < 2:
        errors.append("gates need >= 2 random inits, >= 2 probe folds and >= 2 last evaluations")
    if c.data_block < 0 or c.data_workers < 0:
        errors.append(f"data_block={c.data_block} and data_workers={c.data_workers} must be >= 0")
    if c.max_runs_per_program < 0:
        errors.append(f"max_runs_per_program={c.max_runs_per_program}: 0 (no limit) or more")
    for model in c.models_run:
        size = c.image_size
        if not models.fits_input(c.family, size, widths=tuple(c.widths[model])):
            errors.append(f"image_size={size} is too small for the {model} model")
    if errors:
        raise StudyConfigError("The study's config is not usable:\n  - " + "\n  - ".join(errors))


# Fields that may change between invocations on one DIR: which models run (the cut or the whole design), and how
# many runs share a program or processes write the data (execution, not design).
_MAY_CHANGE = ("models_run", "variant", "max_runs_per_program", "data_workers")
# Design fields added after studies were recorded, with the value those studies had: a DIR recorded without one was
# made with it.
_ADDED_FIELDS = {"data_block": 0}


def check_workdir(workdir: str, c) -> None:
    """DIR/study_config.json records the design DIR was started with; another design in the same DIR would mix runs
    of two studies, so it is refused naming the fields that differ."""
    path = os.path.join(workdir, "study_config.json")
    design = {k: v for k, v in json.loads(c.to_json()).items() if k not in _MAY_CHANGE}
    if os.path.exists(path):
        with open(path) as f:
            recorded = {**_ADDED_FIELDS, **json.load(f)}
        differ = sorted(k for k in design.keys() | recorded.keys() if design.get(k) != recorded.get(k))
        if differ:
            raise StudyConfigError(
                f"{workdir} holds a study with other settings ({', '.join(differ)}); use a new --workdir, or delete "
                f"{workdir} to start over."
            )
        return
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        f.write(writer.dumps(design, indent=1))


# ---------------------------------------------------------------- data


def make_data(workdir: str, c, log=print) -> dict[str, str]:
    """The source and target sets in their on-disk layouts (skipped when DIR/data/READY exists), written by
    `data_workers` processes (0: one per core); the files do not depend on how many (data/generate.py)."""
    paths = {"source": os.path.join(workdir, "data", "source"), "target": os.path.join(workdir, "data", "retina")}
    ready = os.path.join(workdir, "data", "READY")
    if os.path.exists(ready):
        return paths
    start = time.perf_counter()
    s, t = c.source, c.target
    jobs = generate.source_jobs(
        paths["source"],
        s.classes * s.train_per_class,
        seed=s.seed,
        size=c.image_size,
        num_classes=s.classes,
        num_test=s.classes * s.test_per_class,
        kind="fractals",
        block=c.data_block,
    ) + generate.tfds_dr_manual_jobs(
        paths["target"],
        t.train,
        seed=t.seed,
        size=c.image_size,
        num_test=t.validation + t.test,
        lesions="polarity",
        public_fraction=t.validation / (t.validation + t.test),
        block=c.data_block,
    )
    workers = min(c.data_workers or os.cpu_count() or 1, len(jobs))
    generate.run_jobs(jobs, workers)
    with open(ready, "w") as f:
        f.write(writer.dumps({"seconds": time.perf_counter() - start, "workers": workers}))
    log(f"data: {s.classes * (s.train_per_class + s.test_per_class)} source and {t.train + t.validation + t.test} "
        f"target images in {time.perf_counter() - start:.0f} s ({len(jobs)} jobs, {workers} process(es))")  # fmt: skip
    return paths


# ---------------------------------------------------------------- the runs' configs


def _common(config, c, widths: Sequence[int], steps: int, seed: int):
    config.model.name = c.family
    config.model.overrides.widths = tuple(widths)
    config.data.image_size = c.image_size
    config.data.num_workers = 0
    config.data.cache_decoded = True  # small 32 px splits read in every epoch and evaluation
    config.batch_size = c.batch_size
    config.num_train_steps = steps
    config.log_every_steps = steps
    config.checkpoint_every_steps = steps  # one checkpoint, at the end: runs are short
    config.keep_checkpoints = 1
    config.progress_bar = False  # one line per run instead
    config.export_pretrained = True  # final weights: the checkpoint (pretraining), the analyses' input (fine-tuning)
    config.seed = seed
    return config


def pretrain_config(c, paths: dict[str, str], model: str):
    """Source pretraining: softmax over the fractal classes, Adam at a constant rate, no augmentation (every source
    image is already a fresh instance of its class), seed 0; the held-out source images report its accuracy."""
    config = _common(config_lib.base_config(), c, c.widths[model], c.pretrain.steps, seed=0)
    config.data.name, config.data.root = "image_folder", paths["source"]
    config.data.augment.enabled = False
    config.train_split, config.val_split, config.test_split = "train", "test", ""
    config.optimizer.learning_rate, config.optimizer.schedule = c.pretrain.learning_rate, "constant"
    config.eval_every_steps = c.pretrain.eval_every
    return config


def pretrain_dir(workdir: str, model: str) -> str:
    return os.path.join(workdir, "runs", "pretrain", model)


def checkpoint_of(workdir: str, model: str) -> str:
    return os.path.join(pretrain_dir(workdir, model), "pretrained.npz")


def finetune_config(c, paths: dict[str, str], key: RunKey, workdir: str):
    """The target task with the design's recipe: binary moderate DR (grade >= 2), Adam with cosine decay, the Retina
    task's augmentation, validation (Kaggle Public) at the log-spaced steps. Every init of a model names that model's
    checkpoint, so all of them read the same input normalisation (random and Gabor use it for nothing else but the
    Gabor bank's scale); Slim names the large model's. The test split is scored once, after the run
    (`score_test`): evaluating 2,200 test images at every one of the ~33 evaluations would cost more than training."""
    config = _common(config_lib.retina_config(c.family, key.init), c, widths_of(c, key), c.finetune.steps, key.seed)
    config.data.root = paths["target"]
    config.train_split, config.val_split, config.test_split = "train", "validation", ""
    config.data.subset_size = c.target.small_train if key.data == "small" else 0  # each seed draws its own subset
    config.optimizer.learning_rate, config.optimizer.schedule = c.finetune.learning_rate, "cosine"
    config.eval_steps = tuple(int(s) for s in c.eval_steps)
    config.auc_threshold, config.relative_threshold = c.threshold, c.relative_threshold
    config.pretrained = checkpoint_of(workdir, "large" if key.init == "slim" else key.model)
    return config


# ---------------------------------------------------------------- the design's cost, before anything runs


@dataclasses.dataclass(frozen=True)
class NetworkCost:
    """What one network of the design costs: its runs (fine-tuning; pretraining apart), training steps, images put
    through an eval forward pass, and XLA's FLOP counts of one train step (a batch) and of one image's forward."""

    runs: int
    pretrain_runs: int
    train_steps: int
    images_evaluated: int
    train_flops: float  # all its training steps (pretraining included)
    eval_flops: float  # all its images evaluated
    step_flops: float  # one fine-tuning train step on a batch
    image_flops: float  # one image's eval forward

    @property
    def flops(self) -> float:
        return self.train_flops + self.eval_flops


def step_flops(c, widths: Sequence[int], num_classes: int, config) -> tuple[float, float]:
    """(FLOPs of one train step on a batch of `c.batch_size`, FLOPs of one image's eval forward) of the trainer's own
    step functions for `config` (its optimizer) at `c.image_size`, on one device, from XLA's cost analysis of the
    lowered programs with the standard operations (not the CPU kernels, which also multiply zeros): nothing is
    compiled or run (compiling would cost ~5 s a program on 2 cores; the compiled programs' counts are within 2 % of
    these for the study's models)."""
    model = models.get_model(c.family, num_classes, widths=tuple(widths))
    size, batch = c.image_size, c.batch_size
    state, tx = state_lib.abstract_train_state(config, model, jnp.zeros((1, size, size, 3)))
    inputs = {
        "image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32),
        "valid": jax.ShapeDtypeStruct((batch,), jnp.bool_),
    }
    mesh = partition.make_data_mesh(jax.devices()[:1])
    rng = jax.eval_shape(lambda: jax.random.key(0))
    with cpu_kernels.standard_operations():  # the design's arithmetic on any platform
        train = steps_lib.make_train_step(model, tx, "softmax", mesh).lower(state, inputs, rng).cost_analysis()
        forward = steps_lib.make_eval_step(model, "softmax", mesh).lower(state, inputs).cost_analysis()
    return float(train["flops"]), float(forward["flops"]) / batch


def design_cost(c) -> dict[str, NetworkCost]:
    """{network ('small' | 'large' | 'slim'): NetworkCost} of the models run. Images evaluated: the validation
    passes and the test scoring of every fine-tuning run, the source evaluations of pretraining, and the analyses'
    forward passes (G2's probes over the train images of each random init; step 0 and the final step of every
    full-data random and transfer run over the test images, for similarity). Not counted: data generation, the
    similarity measures themselves, the probes' fitting, the report."""
    paths = {"source": "", "target": ""}
    keys = plan(c)
    out = {}
    for network in [m for m in MODELS if m in c.models_run] + (["slim"] if any(k.init == "slim" for k in keys) else []):
        mine = [
            k for k in keys if (k.init == "slim") == (network == "slim") and (network == "slim" or k.model == network)
        ]
        if not mine:  # a model run without cells of its own
            continue
        config = finetune_config(c, paths, mine[0], "")
        widths = c.slim_widths if network == "slim" else c.widths[network]
        step, image = step_flops(c, widths, 2, config)
        evaluated = len(mine) * (len(preflight.eval_steps(config)) * c.target.validation + c.target.test)
        train_flops, steps = len(mine) * c.finetune.steps * step, len(mine) * c.finetune.steps
        pretrain_runs, eval_flops = 0, evaluated * image
        if network != "slim":
            pre = pretrain_config(c, paths, network)
            pre_step, pre_image = step_flops(c, widths, c.source.classes, pre)
            pre_images = len(preflight.eval_steps(pre)) * c.source.classes * c.source.test_per_class
            pretrain_runs, steps = 1, steps + c.pretrain.steps
            train_flops += c.pretrain.steps * pre_step
            analyses = c.gates.random_inits * c.target.train + sum(
                2 * c.target.test for k in mine if k.data == "full" and k.init in ("random", "transfer")
            )
            evaluated += pre_images + analyses
            eval_flops += pre_images * pre_image + analyses * image
        out[network] = NetworkCost(len(mine), pretrain_runs, steps, evaluated, train_flops, eval_flops, step, image)
    return out


def describe_cost(costs: dict[str, NetworkCost]) -> str:
    runs = sum(n.runs for n in costs.values())
    pretrain = sum(n.pretrain_runs for n in costs.values())
    train = sum(n.train_flops for n in costs.values()) / 1e12
    evaluated = sum(n.eval_flops for n in costs.values()) / 1e12
    per = ", ".join(f"{name} {n.runs} runs, {n.flops / 1e12:.2f} TFLOP" for name, n in costs.items())
    return (f"this design: {runs} fine-tuning runs + {pretrain} pretraining, {train:.2f} TFLOP of training and "
            f"{evaluated:.2f} TFLOP of evaluation (XLA's count; {per})")  # fmt: skip


# ---------------------------------------------------------------- training


def train(
    jobs: Sequence[tuple[str, ml_collections.ConfigDict, str]], max_runs_per_program: int = 0, log=print
) -> list[dict]:
    """Trains every (label, config, workdir) not finished yet, returns their summaries in order (a finished run's is
    read back). The one place the study trains: compatible runs (one model and training set, different inits and
    seeds) stacked as one program by `runs.train_many`, each still in its own workdir."""

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

    return runs.train_many(list(jobs), max_runs_per_program=max_runs_per_program, on_done=report, log=log)


def pretrain_all(workdir: str, c, paths: dict[str, str], log=print) -> dict[str, dict]:
    jobs = [
        (f"pretrain {m} on the source", pretrain_config(c, paths, m), pretrain_dir(workdir, m)) for m in c.models_run
    ]
    return dict(zip(c.models_run, train(jobs, c.max_runs_per_program, log)))


def check_target_splits(workdir: str, c, paths: dict[str, str]) -> None:
    """The preflight every training run gives its splits (`preflight.check_run`: files exist, labels parse, the first
    image decodes, both classes present, no example in two splits), given to the test split too: the runs evaluate
    validation only and the test images are scored after training (`score_test`), so without this a damaged test
    split would surface only after every run had trained."""
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
    return dict(zip(keys, train(jobs, c.max_runs_per_program, log)))


# ---------------------------------------------------------------- images for the analyses


@functools.cache
def _split_arrays_cached(data_json: str, split: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    dataset = data_lib.build_dataset(ml_collections.ConfigDict(json.loads(data_json)), split, train=False)
    images, labels = [], []
    for batch in dataset.batches(_PROBE_BATCH, mesh=partition.make_data_mesh()):
        valid = np.asarray(jax.device_get(batch["valid"])).astype(bool)
        images.append(np.asarray(jax.device_get(batch["image"]))[valid])
        labels.append(np.asarray(jax.device_get(batch["label"]))[valid])
    return np.concatenate(images), np.concatenate(labels), tuple(dataset.example_ids())


def split_arrays(config, split: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(images [N, H, W, 3] normalised as `config`'s runs see them, labels [N], example ids) of a whole split, in
    order, without augmentation; kept for the process (a few tens of MB at the study's sizes)."""
    return _split_arrays_cached(json.dumps(config.data.to_dict(), sort_keys=True), split)


def chunks(images: np.ndarray) -> list[np.ndarray]:
    return [images[i : i + _PROBE_BATCH] for i in range(0, len(images), _PROBE_BATCH)]


def _positive_scores(apply_fn, variables, images: np.ndarray) -> np.ndarray:
    """The log-odds of the positive class (logit_1 - logit_0, in float64 from the float32 logits): what AUC ranks,
    without the ties float32 probabilities of confident examples make (train.metrics.ranking_scores)."""
    forward = jax.jit(lambda v, x: apply_fn(v, x)[0].astype(np.float32))
    logits = np.concatenate([np.asarray(forward(variables, x)) for x in chunks(images)])
    return metrics_lib.ranking_scores("softmax", logits)[:, 0]


def score_test(workdir: str, run_dir: str) -> dict[str, np.ndarray]:
    """The run's final weights on every test image: {'score' (log-odds of the positive class), 'label', 'id'};
    cached in the run's test_final.npz (written whole or not at all)."""
    path = os.path.join(run_dir, TEST_FILE)
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    run = run_weights.RunWeights(run_dir)
    images, labels, ids = split_arrays(run.config, "test")
    out = {"score": _positive_scores(run.apply, run.final(), images), "label": labels, "id": np.asarray(ids)}
    tmp = path + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, path)
    return out


# ---------------------------------------------------------------- per-run measures


def run_measures(run_dir: str, summary: dict, test: dict[str, np.ndarray]) -> RunMeasures:
    curve = {
        int(r["step"]): float(r["auc"])
        for r in read_records(os.path.join(run_dir, "metrics.jsonl"))
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
        selected_step=summary.get("selected_step"),
        test_scores=np.asarray(test["score"], np.float64),
        weight_change=weights.relative_weight_change(run.initial()["params"], run.final()["params"]),
    )


def measure_runs(workdir: str, c, summaries: dict[RunKey, dict], log=print) -> tuple[dict, np.ndarray]:
    """({RunKey: RunMeasures}, test labels); every run scored on the same test images (checked by id)."""
    out, labels, ids = {}, None, None
    start = time.perf_counter()
    for key, summary in summaries.items():
        test = score_test(workdir, key.workdir(workdir))
        if ids is None:
            labels, ids = test["label"], test["id"]
        elif not np.array_equal(test["id"], ids):
            raise RuntimeError(f"{key.workdir(workdir)} was scored on other test images than the other runs.")
        out[key] = run_measures(key.workdir(workdir), summary, test)
    log(f"test scores and measures of {len(out)} runs: {time.perf_counter() - start:.0f} s")
    return out, np.asarray(labels).astype(bool)


# ---------------------------------------------------------------- diagnostics (gates G1, G2)


def _random_variables(c, model: str, num_classes: int, seed: int):
    """The model's initialiser with key(seed), through the trainer's own init program (compiled once per model)."""
    net = models.get_model(c.family, num_classes, widths=tuple(c.widths[model]))
    x = np.zeros((1, c.image_size, c.image_size, 3), np.float32)
    return net, jax.device_get(state_lib.random_variables(net, jax.random.key(seed), x))


def _weight_diagnostics(params) -> dict:
    ratios = diagnostics.kernel_std_ratios(params)
    return {
        "kernel_std_ratio": {k.split("/")[0]: v for k, v in ratios.items()},
        "bn": {k.split("/")[0]: v for k, v in diagnostics.batchnorm_moments(params).items()},
        "conv1_peakedness": diagnostics.conv1_structure(np.asarray(params["layer1"]["conv"]["kernel"]))["mean"],
    }


def model_diagnostics(workdir: str, c, model: str, pretrain_summary: dict, train_config) -> dict:
    """G1's and G2's measurements for one model: the pretrained weights against `gates.random_inits` random inits
    (seeds 0, 1, ...), the Gabor bank's peakedness, the source accuracy, and the frozen-feature probe of the same
    random inits on the target's train split (cross-validated within it: no validation or test image is used)."""
    variables, _ = pretrained.load(checkpoint_of(workdir, model))
    accuracy = ((pretrain_summary.get("val") or {}).get("final") or {}).get("accuracy")
    kernel = np.asarray(variables["params"]["layer1"]["conv"]["kernel"])
    images, labels, _ = split_arrays(train_config, "train")
    labels = np.asarray(labels)
    random_weights, probe_aucs = [], []
    for k in range(c.gates.random_inits):
        net, random = _random_variables(c, model, 2, k)
        random_weights.append(_weight_diagnostics(random["params"]))
        pooled = probes.pooled_features(functools.partial(net.apply, train=False), random, chunks(images))
        probe_aucs.append(
            {
                block: probes.cross_validated_probe_auc(pooled[block], labels, folds=c.gates.probe_folds, seed=k)
                for block in blocks(c, model)
            }
        )
    return {
        "widths": list(c.widths[model]),
        "pretrained": _weight_diagnostics(variables["params"]),
        "random": random_weights,
        "gabor_peakedness": diagnostics.conv1_structure(gabor_filters.gabor_bank(kernel.shape))["mean"],
        "peakedness_floor": 4 / (kernel.shape[0] * kernel.shape[1]),
        "source_accuracy": accuracy,
        "chance": 1.0 / c.source.classes,
        "probe": probe_aucs,
        "probe_images": int(len(labels)),
    }


def _cached_json(path: str, compute: Callable[[], dict]) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    value = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(writer.dumps(value, indent=1))
    os.replace(path + ".tmp", path)
    return value


def reference_run(c, model: str) -> RunKey:
    """The run whose resolved config (the normalisation its inputs had) the model's analyses read images with."""
    keys = [k for k in plan(c) if k.model == model and k.init != "slim"]
    return next((k for k in keys if k.data == "full"), keys[0])


def diagnose(workdir: str, c, pretrain_summaries: dict, log=print) -> dict[str, dict]:
    out = {}
    for model in c.models_run:
        start = time.perf_counter()
        config = run_weights.load_config(reference_run(c, model).workdir(workdir))
        path = os.path.join(workdir, "analysis", f"diagnostics_{model}.json")
        out[model] = _cached_json(path, lambda: model_diagnostics(workdir, c, model, pretrain_summaries[model], config))
        log(f"diagnostics of the {model} model (G1, G2): {time.perf_counter() - start:.0f} s")
    return out


# ---------------------------------------------------------------- representational similarity


def similarity_methods(c) -> dict[str, dict]:
    options = {"svcca": {"keep": float(c.similarity.svcca_keep)}}
    return {m: options.get(m, {}) for m in c.similarity.methods}


def model_similarity(workdir: str, c, model: str) -> dict[str, dict]:
    """Similarity to init of every random and transfer run on the full training set (per layer: step 0 against the
    final step of the same run), and the Rand-Rand / Rand-ImNet pairs of different seeds (every random seed i
    against every random seed j > i, keyed 'rand_rand/i/j', and against every transfer seed j != i, 'rand_imnet/i/j':
    the all-pairs design `stats.seed_pair_interval` is proven for); each number beside its shuffled-image null, on
    every test image, spatial positions as datapoints (at most `similarity.positions` per image)."""
    layers = list(blocks(c, model))
    reduction = activations.Reduction(mode="positions", positions=int(c.similarity.positions), seed=0)
    methods, perms = similarity_methods(c), int(c.similarity.null_permutations)
    seeds = list(c.seeds)
    final_rows, out = {}, {"layers": layers, "reduction": reduction.describe(), "to_init": {}, "pairs": {}}
    for init in ("random", "transfer"):
        for seed in seeds:
            run = run_weights.RunWeights(RunKey(model, "full", init, seed).workdir(workdir))
            images, _, _ = split_arrays(run.config, "test")
            batches = chunks(images)
            start = activations.collect_rows((run.apply, run.initial()), batches, layers, reduction)
            final_rows[init, seed] = activations.collect_rows((run.apply, run.final()), batches, layers, reduction)
            out["num_images"] = len(images)
            out["to_init"][f"{init}/{seed}"] = {
                layer: nulls.with_null(start[layer], final_rows[init, seed][layer], len(images), methods, perms)
                for layer in layers
            }
    pairs = [("rand_rand", "random", i, j) for i in seeds for j in seeds if i < j]
    pairs += [("rand_imnet", "transfer", i, j) for i in seeds for j in seeds if i != j]
    for kind, other, seed, partner in pairs:
        a, b = final_rows["random", seed], final_rows[other, partner]
        out["pairs"][f"{kind}/{seed}/{partner}"] = {
            "runs": [f"random/{seed}", f"{other}/{partner}"],
            **{layer: nulls.with_null(a[layer], b[layer], out["num_images"], methods, perms) for layer in layers},
        }
    return out


def measure_similarity(workdir: str, c, log=print) -> dict[str, dict]:
    out = {}
    for model in c.models_run:
        if not any(m == model and d == "full" and {"random", "transfer"} <= set(i) for m, d, i in c.cells):
            continue
        start = time.perf_counter()
        path = os.path.join(workdir, "analysis", f"similarity_{model}.json")
        out[model] = _cached_json(path, lambda: model_similarity(workdir, c, model))
        log(f"similarity of the {model} model (to init, Rand-Rand, Rand-ImNet, with nulls): "
            f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return out


# ---------------------------------------------------------------- entry point


def load_config(arg: str = "default", overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """configs/study.py:<arg> with `FIELD=VALUE` overrides applied."""
    module = runs.load_config_module(os.path.join(CONFIG_DIR, "study.py"))
    return config_lib.apply_overrides(module.get_config(arg), overrides)


def run_study(workdir: str, c, log=print) -> str:
    """Everything, resumable; returns the path of DIR/report.md."""
    start, cpu, load = time.perf_counter(), os.times(), os.getloadavg()
    workdir = os.path.abspath(workdir)  # configs record paths under it; keep them valid from any directory
    check_config(c)
    check_workdir(workdir, c)
    keys = plan(c)
    log(f"miniature study in {workdir}: {len(c.models_run)} model(s), {len(keys)} fine-tuning runs + pretraining")
    log(describe_cost(design_cost(c)))
    paths = make_data(workdir, c, log)
    pretrain_summaries = pretrain_all(workdir, c, paths, log)
    summaries = finetune_all(workdir, c, paths, log)
    measures, labels = measure_runs(workdir, c, summaries, log)
    diagnosed = diagnose(workdir, c, pretrain_summaries, log)
    similar = measure_similarity(workdir, c, log)
    layers = {m: list(blocks(c, m)) for m in c.models_run}
    verdicts = study_verdicts.evaluate(c, measures, labels, diagnosed, similar, layers)
    now = os.times()
    timing = {
        "wall": time.perf_counter() - start,
        "cpu": now.user - cpu.user + now.system - cpu.system,
        "load": [load[0], os.getloadavg()[0]],
        "trained": sum(1 for s in list(summaries.values()) + list(pretrain_summaries.values()) if not s["skipped"]),
        "runs": len(summaries) + len(pretrain_summaries),
    }
    checkpoints = {m: checkpoint_of(workdir, m) for m in c.models_run}
    path = study_report.write(workdir, c, verdicts, measures, diagnosed, similar, checkpoints, timing)
    log(f"done in {timing['wall']:.0f} s: {path}")
    return path
