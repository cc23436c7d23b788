"""The paper's representation analyses (§5.2, §5.3) as pure functions of variables + apply_fn + batches.

Loading checkpoints and building the model stay with the caller, so these work for any pair of variable dicts:
  * `top_layers_similarity`: Fig. 2, CCA(Rand, ImNet) vs CCA(Rand, Rand): mean similarity of the top layers
    (the paper averages the top two blocks before the output layer).
  * `similarity_to_init`: Fig. 3, per-layer similarity of each block at initialisation and after training, with
    the relative weight change of each block (§5.3, "larger models change less").
  * `init_vs_final_correlation`: Fig. 4, per layer, similarity of two networks at init vs after training over
    several pairs, with Pearson r and R² (for ResNet-50 lower layers correlate strongly; for CBR-Small not).
Defaults (docs/paper.md §8.5): SVCCA to 99 % variance over spatial positions as datapoints, as in google/svcca's
conv tutorial.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from transfusion_jax.analysis import activations, weights
from transfusion_jax.analysis.activations import Reduction
from transfusion_jax.surgery import tree

DEFAULT_REDUCTION = Reduction(mode="positions", positions=16, seed=0)


def top_layers_similarity(
    apply_fn: Callable,
    variables_a: Any,
    variables_b: Any,
    batches: Iterable,
    layers: Sequence[str],
    method: str = "svcca",
    reduction: Reduction = DEFAULT_REDUCTION,
    **options,
) -> dict[str, Any]:
    """Similarity of the same `layers` in two trained networks and their mean (one point of Fig. 2's violins)."""
    per_layer = activations.compare_models(
        (apply_fn, variables_a),
        (apply_fn, variables_b),
        batches,
        method,
        pairs=[(name, name) for name in layers],
        reduction=reduction,
        **options,
    )
    result = {
        "analysis": "top_layers_similarity",
        "method": method,
        "options": options,
        "layers": list(layers),
        "mean": float(np.mean([r["score"] for r in per_layer.values()])),
        "per_layer": {key.split("/")[0]: value for key, value in per_layer.items()},
    }
    return result


def similarity_to_init(
    apply_fn: Callable,
    variables_init: Any,
    variables_trained: Any,
    batches: Iterable,
    layers: Sequence[str] | None = None,
    method: str = "svcca",
    reduction: Reduction = DEFAULT_REDUCTION,
    block_of: Callable[[str], str | None] = tree.block_of,
    **options,
) -> dict[str, Any]:
    """Per block: representation similarity between init and trained weights, and ||W_T - W_0|| / ||W_0||.

    layers: feature names to compare (default: every feature the model returns).
    """
    pairs = None if layers is None else [(name, name) for name in layers]
    per_layer = activations.compare_models(
        (apply_fn, variables_init),
        (apply_fn, variables_trained),
        batches,
        method,
        pairs=pairs,
        reduction=reduction,
        **options,
    )
    change = weights.relative_weight_change(variables_init["params"], variables_trained["params"], block_of)
    result = {
        "analysis": "similarity_to_init",
        "method": method,
        "options": options,
        "similarity": {key.split("/")[0]: value for key, value in per_layer.items()},
        "relative_weight_change": change,
    }
    return result


def init_vs_final_correlation(
    apply_fn: Callable,
    pairs: Sequence[tuple[tuple[Any, Any], tuple[Any, Any]]],
    batches: Iterable,
    layers: Sequence[str],
    method: str = "svcca",
    reduction: Reduction = DEFAULT_REDUCTION,
    **options,
) -> dict[str, Any]:
    """Fig. 4: per layer, does similarity of two networks at init predict their similarity after training?

    pairs: ((init_a, final_a), (init_b, final_b)) variable dicts of two runs each. Per layer, every pair gives a
    point (similarity(init_a, init_b), similarity(final_a, final_b)); the Pearson r and R² = r² of those points
    (float64) say how strongly init similarity predicts final similarity. r needs >= 3 points (two always lie on
    a line), finite similarities and points that vary on both axes; otherwise r and R² are NaN with the reason in
    `note`.
    """
    if not pairs:
        raise ValueError("pairs is empty: give at least one ((init_a, final_a), (init_b, final_b))")
    batches = list(batches)  # every comparison streams the same images
    points: dict[str, list[list[float]]] = {name: [] for name in layers}
    for (init_a, final_a), (init_b, final_b) in pairs:
        at = {}
        for when, (va, vb) in (("init", (init_a, init_b)), ("final", (final_a, final_b))):
            per_layer = activations.compare_models(
                (apply_fn, va),
                (apply_fn, vb),
                batches,
                method,
                pairs=[(name, name) for name in layers],
                reduction=reduction,
                **options,
            )
            at[when] = {key.split("/")[0]: value["score"] for key, value in per_layer.items()}
        for name in layers:
            points[name].append([float(at["init"][name]), float(at["final"][name])])
    per_layer = {name: {"points": pts, **_pearson(np.asarray(pts, np.float64))} for name, pts in points.items()}
    result = {
        "analysis": "init_vs_final_correlation",
        "method": method,
        "options": options,
        "reduction": reduction.describe(),
        "layers": list(layers),
        "num_pairs": len(pairs),
        "per_layer": per_layer,
    }
    return result


def _pearson(points: np.ndarray) -> dict[str, Any]:
    """Pearson r and R² of (x, y) rows in float64, or NaN with the reason when r is undefined."""
    if len(points) < 3:
        return {
            "r": float("nan"),
            "r2": float("nan"),
            "note": f"r undefined: {len(points)} point(s), need >= 3 (two points always lie on a line)",
        }
    if not np.all(np.isfinite(points)):
        return {"r": float("nan"), "r2": float("nan"), "note": "r undefined: a similarity is not finite"}
    centred = points - points.mean(axis=0)
    sx, sy = np.sqrt(np.sum(centred**2, axis=0))
    if sx == 0 or sy == 0:
        return {"r": float("nan"), "r2": float("nan"), "note": "r undefined: one axis has no variation"}
    r = float(np.sum(centred[:, 0] * centred[:, 1]) / (sx * sy))
    return {"r": r, "r2": r * r}
