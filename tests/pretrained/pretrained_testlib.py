"""Shared by the pretrained-conversion tests: random reference weights, inputs, our forward pass, the error metric."""

import jax
import numpy as np

from transfusion_jax.data.preprocess import PRESETS

TOL = 1e-4  # max|ours - reference| / max|reference|, per activation


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def pixels(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random uint8-valued RGB images, NHWC float32 in 0..255."""
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3)).astype(np.float32)


def normalise(px: np.ndarray, preset: str) -> np.ndarray:
    """The preset's formula written out independently of transfusion_jax.data: reorder, scale, centre, divide."""
    p = PRESETS[preset]
    x = px[..., ::-1] if p.channel_order == "BGR" else px
    x = x.astype(np.float64) / 255.0 * p.scale
    return ((x - np.asarray(p.mean)) / np.asarray(p.std)).astype(np.float32)


_JITTED = {}


def our_forward(model, variables, x):
    """(logits, features) as NumPy arrays, eval mode; one compile per (model, input shape)."""
    if id(model) not in _JITTED:
        _JITTED[id(model)] = (model, jax.jit(lambda v, x: model.apply(v, x, train=False)))
    logits, features = _JITTED[id(model)][1](variables, x)
    return np.asarray(logits), {k: np.asarray(v) for k, v in features.items()}
