"""Sanity checks of the similarity measures in the spirit of Ding, Denain & Steinhardt (NeurIPS 2021).

A measure is worth reading only if it tells apart what should differ and not what should not:
  * specificity: two training seeds of the same network give functionally equivalent layers, so their distance
    should be small. Shown beside its null, the distance when the second layer's rows are shuffled (the same
    activations, no longer describing the same inputs).
  * sensitivity: the same layer with its top k principal components removed is a different representation, so its
    distance to the original should grow with k. The removal is projected out of the centred activations, so the
    rest of the representation is untouched.
A measure "detects" the removal of k components when that distance exceeds the seed-to-seed distance by more than
`resolution` (default 1e-5, above the ~1e-6 float32 resolution of the moments): a change it cannot see beyond the
noise of retraining would go unnoticed in any real comparison. Ding et al. judge sensitivity
against probe accuracy instead; this simpler, stated version needs no probe and reads off one table.

Every measure is put on one orientation, a distance (`similarity.as_distance`: 1 - score for the similarities, the
Procrustes distance as is). Inputs are whole arrays (examples, features), e.g. mean-pooled or position-sampled
activations (`activations.to_datapoints`); everything is computed one-shot through `similarity.similarity`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transfusion_jax.analysis import similarity

# (method, options) rows of the table: every measure of `similarity`, with the options the analyses use by default.
DEFAULT_MEASURES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("cca", {}),
    ("svcca", {"keep": 0.99}),
    ("pwcca", {}),
    ("cka", {}),
    ("cka", {"debiased": True}),
    ("procrustes", {}),
)


def remove_top_components(x: np.ndarray, k: int) -> np.ndarray:
    """The centred rows of `x` with their top-k principal directions projected out (float64)."""
    xc = np.asarray(x, np.float64) - np.mean(x, axis=0, dtype=np.float64)
    if not 0 <= k < min(xc.shape):
        raise ValueError(f"k={k} principal components cannot be removed from {xc.shape} activations (need k < rank)")
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc - (xc @ vt[:k].T) @ vt[:k]


def _label(method: str, options: dict[str, Any]) -> str:
    return method + "".join(f" {k}={v}" for k, v in sorted(options.items()))


def sanity_table(
    x: np.ndarray,
    x_other_seed: np.ndarray,
    ks: Sequence[int] = (1, 2, 4, 8),
    measures: Sequence[tuple[str, dict[str, Any]]] = DEFAULT_MEASURES,
    seed: int = 0,
    resolution: float = 1e-5,
) -> dict[str, Any]:
    """Specificity (seed pair, beside its shuffled null) and sensitivity (top-k PCs removed) of each measure.

    x, x_other_seed: the same layer of two seeds on the same inputs, (examples, features). Returns a JSON-ready
    dict: {'ks', 'n_examples', 'seed', 'resolution', 'rows': [{'measure', 'method', 'options', 'specificity', 'null',
    'sensitivity': {k: distance}, 'detects': {k: bool}}]}, all distances (0 = same).
    """
    x, y = np.asarray(x), np.asarray(x_other_seed)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x and x_other_seed must be (examples, features) on the same examples: {x.shape}, {y.shape}")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of component counts >= 1, got {ks}")
    shuffled = y[np.random.default_rng(seed).permutation(len(y))]
    removed = {k: remove_top_components(x, k) for k in ks}
    rows = []
    for method, options in measures:

        def distance(a, b, method=method, options=options):
            return similarity.as_distance(similarity.similarity(a, b, method, **options))

        specificity = distance(x, y)
        sensitivity = {k: distance(x, removed[k]) for k in ks}
        rows.append(
            {
                "measure": _label(method, options),
                "method": method,
                "options": dict(options),
                "specificity": specificity,
                "null": distance(x, shuffled),
                "sensitivity": {str(k): d for k, d in sensitivity.items()},
                "detects": {str(k): bool(d > specificity + resolution) for k, d in sensitivity.items()},
            }
        )
    return {"ks": ks, "n_examples": int(len(x)), "seed": seed, "resolution": resolution, "rows": rows}
