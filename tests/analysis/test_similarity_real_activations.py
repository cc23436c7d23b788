"""Real activations of independently trained networks (data/activations.npz; provenance in data/README.md)."""

import functools
from pathlib import Path

import analysis_reference as ref
import numpy as np
import pytest

from transfusion_jax.analysis import moments, similarity

ACTIVATIONS = Path(__file__).resolve().parent / "data" / "activations.npz"
PAIRS = {
    "svhn_fc": ("svhn_model0_fc", "svhn_model1_fc"),
    "mnist_logits": ("mnist_model0_logits", "mnist_model1_logits"),
}
SHAPES = {"svhn_fc": (1000, 200), "mnist_logits": (10000, 10)}


@functools.cache
def load(pair):
    with np.load(ACTIVATIONS) as archive:
        return tuple(archive[name] for name in PAIRS[pair])


@pytest.mark.parametrize("pair", list(PAIRS))
def test_the_files_are_what_their_readme_says(pair):
    for array in load(pair):
        assert array.shape == SHAPES[pair] and array.dtype == np.float32 and np.all(np.isfinite(array))


@functools.cache
def stats(pair, shuffled=False):
    """Moments of the pair, or of the pair with y's rows permuted (breaking which input each row came from)."""
    x, y = load(pair)
    if shuffled:
        y = y[np.random.default_rng(1).permutation(len(y))]
    return moments.finalize(moments.from_arrays(x, y))


def variance_k(a, fraction):
    s = np.linalg.svd(ref.centred(a), compute_uv=False) ** 2
    return int(np.argmax(np.cumsum(s) / s.sum() >= fraction)) + 1


@pytest.mark.parametrize("pair", list(PAIRS))
def test_cca_family_matches_float64_reference(pair):
    """Scores to 1e-6; single coefficients to 5e-6 (MNIST logits are ill-conditioned enough, cond ~200, that
    float32 moments move the smallest coefficients by ~1e-6)."""
    x, y = load(pair)
    rho, _ = ref.cca_qr(x, y)
    result = similarity.cca(stats(pair))
    np.testing.assert_allclose(result.coefficients, rho, atol=5e-6)
    assert result.score == pytest.approx(rho.mean(), abs=1e-6)
    assert similarity.pwcca(stats(pair)).score == pytest.approx(ref.pwcca_morcos(x, y), abs=1e-6)
    k = variance_k(x, 0.99)
    assert k == variance_k(y, 0.99)  # true for these files; the reference below needs one k
    result = similarity.svcca(stats(pair), keep=0.99)
    assert (result.info["dims_x"], result.info["dims_y"]) == (k, k)
    assert result.score == pytest.approx(ref.svcca_svd(x, y, k), abs=1e-6)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_cka_matches_gram_reference(pair):
    x, y = load(pair)
    rows = np.random.default_rng(0).permutation(len(x))[:1000]  # n x n Gram matrices: keep n small
    x, y = x[rows], y[rows]
    assert similarity.similarity(x, y, "cka").score == pytest.approx(ref.cka_gram(x, y), abs=1e-6)
    debiased = similarity.similarity(x, y, "cka", debiased=True).score
    assert debiased == pytest.approx(ref.cka_debiased_gram(x, y), abs=1e-6)


@pytest.mark.parametrize(
    "method,kw", [("cca", {}), ("svcca", {"keep": 0.99}), ("pwcca", {}), ("cka", {}), ("cka", {"debiased": True})]
)
@pytest.mark.parametrize("pair", list(PAIRS))
def test_trained_networks_are_more_similar_than_shuffled_pairs(pair, method, kw):
    """Plausible ranges: in (0, 1], and well above the same measure after breaking the example pairing."""
    paired = similarity.measure(stats(pair), method, **kw).score
    shuffled = similarity.measure(stats(pair, shuffled=True), method, **kw).score
    assert 0.0 < paired <= 1.0
    assert paired > shuffled + 0.1
    if method == "pwcca":  # PWCCA down-weights the noisy low-correlation directions
        assert paired > similarity.cca(stats(pair)).score
