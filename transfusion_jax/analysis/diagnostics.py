"""Diagnostics of a study's design: is the pretrained init different from random, does conv1 hold structure, and can
frozen random features already solve the target?

Three pure measurements, used before any claim is tested (docs/study.md, "Diagnostics"):

* `kernel_std_ratios`: per conv kernel, its standard deviation over the He normal fan-out std the models are
  initialised with, sqrt(2 / (kh * kw * out)). A random init sits near 1; if a pretrained network also does, the
  paper's Mean-Var init is just another random seed and claims about it cannot be tested.
* `spectral_peakedness` / `conv1_structure`: the share of a filter's power in its `top` strongest bins of the
  kh x kw DFT (power summed over input channels; the DC bin included, so a colour blob counts as structure).
  A white-noise filter spreads its power over all bins; a sinusoid at a DFT frequency puts all of it in two
  (conjugate) bins, a constant filter in one; Gabor filters lie close to the sinusoid. We use it rather than a
  Gabor fit because it has no fitting step to fail and a closed form at both ends.
* `pooled_features` + `linear_probe_auc` / `cross_validated_probe_auc`: the frozen-feature linear probe of each
  block (global-average-pooled features, standardised, L2 logistic regression, AUC on held-out images, or on
  out-of-fold predictions of k-fold cross-validation within one split, which needs no validation or test images
  and scores every image once). Applied to a randomly initialised network it says what random conv features
  already know about the label.

The probe here is the minimal version the study needs; the general layer-wise probes (k-NN, multi-label, probes of
any run) are meant to live in one probes module, which this one should then call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import traverse_util
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def he_fan_out_std(shape: Sequence[int]) -> float:
    """Std of He normal fan-out init for a (kh, kw, in, out) kernel: sqrt(2 / (kh * kw * out))."""
    if len(shape) != 4:
        raise ValueError(f"Expected a conv kernel shape (kh, kw, in, out), got {tuple(shape)}.")
    kh, kw, _, out = shape
    return float(np.sqrt(2.0 / (kh * kw * out)))


def conv_kernels(params: Mapping) -> dict[str, np.ndarray]:
    """Every 4-D 'kernel' leaf of a params tree by its 'a/b/c' name, in float64 (block first: 'layer1/conv/kernel')."""
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    return {k: np.asarray(v, np.float64) for k, v in flat.items() if k.endswith("kernel") and np.ndim(v) == 4}


def kernel_std_ratios(params: Mapping) -> dict[str, float]:
    """Per conv kernel: population std of its entries / He fan-out std (1 in expectation at random init)."""
    kernels = conv_kernels(params)
    if not kernels:
        raise ValueError("No 4-D conv kernels in these params; pass variables['params'] of a conv net.")
    return {k: float(v.std() / he_fan_out_std(v.shape)) for k, v in kernels.items()}


def batchnorm_moments(params: Mapping) -> dict[str, dict[str, float]]:
    """Per BatchNorm module ('layer1/bn'): mean and std of its scale (gamma) and bias (beta); 1, 0, 0, 0 at init."""
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        module, _, leaf = key.rpartition("/")
        if leaf in ("scale", "bias") and np.ndim(value) == 1 and module.rsplit("/", 1)[-1].startswith("bn"):
            v = np.asarray(value, np.float64)
            out.setdefault(module, {}).update({f"{leaf}_mean": float(v.mean()), f"{leaf}_std": float(v.std())})
    return out


def spectral_peakedness(kernel: np.ndarray, top: int = 4) -> np.ndarray:
    """[out] share of each filter's spectral power in its `top` strongest DFT bins, in [top / (kh * kw), 1].

    kernel: (kh, kw, in, out). Power is |DFT2(filter[:, :, c])|^2 summed over the input channels c. An all-zero
    filter has no spectrum and gets NaN.
    """
    k = np.asarray(kernel, np.float64)
    if k.ndim != 4:
        raise ValueError(f"Expected a conv kernel (kh, kw, in, out), got shape {k.shape}.")
    bins = k.shape[0] * k.shape[1]
    if not 1 <= top <= bins:
        raise ValueError(f"top must be in 1..{bins} for a {k.shape[0]}x{k.shape[1]} kernel, got {top}.")
    power = (np.abs(np.fft.fft2(k, axes=(0, 1))) ** 2).sum(axis=2).reshape(bins, -1)  # (bins, out)
    total = power.sum(axis=0)
    strongest = -np.sort(-power, axis=0)[:top].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, strongest / np.where(total > 0, total, 1.0), np.nan)


def conv1_structure(kernel: np.ndarray, top: int = 4) -> dict[str, Any]:
    """Summary of `spectral_peakedness` over a first-layer kernel: mean, std, median and the per-filter values,
    beside the white-spectrum floor top / (kh * kw)."""
    values = spectral_peakedness(kernel, top)
    return {
        "top": top,
        "floor": top / (kernel.shape[0] * kernel.shape[1]),
        "mean": float(np.nanmean(values)),
        "std": float(np.nanstd(values)),
        "median": float(np.nanmedian(values)),
        "per_filter": [float(v) for v in values],
    }


def pooled_features(
    apply_fn: Callable, variables: Any, batches: Iterable[np.ndarray], blocks: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """{block: [N, C]} global-average-pooled features of every image in `batches` (arrays [B, H, W, 3], already
    normalised as the model expects). `apply_fn(variables, images) -> (logits, features)`, e.g.
    `functools.partial(model.apply, train=False)`; `blocks` defaults to every feature the model returns."""
    forward = jax.jit(lambda v, x: apply_fn(v, x)[1])
    out: dict[str, list[np.ndarray]] = {}
    for images in batches:
        features = forward(variables, images)
        for name in blocks or list(features):
            value = np.asarray(features[name], np.float64)
            out.setdefault(name, []).append(value.mean(axis=(1, 2)) if value.ndim == 4 else value)
    if not out:
        raise ValueError("No batches given: nothing to pool.")
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _check_binary(labels: np.ndarray, name: str) -> None:
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError(f"The probe needs both classes (0 and 1) in the {name} labels, got {np.unique(labels)}.")


def linear_probe_auc(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    l2: float = 1.0,
    max_iter: int = 5000,
) -> float:
    """AUC on the eval set of an L2 logistic regression (sklearn, C = 1 / l2) fitted on standardised train features.

    Binary labels only (the study's target); standardisation statistics come from the train features alone.
    """
    train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
    _check_binary(train_labels, "train")
    _check_binary(eval_labels, "eval")
    scaler = StandardScaler().fit(train_features)
    probe = LogisticRegression(C=1.0 / l2, max_iter=max_iter).fit(scaler.transform(train_features), train_labels)
    return float(roc_auc_score(eval_labels, probe.decision_function(scaler.transform(eval_features))))


def cross_validated_probe_auc(
    features: np.ndarray, labels: np.ndarray, folds: int = 5, l2: float = 1.0, seed: int = 0, max_iter: int = 5000
) -> float:
    """AUC of out-of-fold decision values of the same probe (standardise + L2 logistic regression, refitted on each
    training fold) under stratified `folds`-fold cross-validation, shuffled with `seed`."""
    labels = np.asarray(labels)
    _check_binary(labels, "given")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / l2, max_iter=max_iter))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(probe, features, labels, cv=split, method="decision_function")
    return float(roc_auc_score(labels, scores))


def frozen_probe_per_block(
    train: Mapping[str, np.ndarray],
    train_labels: np.ndarray,
    evaluation: Mapping[str, np.ndarray],
    eval_labels: np.ndarray,
    l2: float = 1.0,
) -> dict[str, float]:
    """`linear_probe_auc` for every block of two `pooled_features` results (train and held-out images)."""
    if train.keys() != evaluation.keys():
        raise ValueError(f"Train and eval features have different blocks: {sorted(train)} vs {sorted(evaluation)}.")
    return {name: linear_probe_auc(train[name], train_labels, evaluation[name], eval_labels, l2) for name in train}
