"""Fig. 4's analysis (init vs final similarity, r and R²) on perturbed tiny CBRs, against scipy."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from transfusion_jax.analysis import Reduction, paper
from transfusion_jax.models import get_model


@functools.cache
def cbr(size=32):
    model = get_model("cbr_small", 2, widths=(4, 8, 8, 8))
    init = jax.jit(lambda key: model.init(key, np.zeros((1, size, size, 3), np.float32), train=False))
    return functools.partial(model.apply, train=False), init


@functools.partial(jax.jit, static_argnums=(2,))
def perturbed(variables, seed, scale):
    """A stand-in for a trained network: the init plus seeded noise on every parameter (jitted: op by op is slow)."""
    leaves, tree = jax.tree_util.tree_flatten(variables["params"])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [w + scale * jax.random.normal(k, w.shape) * (jnp.std(w) + 1e-3) for w, k in zip(leaves, keys)]
    return {**variables, "params": jax.tree_util.tree_unflatten(tree, noisy)}


def test_init_vs_final_correlation_points_r_and_r2():
    apply_fn, init = cbr()
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((12, 32, 32, 3)).astype(np.float32) for _ in range(2)]
    inits = [init(jax.random.key(s)) for s in range(3)]
    finals = [perturbed(v, 10 + i, 0.5) for i, v in enumerate(inits)]
    runs = list(zip(inits, finals))
    pairs = [(runs[0], runs[1]), (runs[0], runs[2]), (runs[2], runs[2])]
    layers = ["layer1", "layer3"]
    result = paper.init_vs_final_correlation(
        apply_fn, pairs, batches, layers, method="cka", reduction=Reduction(mode="mean")
    )
    assert json.loads(json.dumps(result)) == result and result["num_pairs"] == 3  # JSON-ready
    for name in layers:
        layer = result["per_layer"][name]
        points = np.asarray(layer["points"], np.float64)
        assert points.shape == (3, 2) and np.all((points > 0) & (points <= 1 + 1e-6))
        assert np.all(points[:2] < 0.999)  # different networks
        np.testing.assert_allclose(points[2], [1.0, 1.0], atol=1e-5)  # identical networks, both ends
        fit = stats.linregress(points[:, 0], points[:, 1])
        assert layer["r"] == pytest.approx(np.corrcoef(points.T)[0, 1], abs=1e-12)
        assert layer["r2"] == pytest.approx(fit.rvalue**2, abs=1e-12)


def test_r_undefined_is_nan_with_a_reason():
    two = paper._pearson(np.array([[0.2, 0.3], [0.4, 0.9]]))
    assert math.isnan(two["r"]) and math.isnan(two["r2"]) and "need >= 3" in two["note"]
    assert "not finite" in paper._pearson(np.array([[0.2, 0.3], [0.4, np.nan], [0.5, 0.6]]))["note"]
    flat = paper._pearson(np.array([[0.5, 0.1], [0.5, 0.7], [0.5, 0.9]]))
    assert math.isnan(flat["r"]) and "no variation" in flat["note"]
    assert paper._pearson(np.array([[0.1, 0.3], [0.2, 0.5], [0.3, 0.7]]))["r"] == pytest.approx(1.0)
