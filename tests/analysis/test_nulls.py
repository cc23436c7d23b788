"""The shuffled-image null of a similarity measure: the same measure on directly permuted rows, and the closed-form
floor of linear CKA for independent data."""

import numpy as np
import pytest

from transfusion_jax.analysis import moments, nulls, similarity

METHODS = {"svcca": {"keep": 0.99}, "cka": {}}


def related(num_images, per_image, dx, dy, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_images * per_image, dx))
    y = x @ rng.standard_normal((dx, dy)) + 0.5 * rng.standard_normal((num_images * per_image, dy))
    return x.astype(np.float32), y.astype(np.float32)


def test_null_is_the_measure_on_directly_permuted_images():
    num_images, per_image = 30, 3
    x, y = related(num_images, per_image, 4, 5)
    out = nulls.with_null(x, y, num_images, METHODS, permutations=3, seed=11)
    for perm_index, perm in enumerate(nulls.image_permutations(num_images, 3, seed=11)):
        # By hand: image i's rows of y become image perm[i]'s rows, one image at a time.
        shuffled = np.concatenate([y[per_image * j : per_image * (j + 1)] for j in perm])
        for method, options in METHODS.items():
            want = similarity.similarity(x, shuffled, method, **options).score  # streamed float32 moments
            assert out[method]["null"][perm_index] == pytest.approx(want, abs=1e-5)
    for method, options in METHODS.items():
        assert out[method]["score"] == pytest.approx(similarity.similarity(x, y, method, **options).score, abs=1e-5)
        assert out[method]["null_mean"] == pytest.approx(np.mean(out[method]["null"]))
        assert out[method]["null_min"] <= out[method]["null_mean"] <= out[method]["null_max"]
        assert (out[method]["n"], out[method]["dx"], out[method]["dy"]) == (90, 4, 5)
        assert out[method]["n_per_dim"] == 90 / 5
    assert out["svcca"]["dims_x"] <= 4 and out["svcca"]["dims_y"] <= 5


def test_null_of_linear_cka_matches_its_closed_form():
    """Shuffling makes y independent of x; for independent data E ||Cxy||^2 = tr(Cxx) tr(Cyy) / n, so linear CKA's
    floor is tr(Cxx) tr(Cyy) / (n ||Cxx||_F ||Cyy||_F): ~0.006 here, while the related pair scores far above it."""
    num_images, dx, dy = 3000, 12, 8
    x, y = related(num_images, 1, dx, dy, seed=4)
    out = nulls.with_null(x, y, num_images, {"cka": {}}, permutations=5, seed=0)
    cxx, cyy = np.cov(x.T, bias=True), np.cov(y.T, bias=True)
    floor = np.trace(cxx) * np.trace(cyy) / (num_images * np.linalg.norm(cxx) * np.linalg.norm(cyy))
    assert out["cka"]["null_mean"] == pytest.approx(floor, rel=0.2)
    assert out["cka"]["score"] > 20 * floor


def test_float64_moments_equal_the_streamed_ones():
    x, y = related(50, 2, 3, 4, seed=5)
    want = moments.finalize(moments.from_arrays(x, y, batch_size=16))
    got = nulls.moments_of(x, y)
    assert got.n == want.n == 100
    for field in ("mean_x", "mean_y", "cxx", "cyy", "cxy"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-5, atol=1e-6, err_msg=field)
    for field in ("p_xx", "p_yy", "p_xy"):
        assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-4), field


def test_null_permutations_and_errors():
    perms = nulls.image_permutations(10, 4, seed=2)
    assert len(perms) == 4 and all(sorted(p) == list(range(10)) for p in perms)
    assert all(np.array_equal(a, b) for a, b in zip(perms, nulls.image_permutations(10, 4, seed=2)))
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)  # 3 images of 2 rows
    np.testing.assert_array_equal(nulls.shuffle_images(rows, 3, np.array([2, 0, 1])), rows[[4, 5, 0, 1, 2, 3]])
    with pytest.raises(ValueError, match="equal blocks"):
        nulls.shuffle_images(rows, 4, np.arange(4))
    with pytest.raises(ValueError, match="same rows"):
        nulls.with_null(rows, rows[:4], 3, METHODS)
    with pytest.raises(ValueError, match=">= 2 images"):
        nulls.image_permutations(1, 3)
