"""The null value of a similarity measure at the data's own size: the same measure between X and Y with Y's images
shuffled, the rows of one image moved together.

A shuffle breaks what the two layers share through seeing the same image, and keeps everything else: the number of
datapoints n, each side's dimensions d, each side's own covariance (so the directions SVCCA keeps), and the spatial
structure within an image. Why it is needed: CCA-family scores of unrelated data are far from 0 unless n >> d (for
independent Gaussian data the mean squared canonical correlation is about d / n) and linear CKA has its own floor
(about sqrt(dx dy) / n for isotropic independent data), so a similarity number means something only beside what
unrelated activations of the same size score.

Rows are (images * rows_per_image, features) with each image's rows contiguous, as `activations.collect_rows` gives
them. Pure NumPy: the moments every measure of `similarity` reads are computed here in float64 from the whole arrays
(`moments_of`), not streamed through `moments.from_arrays`, whose jitted accumulator compiles once per array shape:
a null takes a handful of shapes per layer, each used a few times.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

from transfusion_jax.analysis import moments, similarity


def image_permutations(num_images: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` uniform random permutations of the image indices, a pure function of (num_images, count, seed)."""
    if num_images < 2 or count < 1:
        raise ValueError(f"A shuffled-image null needs >= 2 images and >= 1 permutation, got {num_images}, {count}.")
    rng = np.random.default_rng(seed)
    return [rng.permutation(num_images) for _ in range(count)]


def shuffle_images(rows: np.ndarray, num_images: int, permutation: np.ndarray) -> np.ndarray:
    """`rows` with image i's block of rows replaced by image permutation[i]'s."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] % num_images:
        raise ValueError(
            f"rows of shape {rows.shape} are not num_images={num_images} equal blocks of (rows, features)."
        )
    per_image = rows.shape[0] // num_images
    return rows.reshape(num_images, per_image, rows.shape[1])[np.asarray(permutation)].reshape(rows.shape)


def moments_of(x: np.ndarray, y: np.ndarray) -> moments.Stats:
    """`moments.Stats` of two whole arrays of paired rows, in float64 (what `moments.finalize` gives for them)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    n = x.shape[0]
    a, b = np.sum(xc**2, axis=1), np.sum(yc**2, axis=1)
    return moments.Stats(
        n=n,
        mean_x=x.mean(axis=0),
        mean_y=y.mean(axis=0),
        cxx=xc.T @ xc / n,
        cyy=yc.T @ yc / n,
        cxy=xc.T @ yc / n,
        p_xx=float(a @ a),
        p_yy=float(b @ b),
        p_xy=float(a @ b),
    )


def _scores(x: np.ndarray, y: np.ndarray, methods: Mapping[str, Mapping]) -> dict[str, similarity.Similarity]:
    stats = moments_of(x, y)  # one set of moments serves every method
    return {method: similarity.measure(stats, method, **dict(options)) for method, options in methods.items()}


def with_null(
    x: np.ndarray,
    y: np.ndarray,
    num_images: int,
    methods: Mapping[str, Mapping[str, Any]],
    permutations: int = 5,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per method (a name of `similarity.METHODS` -> its options, e.g. {'svcca': {'keep': 0.99}, 'cka': {}}): the
    score of (x, y), the scores of (x, y with its images shuffled) for `permutations` shuffles (`image_permutations`
    of `seed`), their mean, min and max, and the size they were computed at: n rows, dx and dy features, n / max d."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same rows (datapoints), got {x.shape[0]} and {y.shape[0]}.")
    real = _scores(x, y, methods)
    nulls = [
        _scores(x, shuffle_images(y, num_images, p), methods)
        for p in image_permutations(num_images, permutations, seed)
    ]
    n, dx, dy = x.shape[0], x.shape[1], y.shape[1]
    out = {}
    for method, result in real.items():
        null = [float(r[method].score) for r in nulls]
        out[method] = {
            "score": float(result.score),
            "null": null,
            "null_mean": float(np.mean(null)),
            "null_min": float(np.min(null)),
            "null_max": float(np.max(null)),
            "n": n,
            "dx": dx,
            "dy": dy,
            "n_per_dim": n / max(dx, dy),
            **{k: v for k, v in result.info.items() if k in ("dims_x", "dims_y")},
        }
    return out
