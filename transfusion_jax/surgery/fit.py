"""Fitting a checkpoint to the model it initialises, where the shapes differ by design rather than by mistake.

Two cases, applied by `surgery.initialize` to the checkpoint before any scheme reads it (so transfer, transfusion,
Mean-Var and Gabor all see the fitted tensors); any other difference stays a strict mismatch (tree.merge):

- Position embeddings of a ViT trained at another image size: resampled to the model's grid
  (`models.vit.resample_posemb`), as big_vision, timm and torchvision do for high-resolution fine-tuning.
- An RGB first layer (the conv that reads the image: ResNet/CBR conv1, Inception's Conv2d_1a_3x3, a ViT's patch
  embedding) loaded into a one-channel model (`config.data.channels=1`). The checkpoint's weights saw
  x_c = (g * k - mean_c) / std_c for a grey pixel g replicated to the channels c (k = scale / 255); the one-channel
  model sees x' = (g * k - m) / s, `data.preprocess.grey`'s normalisation. Since g * k = s * x' + m,

      sum_c W_c x_c = (s * sum_c W_c / std_c) x' + sum_c W_c (m - mean_c) / std_c

  summed over the kernel's taps: the folded kernel is s * sum_c W_c / std_c and the second term, summed over taps
  and channels, is a constant per output channel, carried as a bias. Where the layer has a bias (a ViT's patch
  embedding, Keras ResNet50's conv1) it is added to it. The torchvision ResNet's, the CBRs' and Inception's first
  convs have none but feed a BatchNorm: the constant is subtracted from its running mean, which gives the same
  output in eval mode; in train mode BatchNorm removes any per-channel constant with the batch mean anyway.

  This is exact wherever the kernel sees only image pixels. Where it overlaps zero padding, the RGB network pads
  with x_c = 0 (the pixel value mean_c, a different one per channel) and the folded one with x' = 0 (the pixel value
  m): no single grey value is both, so a padded tap differs by sum_c W_c (m - mean_c) / std_c, which `grey`'s
  choice of m makes zero for filters that weigh the channels alike. ViTs (patches, no padding) and Inception-v3 (an
  unpadded first conv) are exact everywhere; ResNet-50's 7x7 conv1 (padding 3) and the CBRs' 'SAME' convs differ
  on their outermost 3 (resp. k // 2) output rows and columns. tests/surgery/test_fit.py measures how much.
"""

from collections.abc import Mapping

import numpy as np

from transfusion_jax.data import preprocess
from transfusion_jax.models import vit
from transfusion_jax.surgery.tree import flatten, module_of, name_of, unflatten

POS_EMBEDDING = "pos_embedding"


def fold_rgb_kernel(kernel, rgb: preprocess.Normalization) -> tuple[np.ndarray, np.ndarray]:
    """(kh, kw, 3, O) kernel of an RGB layer -> ((kh, kw, 1, O) kernel, (O,) constant) for grey input normalised by
    `preprocess.grey(rgb)` (see the module docstring), in float64."""
    w = np.asarray(kernel, np.float64)
    if w.ndim != 4 or w.shape[2] != 3:
        raise ValueError(f"Expected an RGB conv kernel (kh, kw, 3, out), got shape {w.shape}.")
    grey = preprocess.grey(rgb)
    mean, std = np.asarray(rgb.mean, np.float64), np.asarray(rgb.std, np.float64)
    m, s = grey.mean[0], grey.std[0]
    folded = s * np.einsum("hwco,c->hwo", w, 1.0 / std)[:, :, None, :]
    constant = np.einsum("hwco,c->o", w, (m - mean) / std)
    return folded, constant


def _carry_constant(flat: dict, kernel_key: str, constant: np.ndarray) -> str:
    """Adds `constant` to the layer's bias, or subtracts it from the running mean of the BatchNorm it feeds (a
    ConvBN's 'conv' and 'bn' are siblings); returns the key that carries it."""
    module = module_of(name_of(kernel_key))
    bias = f"params/{module}/bias"
    if bias in flat:
        flat[bias] = (np.asarray(flat[bias], np.float64) + constant).astype(np.float32)
        return bias
    mean = f"batch_stats/{module_of(module)}/bn/mean"
    if mean in flat:
        flat[mean] = (np.asarray(flat[mean], np.float64) - constant).astype(np.float32)
        return mean
    raise ValueError(
        f"Folding {kernel_key} to one channel leaves a constant per output channel, but the layer has no bias and "
        f"feeds no BatchNorm ({bias} and {mean} are both absent) to carry it."
    )


def _normalization(preprocessing: Mapping | None, where: str) -> preprocess.Normalization:
    name = (preprocessing or {}).get("name")
    if not name:
        raise ValueError(
            f"Folding the RGB first layer of {where} into a one-channel one needs the normalisation its weights were "
            "trained with, and the checkpoint records no preprocessing."
        )
    return preprocess.get_normalization(name)


def fit_checkpoint(
    source: Mapping, target: Mapping, first_conv: str | None, preprocessing: Mapping | None, where: str = "checkpoint"
) -> tuple[dict, list[str]]:
    """`source` (checkpoint variables) fitted to `target` (the model's fresh variables): ViT position embeddings
    resampled to the target's grid, an RGB first layer `first_conv` (a flat key, or None) folded for a one-channel
    target using the checkpoint's `preprocessing` record. Returns (variables, one note per change, for the log);
    anything else is left for the strict merge to accept or reject."""
    src, tgt = flatten(source), flatten(target)
    notes = []
    for key, value in src.items():
        if key.endswith(f"/{POS_EMBEDDING}") and key in tgt and np.shape(value) != np.shape(tgt[key]):
            if np.ndim(value) == 3 and np.shape(value)[::2] == np.shape(tgt[key])[::2]:
                src[key] = vit.resample_posemb(value, np.shape(tgt[key])[1])
                notes.append(f"{key}: resampled from {np.shape(value)} to {np.shape(tgt[key])} (bicubic)")
    if first_conv in src and first_conv in tgt:
        have, want = np.shape(src[first_conv]), np.shape(tgt[first_conv])
        if len(have) == 4 and have[2] == 3 and want == have[:2] + (1,) + have[3:]:
            kernel, constant = fold_rgb_kernel(src[first_conv], _normalization(preprocessing, where))
            src[first_conv] = kernel.astype(np.float32)
            carrier = _carry_constant(src, first_conv, constant)
            notes.append(f"{first_conv}: RGB folded to one channel (its constant carried by {carrier})")
    return unflatten(src), notes
