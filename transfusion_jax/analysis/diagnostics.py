"""Diagnostics of a study's design: is the pretrained init different from random, does conv1 hold structure, and can
frozen random features already solve the target?

Pure measurements, used before any claim is tested (docs/study.md, "Diagnostics"):

* `kernel_std_ratios`: per conv kernel, its standard deviation over the He normal fan-out std the models are
  initialised with, sqrt(2 / (kh * kw * out)). A random init sits near 1; if a pretrained network also does, the
  paper's Mean-Var init is just another random seed and claims about it cannot be tested.
* `spectral_peakedness` / `conv1_structure`: the share of a filter's power in its `top` strongest bins of the
  kh x kw DFT (power summed over input channels; the DC bin included, so a colour blob counts as structure).
  A white-noise filter spreads its power over all bins; a sinusoid at a DFT frequency puts all of it in two
  (conjugate) bins, a constant filter in one; Gabor filters lie close to the sinusoid. We use it rather than a
  Gabor fit because it has no fitting step to fail and a closed form at both ends.

The third diagnostic, what frozen random conv features already know about the label, is the linear probe of
`analysis.probes` (`pooled_features` + `linear_probe_auc` or `cross_validated_probe_auc`) applied to a randomly
initialised network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import traverse_util


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
