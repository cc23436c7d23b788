"""CCA / SVCCA / PWCCA / CKA against independent float64 references, invariances, null values and edge cases."""

import analysis_reference as ref
import numpy as np
import pytest

from transfusion_jax.analysis import moments, nulls, similarity


def correlated(seed, n=400, dx=12, dy=16, shared=6, offset=0.0):
    """x and y sharing `shared` latent directions plus independent noise, as float32."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, shared))
    x = z @ rng.standard_normal((shared, dx)) + rng.standard_normal((n, dx)) + offset
    y = z @ rng.standard_normal((shared, dy)) + 0.5 * rng.standard_normal((n, dy)) - offset
    return x.astype(np.float32), y.astype(np.float32)


def score(x, y, method, **kw):
    return similarity.similarity(x, y, method, **kw).score


@pytest.mark.parametrize(
    "method,kw",
    [
        ("cca", {}),
        ("svcca", {"keep": None}),
        ("svcca", {"keep": 5}),
        ("pwcca", {}),
        ("cka", {}),
        ("cka", {"debiased": True}),
    ],
)
def test_identical_inputs_give_one(method, kw):
    x, _ = correlated(0)
    assert score(x, x, method, **kw) == pytest.approx(1.0, abs=1e-6)


def test_cca_coefficients_match_qr_reference():
    """The score to 1e-6; single coefficients to 5e-6 (float32 moments: the small coefficients move by ~2e-6 with
    a GPU's summation order, H100 measured)."""
    x, y = correlated(1, offset=3.0)
    ours = similarity.similarity(x, y, "cca")
    rho, _ = ref.cca_qr(x, y)
    assert ours.score == pytest.approx(rho.mean(), abs=1e-6)
    np.testing.assert_allclose(ours.coefficients, rho, atol=5e-6)


@pytest.mark.parametrize("k", [3, 8])
def test_svcca_matches_svd_reference(k):
    x, y = correlated(2)
    assert score(x, y, "svcca", keep=k) == pytest.approx(ref.svcca_svd(x, y, k), abs=1e-6)


def test_svcca_variance_fraction_picks_smallest_k_reaching_it():
    x, y = correlated(3)
    s = np.linalg.svd(ref.centred(x), compute_uv=False) ** 2
    k_expected = int(np.argmax(np.cumsum(s) / s.sum() >= 0.9)) + 1
    result = similarity.similarity(x, y, "svcca", keep=0.9)
    assert result.info["dims_x"] == k_expected


@pytest.mark.parametrize("swap", [False, True])
def test_pwcca_matches_morcos_definition(swap):
    x, y = correlated(4, dx=10, dy=15)
    ours = similarity.similarity(y, x, "pwcca") if swap else similarity.similarity(x, y, "pwcca")
    assert ours.info["weights_side"] == ("y" if swap else "x")
    assert ours.weights.sum() == pytest.approx(1.0)
    assert ours.score == pytest.approx(ref.pwcca_morcos(x, y), abs=1e-6)
    # Weighting matters: PWCCA is not the plain mean here.
    assert abs(ours.score - ours.coefficients.mean()) > 1e-3


def test_cka_matches_gram_references():
    x, y = correlated(5, offset=10.0)
    assert score(x, y, "cka") == pytest.approx(ref.cka_gram(x, y), abs=1e-6)
    assert score(x, y, "cka", debiased=True) == pytest.approx(ref.cka_debiased_gram(x, y), abs=1e-6)


@pytest.mark.parametrize("method,kw", [("cca", {}), ("svcca", {"keep": None}), ("pwcca", {})])
def test_cca_family_invariant_to_invertible_linear_maps(method, kw):
    x, y = correlated(6)
    rng = np.random.default_rng(7)
    d = x.shape[1]  # a well-conditioned (cond 6) but far from orthogonal map, so float32 rounding stays small
    q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
    q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a = q1 @ np.diag(np.linspace(0.5, 3.0, d)) @ q2
    x_mapped = (x.astype(np.float64) @ a + 5.0).astype(np.float32)
    if method == "pwcca":  # the weights depend on the basis; the coefficients do not
        np.testing.assert_allclose(
            similarity.similarity(x_mapped, y, method).coefficients,
            similarity.similarity(x, y, method).coefficients,
            atol=1e-5,
        )
    else:
        assert score(x_mapped, y, method, **kw) == pytest.approx(score(x, y, method, **kw), abs=1e-5)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling_only(debiased):
    x, y = correlated(8)
    rng = np.random.default_rng(9)
    q, _ = np.linalg.qr(rng.standard_normal((x.shape[1], x.shape[1])))
    base = score(x, y, "cka", debiased=debiased)
    rotated = (3.7 * x.astype(np.float64) @ q).astype(np.float32)
    assert score(rotated, y, "cka", debiased=debiased) == pytest.approx(base, abs=1e-6)
    stretched = (x * np.linspace(0.2, 5.0, x.shape[1])).astype(np.float32)  # not orthogonal: CKA changes
    assert abs(score(stretched, y, "cka", debiased=debiased) - base) > 1e-2


def test_independent_gaussians_mean_squared_cca_matches_closed_form():
    """E[sum rho_i^2] = tr(E Px E Py) = p q / (n - 1) for independent isotropic data (random subspaces of R^(n-1))."""
    n, p, q, reps = 120, 6, 15, 40
    rng = np.random.default_rng(10)
    values = []
    for _ in range(reps):
        x = rng.standard_normal((n, p)).astype(np.float32)
        y = rng.standard_normal((n, q)).astype(np.float32)
        values.append(np.mean(similarity.similarity(x, y, "cca").coefficients ** 2))
    expected = max(p, q) / (n - 1)
    sem = np.std(values, ddof=1) / np.sqrt(reps)
    assert abs(np.mean(values) - expected) < 4 * sem


def test_independent_gaussians_debiased_cka_near_zero_biased_not():
    n, d, reps = 60, 20, 30
    rng = np.random.default_rng(11)
    debiased, biased = [], []
    for _ in range(reps):
        x = rng.standard_normal((n, d)).astype(np.float32)
        y = rng.standard_normal((n, d)).astype(np.float32)
        debiased.append(score(x, y, "cka", debiased=True))
        biased.append(score(x, y, "cka"))
    sem = np.std(debiased, ddof=1) / np.sqrt(reps)
    assert abs(np.mean(debiased)) < 4 * sem
    assert np.mean(biased) > 0.2  # the biased estimator is far from 0 when n is not >> d


def test_dead_neurons_are_dropped_and_change_nothing():
    x, y = correlated(12)
    dead = np.concatenate([x, np.full((len(x), 2), 3.0, np.float32), np.zeros((len(x), 1), np.float32)], axis=1)
    for method in ("cca", "pwcca"):
        result = similarity.similarity(dead, y, method)
        assert result.info["kept_x"] == x.shape[1]
        assert result.score == pytest.approx(score(x, y, method), abs=1e-6)
    assert np.isfinite(score(dead, y, "svcca", keep=None))
    assert np.isfinite(score(dead, y, "cka", debiased=True))


def test_rank_deficient_layer_uses_its_true_rank():
    x, y = correlated(13)
    redundant = np.concatenate([x, x[:, :3] + x[:, 3:6], 2 * x[:, :2]], axis=1)
    for method, kw in (("cca", {}), ("svcca", {"keep": None}), ("pwcca", {})):
        result = similarity.similarity(redundant, y, method, **kw)
        assert np.all(np.isfinite(result.coefficients))
        assert len(result.coefficients) == x.shape[1]
        np.testing.assert_allclose(result.coefficients, ref.cca_qr(x, y)[0], atol=1e-4)


@pytest.mark.parametrize(
    "smallest,route",
    [(0.5, "cholesky, proven by a shifted Cholesky"), (3e-6, "cholesky, proven by eigenvalues"), (1e-8, "eigh")],
)
def test_every_whitening_route_matches_the_qr_reference(smallest, route):
    """Whitening takes a Cholesky factor when every direction is kept, proven cheaply (well-conditioned) or by the
    eigenvalues (condition number near 1/rtol), and kept eigenvectors otherwise: each route gives the canonical
    correlations of an SVD of the data's orthonormal bases, and PWCCA's weights (float64 moments: only the route
    differs)."""
    rng = np.random.default_rng(14)
    n, dx = 2000, 12
    basis = np.linalg.qr(rng.standard_normal((dx, dx)))[0]
    scales = np.ones(dx)
    scales[-1] = np.sqrt(smallest)  # the covariance's smallest eigenvalue, relative to the others' 1
    x = rng.standard_normal((n, dx)) * scales @ basis.T
    y = x[:, :6] @ rng.standard_normal((6, 16)) + rng.standard_normal((n, 16))
    stats = nulls.moments_of(x, y)
    whitener = similarity._Whitener(stats.cxx, 1e-6)
    kept = x if smallest > 1e-6 else x @ basis[:, :-1]  # the eigh route drops the direction below rtol
    assert (whitener.lower is not None) == route.startswith("cholesky") and whitener.dims == kept.shape[1]
    if route.startswith("cholesky"):
        shifted = stats.cxx - 1e-6 * np.linalg.norm(stats.cxx) * np.eye(dx)
        assert similarity._positive_definite(shifted) == route.endswith("shifted Cholesky")
    rho, variates = ref.cca_qr(kept, y)
    np.testing.assert_allclose(similarity.cca(stats).coefficients, rho, atol=1e-9)
    alpha = np.abs(variates.T @ ref.centred(x)).sum(axis=1)  # Morcos et al.'s weights over x's own neurons
    assert similarity.pwcca(stats).score == pytest.approx(alpha @ rho / alpha.sum(), abs=1e-9)


def test_too_few_examples_is_a_clear_error():
    x, y = correlated(14, n=10, dx=12, dy=16)
    with pytest.raises(ValueError, match="more examples than features"):
        similarity.similarity(x, y, "cca")
    with pytest.raises(ValueError, match="more examples than features"):
        similarity.similarity(x, y, "svcca", keep=None)
    assert np.isfinite(score(x, y, "svcca", keep=3))
    assert np.isfinite(score(x, y, "cka"))


def test_bad_options_are_clear_errors():
    x, y = correlated(15)
    with pytest.raises(ValueError, match="unknown method"):
        similarity.similarity(x, y, "svd")
    with pytest.raises(ValueError, match="exceeds"):
        similarity.similarity(x, y, "svcca", keep=50)
    with pytest.raises(ValueError, match="variance fraction"):
        similarity.similarity(x, y, "svcca", keep=1.5)
    with pytest.raises(ValueError, match="zero variance"):
        similarity.similarity(np.ones_like(x), y, "cca")


def test_moments_match_float64_covariances():
    x, y = correlated(16, offset=50.0)
    stats = moments.finalize(moments.from_arrays(x, y))
    xc, yc = ref.centred(x), ref.centred(y)
    np.testing.assert_allclose(stats.cxy, xc.T @ yc / len(x), atol=1e-5)
    np.testing.assert_allclose(stats.mean_x, x.astype(np.float64).mean(0), rtol=1e-6)
    a, b = (xc**2).sum(1), (yc**2).sum(1)
    assert stats.p_xy == pytest.approx(a @ b, rel=1e-6)
    assert stats.p_xx == pytest.approx(a @ a, rel=1e-6)
