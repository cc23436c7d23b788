"""How far training moved the weights: ||W_T - W_0|| / ||W_0|| per block (paper §5.3, "larger models change less")."""

from collections.abc import Callable
from typing import Any

import numpy as np

from transfusion_jax.surgery import tree


def relative_weight_change(
    params_0: Any, params_t: Any, block_of: Callable[[str], str | None] = tree.block_of
) -> dict[str, float]:
    """Per block, the Frobenius norm of (params_t - params_0) over all its tensors, divided by that of params_0.

    params_0/params_t: two flax `params` trees of the same structure (before / after training).
    block_of: maps a parameter name ('layer1/conv/kernel', transfusion_jax.surgery.tree) to the group it counts
      in, or None to leave that tensor out; default its block (the first component). Computed in float64.
    Blocks whose initial weights are all zero (e.g. only zero-initialised biases) get inf if they moved, else 0.
    """
    flat_0, flat_t = tree.flatten(params_0), tree.flatten(params_t)
    if flat_0.keys() != flat_t.keys():
        only_0 = sorted(flat_0.keys() - flat_t.keys())
        only_t = sorted(flat_t.keys() - flat_0.keys())
        raise ValueError(f"the two params trees differ: only in params_0 {only_0}, only in params_t {only_t}")
    diff2: dict[str, float] = {}
    init2: dict[str, float] = {}
    for path, w0 in flat_0.items():
        block = block_of(path)
        if block is None:
            continue
        w0 = np.asarray(w0, np.float64)
        wt = np.asarray(flat_t[path], np.float64)
        if w0.shape != wt.shape:
            raise ValueError(f"parameter {path} has shape {w0.shape} in params_0 but {wt.shape} in params_t")
        diff2[block] = diff2.get(block, 0.0) + float(np.sum((wt - w0) ** 2))
        init2[block] = init2.get(block, 0.0) + float(np.sum(w0**2))
    if not diff2:
        raise ValueError("block_of returned None for every parameter: nothing to compare")
    return {b: _ratio(diff2[b], init2[b]) for b in diff2}


def _ratio(diff2: float, init2: float) -> float:
    if init2 > 0:
        return float(np.sqrt(diff2 / init2))
    return float("inf") if diff2 > 0 else 0.0
