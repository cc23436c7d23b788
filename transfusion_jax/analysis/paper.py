"""The paper's representation analyses (§5.2, §5.3) as functions of variables + apply_fn + batches, writing JSON.

Loading checkpoints and building the model stay with the caller, so these work for any pair of variable dicts:
  * `top_layers_similarity`: Fig. 2, CCA(Rand, ImNet) vs CCA(Rand, Rand): mean similarity of the top layers
    (the paper averages the top two blocks before the output layer).
  * `similarity_to_init`: Fig. 3, per-layer similarity of each block at initialisation and after training, with
    the relative weight change of each block (§5.3, "larger models change less").
Defaults follow PAPER.md §5.1's recommendation: SVCCA to 99% variance over spatial positions as datapoints.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from transfusion_jax.analysis import activations, weights
from transfusion_jax.analysis.activations import Reduction

DEFAULT_REDUCTION = Reduction(mode="positions", positions=16, seed=0)


def _write(result: dict[str, Any], out: str | Path | None) -> dict[str, Any]:
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def top_layers_similarity(apply_fn: Callable, variables_a: Any, variables_b: Any, batches: Iterable,
                          layers: Sequence[str], method: str = "svcca", reduction: Reduction = DEFAULT_REDUCTION,
                          out: str | Path | None = None, **options) -> dict[str, Any]:
    """Similarity of the same `layers` in two trained networks and their mean (one point of Fig. 2's violins)."""
    per_layer = activations.compare_models((apply_fn, variables_a), (apply_fn, variables_b), batches, method,
                                           pairs=[(name, name) for name in layers], reduction=reduction, **options)
    result = {"analysis": "top_layers_similarity", "method": method, "options": options, "layers": list(layers),
              "mean": float(np.mean([r["score"] for r in per_layer.values()])),
              "per_layer": {key.split("/")[0]: value for key, value in per_layer.items()}}
    return _write(result, out)


def similarity_to_init(apply_fn: Callable, variables_init: Any, variables_trained: Any, batches: Iterable,
                       layers: Sequence[str] | None = None, method: str = "svcca",
                       reduction: Reduction = DEFAULT_REDUCTION,
                       block_of: Callable[[tuple[str, ...]], str | None] = weights.first_component,
                       out: str | Path | None = None, **options) -> dict[str, Any]:
    """Per block: representation similarity between init and trained weights, and ||W_T - W_0|| / ||W_0||.

    layers: feature names to compare (default: every feature the model returns).
    """
    pairs = None if layers is None else [(name, name) for name in layers]
    per_layer = activations.compare_models((apply_fn, variables_init), (apply_fn, variables_trained), batches,
                                           method, pairs=pairs, reduction=reduction, **options)
    change = weights.relative_weight_change(variables_init["params"], variables_trained["params"], block_of)
    result = {"analysis": "similarity_to_init", "method": method, "options": options,
              "similarity": {key.split("/")[0]: value for key, value in per_layer.items()},
              "relative_weight_change": change}
    return _write(result, out)
