"""Linear interpolation between two solutions and the performance barrier (Neyshabur, Sedghi & Zhang, NeurIPS 2020).

theta(alpha) = theta_a + alpha (theta_b - theta_a) for alpha in a grid on [0, 1] that includes both ends; at each
point the model is evaluated (loss, AUC, ...). The barrier of a metric is the largest excess over the straight line
between the endpoint values: for the loss max_alpha [L(alpha) - ((1 - alpha) L(0) + alpha L(1))], for AUC
max_alpha [((1 - alpha) A(0) + alpha A(1)) - A(alpha)]. Two solutions in one basin have a barrier near 0; Neyshabur et
al. find that for two fine-tunings from the same pretrained weights, and not for two runs from random init. The
barrier is a maximum over the grid, so a lower bound of the true one at the grid's resolution (reported).

BatchNorm. Interpolated weights do not go with interpolated running statistics (the features of theta(alpha) are
not a mix of the endpoints' features), so at every alpha, the endpoints included, the running statistics are
recomputed over one fixed set of training batches (`train.batch_stats.BatchStatsRecomputer`: train-mode forward
passes, the average batch mean and variance; 16 batches by default, 1/25 of an epoch of Retina per alpha). The same
batches at every alpha, so differences along the path come from the weights, not from resampling. With the endpoints
recomputed too, a solution interpolated with itself gives the same model at every alpha: barrier exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from transfusion_jax.surgery import tree

DEFAULT_ALPHAS = tuple(np.round(np.linspace(0.0, 1.0, 11), 10))
# metric -> higher is better; the barrier is taken for each of these that `evaluate` returns.
BARRIER_METRICS = {"loss": False, "auc": True}


def _lerp(a: Mapping, b: Mapping, alpha: float) -> dict:
    """a + alpha (b - a) per leaf, in float64, cast back to each leaf's dtype (exact at alpha = 0 and 1)."""
    fa, fb = tree.flatten(a), tree.flatten(b)
    out = {}
    for key, x in fa.items():
        x64, y64 = np.asarray(x, np.float64), np.asarray(fb[key], np.float64)
        out[key] = jnp.asarray(x64 + alpha * (y64 - x64), dtype=jnp.asarray(x).dtype)
    return tree.unflatten(out)


def barrier_height(alphas: Sequence[float], values: Sequence[float], higher_is_better: bool = False) -> float:
    """max over the grid of the metric's excess over the line between its endpoint values (>= 0 by construction)."""
    alphas, values = np.asarray(alphas, np.float64), np.asarray(values, np.float64)
    line = (1 - alphas) * values[0] + alphas * values[-1]
    excess = line - values if higher_is_better else values - line
    return float(np.max(excess))


def _check_alphas(alphas: Sequence[float]) -> list[float]:
    alphas = [float(a) for a in alphas]
    if len(alphas) < 3 or alphas[0] != 0.0 or alphas[-1] != 1.0 or any(b <= a for a, b in zip(alphas, alphas[1:])):
        raise ValueError(f"alphas must increase from 0.0 to 1.0 with at least one point between, got {alphas}")
    return alphas


def interpolate(
    variables_a: Mapping,
    variables_b: Mapping,
    evaluate: Callable[[Mapping], Mapping[str, float]],
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    batch_stats_fn: Callable[[Mapping, Mapping], Mapping] | None = None,
) -> dict[str, Any]:
    """Metrics along theta_a -> theta_b and the barrier of each of BARRIER_METRICS that `evaluate` returns.

    batch_stats_fn(params, batch_stats) -> batch_stats for the interpolated params, normally
    `BatchStatsRecomputer(model, training_batches)`. None interpolates the running statistics like the weights
    (only right for models without BatchNorm; recorded in the result). Returns a JSON-ready dict.
    """
    alphas = _check_alphas(alphas)
    report = tree.mismatch_report(tree.flatten(variables_a), tree.flatten(variables_b), lambda key: True)
    if report is not None:
        raise tree.TreeMismatchError(f"The two solutions are not the same architecture:\n{report}")
    path = []
    for alpha in alphas:
        params = _lerp(variables_a["params"], variables_b["params"], alpha)
        stats_a, stats_b = variables_a.get("batch_stats", {}), variables_b.get("batch_stats", {})
        stats = _lerp(stats_a, stats_b, alpha) if batch_stats_fn is None else batch_stats_fn(params, stats_a)
        metrics = evaluate({"params": params, "batch_stats": stats})
        path.append({"alpha": alpha, **{k: float(v) for k, v in metrics.items()}})
    barrier = {
        key: barrier_height(alphas, [p[key] for p in path], higher)
        for key, higher in BARRIER_METRICS.items()
        if all(key in p for p in path)
    }
    return {
        "alphas": alphas,
        "path": path,
        "barrier": barrier,
        "resolution": max(b - a for a, b in zip(alphas, alphas[1:])),
        "batch_stats": "interpolated" if batch_stats_fn is None else "recomputed",
    }
