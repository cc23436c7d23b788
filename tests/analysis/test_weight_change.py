"""Relative weight change per block, against a hand computation."""

import numpy as np
import pytest

from transfusion_jax.analysis import relative_weight_change


def params(seed):
    rng = np.random.default_rng(seed)
    return {
        "layer1": {
            "conv": {"kernel": rng.standard_normal((3, 3, 2, 4)), "bias": np.zeros(4)},
            "bn": {"scale": np.ones(4)},
        },
        "head": {"kernel": rng.standard_normal((4, 2)), "bias": np.zeros(2)},
    }


def test_per_block_ratio_pools_all_tensors_of_the_block():
    p0, pt = params(0), params(1)
    change = relative_weight_change(p0, pt)
    l1 = [("conv", "kernel"), ("conv", "bias"), ("bn", "scale")]

    def get(p, path):
        return p["layer1"][path[0]][path[1]]

    num = sum(np.sum((get(pt, k) - get(p0, k)) ** 2) for k in l1)
    den = sum(np.sum(get(p0, k) ** 2) for k in l1)
    assert change["layer1"] == pytest.approx(np.sqrt(num / den))
    assert set(change) == {"layer1", "head"}


def test_block_mapping_is_a_parameter():
    p0 = params(0)
    pt = {
        "layer1": {
            "conv": {"kernel": 2 * p0["layer1"]["conv"]["kernel"], "bias": np.ones(4)},
            "bn": {"scale": np.ones(4)},
        },
        "head": {"kernel": p0["head"]["kernel"], "bias": np.ones(2)},
    }
    kernels = relative_weight_change(
        p0, pt, block_of=lambda name: name.split("/")[0] if name.endswith("/kernel") else None
    )
    assert kernels == {"layer1": pytest.approx(1.0), "head": pytest.approx(0.0)}  # W -> 2W moves by |W|
    biases = relative_weight_change(p0, pt, block_of=lambda name: "biases" if name.endswith("/bias") else None)
    assert biases == {"biases": float("inf")}  # zero-initialised biases that moved


def test_mismatched_trees_are_clear_errors():
    p0, pt = params(0), params(1)
    del pt["head"]["bias"]
    with pytest.raises(ValueError, match="only in params_0 \\['head/bias'\\]"):
        relative_weight_change(p0, pt)
    pt = params(1)
    pt["head"]["kernel"] = np.zeros((5, 2))
    with pytest.raises(ValueError, match="head/kernel has shape"):
        relative_weight_change(p0, pt)
    with pytest.raises(ValueError, match="nothing to compare"):
        relative_weight_change(p0, params(1), block_of=lambda name: None)
