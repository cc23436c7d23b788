"""What gates G1 and G2 read of each model (docs/study.md §7): its pretrained weights against random inits (kernel
std ratios, BN moments, conv1 spectral peakedness), the Gabor bank's peakedness, the source accuracy, and the
frozen-random-feature probes on the target's train split. Cached as DIR/analysis/diagnostics_<model>.json (plain
JSON); in memory a `Diagnostics` record."""

import dataclasses
import functools
import time

import jax
import numpy as np

from transfusion_jax import models, pretrained
from transfusion_jax.analysis import diagnostics, probes
from transfusion_jax.experiments import run_weights
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import blocks, plan
from transfusion_jax.experiments.study.measures import chunks, split_arrays
from transfusion_jax.surgery import gabor_filters
from transfusion_jax.train import batch_stats
from transfusion_jax.train import state as state_lib

BN_BATCHES = batch_stats.DEFAULT_BN_BATCHES  # as every run's init.npz (train.batch_stats.initial_batch_stats)


@dataclasses.dataclass(frozen=True)
class WeightDiagnostics:
    """One set of weights, per block: kernel std / He std, BatchNorm scale and bias moments; conv1's peakedness."""

    kernel_std_ratio: dict[str, float]
    bn: dict[str, dict[str, float]]  # block -> scale_mean, scale_std, bias_mean, bias_std
    conv1_peakedness: float


@dataclasses.dataclass(frozen=True)
class Diagnostics:
    """G1's and G2's measurements of one model."""

    widths: list[int]
    pretrained: WeightDiagnostics
    random: list[WeightDiagnostics]  # the model's initialiser with seeds 0, 1, ...
    gabor_peakedness: float
    peakedness_floor: float  # white noise's: 4 / (kernel height x width)
    source_accuracy: float | None
    chance: float
    probe: list[dict[str, float]]  # per random init: block -> cross-validated probe AUC
    probe_images: int

    @classmethod
    def from_json(cls, d: dict) -> "Diagnostics":
        random = [WeightDiagnostics(**r) for r in d["random"]]
        return cls(**{**d, "pretrained": WeightDiagnostics(**d["pretrained"]), "random": random})


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
    """G1's and G2's measurements for one model, as the JSON the cache holds: the pretrained weights against
    `gates.random_inits` random inits (seeds 0, 1, ...), the Gabor bank's peakedness, the source accuracy, and the
    frozen-feature probe of the same random inits on the target's train split (features pooled as
    `gates.probe_pooling` says; BatchNorm statistics from the first training batches, as a run starts; cross-validated
    within the split: no validation or test image is used)."""
    variables, _ = pretrained.load(workdir_lib.checkpoint_of(workdir, model))
    accuracy = ((pretrain_summary.get("val") or {}).get("final") or {}).get("accuracy")
    kernel = np.asarray(variables["params"]["layer1"]["conv"]["kernel"])
    train = split_arrays(train_config, "train")
    labels = np.asarray(train.labels)
    random_weights, probe_aucs = [], []
    for k in range(c.gates.random_inits):
        net, random = _random_variables(c, model, 2, k)
        random_weights.append(_weight_diagnostics(random["params"]))
        # "At init" as a run's first step sees it (docs/statistics.md): BN statistics from train-mode passes over the
        # first training batches, not the initialiser's placeholders 0 / 1.
        count = min(BN_BATCHES, len(train.images) // c.batch_size)
        first = [train.images[i * c.batch_size : (i + 1) * c.batch_size] for i in range(count)]
        random = {**random, "batch_stats": jax.device_get(batch_stats.recompute_batch_stats(net, random, first))}
        apply = functools.partial(net.apply, train=False)
        pooled = probes.pooled_features(apply, random, chunks(train.images), pooling=c.gates.probe_pooling)
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


def reference_run(c, model: str):
    """The run whose resolved config (the normalisation its inputs had) the model's analyses read images with."""
    keys = [k for k in plan(c) if k.model == model and k.init != "slim"]
    return next((k for k in keys if k.data == "full"), keys[0])


def diagnose(workdir: str, c, pretrain_summaries: dict, log=print) -> dict[str, Diagnostics]:
    out = {}
    for model in c.models_run:
        start = time.perf_counter()
        config = run_weights.load_config(reference_run(c, model).workdir(workdir))
        path = workdir_lib.analysis_path(workdir, "diagnostics", model)
        found = workdir_lib.cached_json(
            path, lambda: model_diagnostics(workdir, c, model, pretrain_summaries[model], config)
        )
        out[model] = Diagnostics.from_json(found)
        log(f"diagnostics of the {model} model (G1, G2): {time.perf_counter() - start:.0f} s")
    return out
