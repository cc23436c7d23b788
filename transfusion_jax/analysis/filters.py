"""conv1 filters as an image grid (paper Fig. 5; the synthetic Gabor bank of the hybrid inits).

The picture is an exact pixel mosaic (no axes or text) so its size is predictable: each filter is one cell of
k*scale pixels, cells are separated by `pad` pixels of white, panels by `3 * pad`. Each filter is min-max
normalised on its own (over all its channels) for display, as its absolute scale would otherwise make most filters
invisible; filters with 3 input channels are shown in RGB, others as the grayscale mean over inputs.
transfusion_jax.experiments.figures.filter_grid writes it as a PNG.
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np

from transfusion_jax.surgery.schemes import first_conv_key
from transfusion_jax.surgery.tree import flatten

BACKGROUND = 1.0  # white


def conv1_kernel(variables: Mapping, blocks: Sequence[str]) -> np.ndarray:
    """The kernel of the first conv (the one reading the image) of a variables dict, as a float64 array."""
    flat = flatten(variables)
    return np.asarray(flat[first_conv_key(flat, blocks)], dtype=np.float64)


def _cells(kernel: np.ndarray) -> np.ndarray:
    """(n, k, k, 3) display images in [0, 1]: per-filter min-max, RGB or gray replicated."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 4:
        raise ValueError(f"Expected a conv kernel (k, k, in, out), got shape {k.shape}.")
    images = np.moveaxis(k, -1, 0)  # (n, k, k, in)
    if images.shape[-1] != 3:
        images = np.repeat(images.mean(axis=-1, keepdims=True), 3, axis=-1)
    lo = images.min(axis=(1, 2, 3), keepdims=True)
    span = images.max(axis=(1, 2, 3), keepdims=True) - lo
    return np.where(span > 0, (images - lo) / np.where(span > 0, span, 1.0), 0.5)


def filter_mosaic(kernel: np.ndarray, ncols: int = 8, panels: int = 1, scale: int = 8, pad: int = 2) -> np.ndarray:
    """An (H, W, 3) float image: filters in row-major order, `ncols` per row, split into `panels` side-by-side
    groups of consecutive filters (the paper's Gabor figure is 64 filters as 2 panels of 4x8)."""
    cells = _cells(kernel)
    n, k = cells.shape[0], cells.shape[1]
    if ncols < 1 or panels < 1 or scale < 1 or pad < 0:
        raise ValueError(f"Need ncols, panels, scale >= 1 and pad >= 0; got {ncols}, {panels}, {scale}, {pad}.")
    per_panel = math.ceil(n / panels)
    rows = math.ceil(per_panel / ncols)
    cell = k * scale
    panel_w, panel_h = ncols * (cell + pad) + pad, rows * (cell + pad) + pad
    gap = 3 * pad
    image = np.full((panel_h, panels * panel_w + (panels - 1) * gap, 3), BACKGROUND)
    for i in range(n):
        p, j = divmod(i, per_panel)
        r, c = divmod(j, ncols)
        top, left = pad + r * (cell + pad), p * (panel_w + gap) + pad + c * (cell + pad)
        image[top : top + cell, left : left + cell] = np.kron(cells[i], np.ones((scale, scale, 1)))
    return image
