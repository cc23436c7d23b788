"""Token policies of the activation reductions (a ViT's [N, 1 + P, D] features): the class token, the mean over patch
tokens, patch tokens as datapoints (sampled and resized like conv positions), checked against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transfusion_jax.analysis import activations
from transfusion_jax.analysis.activations import Reduction


def tokens(n=3, grid=4, d=5, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, 1 + grid * grid, d)), jnp.float32)


def test_class_token_mean_and_positions():
    f = tokens()
    x = np.asarray(f)
    key = jax.random.key(0)
    np.testing.assert_array_equal(activations.to_datapoints(f, Reduction(mode="class_token"), key), x[:, 0])
    np.testing.assert_allclose(activations.to_datapoints(f, Reduction(mode="mean"), key), x[:, 1:].mean(1), rtol=1e-6)
    rows = activations.to_datapoints(f, Reduction(mode="positions"), key)
    np.testing.assert_array_equal(rows, x[:, 1:].reshape(3 * 16, 5))  # image by image, patches in grid order
    sampled = np.asarray(activations.to_datapoints(f, Reduction(mode="positions", positions=6, seed=1), key))
    assert sampled.shape == (3 * 6, 5)
    for i in range(3):  # each image's sampled rows are distinct patch tokens of that image, never its class token
        picked = sampled[6 * i : 6 * i + 6]
        assert all(any(np.array_equal(r, c) for c in x[i, 1:]) for r in picked)
        assert not any(np.array_equal(r, x[i, 0]) for r in picked) and len({tuple(r) for r in picked}) == 6


def test_patch_grid_is_the_image_layout_for_resizing():
    """Patch token j of a g x g grid sits at row j // g, column j % g: a grid resize pairs a 4 x 4 ViT layer with a
    2 x 2 conv map as it pairs two conv maps."""
    f = tokens(n=2, grid=4, d=3)
    grid = np.asarray(activations.patch_grid(f))
    assert grid.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(grid[:, 1, 2], np.asarray(f)[:, 1 + 1 * 4 + 2])
    resized = activations.to_datapoints(f, Reduction(mode="positions", grid=(2, 2)), jax.random.key(0))
    want = jax.image.resize(jnp.asarray(grid), (2, 2, 2, 3), method="linear").reshape(8, 3)
    np.testing.assert_allclose(resized, want, rtol=1e-6)
    odd = jnp.zeros((2, 1 + 6, 3))  # not a square: one row of patches
    assert activations.patch_grid(odd).shape == (2, 1, 6, 3)


def test_class_token_needs_token_features():
    with pytest.raises(ValueError, match="class_token' needs token features"):
        activations.to_datapoints(jnp.zeros((2, 4, 4, 3)), Reduction(mode="class_token"), jax.random.key(0))
    pooled = jnp.ones((2, 3))  # pre_logits passes through whatever the mode
    np.testing.assert_array_equal(activations.to_datapoints(pooled, Reduction(mode="class_token"), None), pooled)
