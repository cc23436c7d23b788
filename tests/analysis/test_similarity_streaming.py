"""Streaming: batch-by-batch moments give the one-shot answers, stay accurate in float32, and reject bad batches."""

import analysis_reference as ref
import numpy as np
import pytest

from transfusion_jax.analysis import moments, nulls, similarity

METHODS = [
    ("cca", {}),
    ("svcca", {"keep": 6}),
    ("pwcca", {}),
    ("cka", {}),
    ("cka", {"debiased": True}),
    ("procrustes", {}),
]


def data(seed, n=600, dx=12, dy=16, offset=0.0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 5))
    x = z @ rng.standard_normal((5, dx)) + rng.standard_normal((n, dx)) + offset
    y = np.maximum(z @ rng.standard_normal((5, dy)) + rng.standard_normal((n, dy)), 0) + offset
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("method,kw", METHODS)
def test_streaming_equals_one_shot(method, kw):
    x, y = data(0)
    one_shot = similarity.similarity(x, y, method, **kw)
    streamed = similarity.similarity(x, y, method, batch_size=64, **kw)  # 10 batches, the last one partial
    assert streamed.score == pytest.approx(one_shot.score, abs=1e-6)
    if one_shot.coefficients is not None:  # single small coefficients: float32 resolution (test_similarity_measures)
        np.testing.assert_allclose(streamed.coefficients, one_shot.coefficients, atol=5e-6)


@pytest.mark.parametrize("method,kw", METHODS)
def test_large_mean_offset_and_drift_stay_accurate(method, kw):
    """Offset 1e4 (float32 spacing 1e-3) with the mean drifting between batches: naive float32 sums of squares
    (~1e8 per row) would lose the unit-scale covariance entirely; shifted Kahan sums keep it."""
    x, y = data(1, n=2048, offset=1e4)
    drift = np.repeat(np.arange(16, dtype=np.float32), 128)[:, None] * 0.5  # batches drift from the first mean
    x, y = x + drift, y - drift
    streamed = similarity.similarity(x, y, method, batch_size=128, **kw)
    if method == "cca":
        expected = ref.cca_qr(x, y)[0].mean()
    elif method == "svcca":
        expected = ref.svcca_svd(x, y, kw["keep"])
    elif method == "pwcca":
        expected = ref.pwcca_morcos(x, y)
    elif method == "procrustes":
        expected = ref.procrustes_scipy(x, y)
    else:
        expected = ref.cka_debiased_gram(ref.centred(x), ref.centred(y)) if kw.get("debiased") else ref.cka_gram(x, y)
    assert streamed.score == pytest.approx(expected, abs=1e-5)


def test_many_small_batches_do_not_accumulate_error():
    """5000 batches into float32 sums: Kahan compensation keeps the covariance at float32 resolution."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((100_000, 4)) * 3 + 5).astype(np.float32)
    y = (x + rng.standard_normal(x.shape)).astype(np.float32)
    stats = moments.finalize(moments.from_arrays(x, y, batch_size=20))
    expected = ref.centred(x).T @ ref.centred(y) / len(x)
    np.testing.assert_allclose(stats.cxy, expected, rtol=1e-6, atol=1e-6)


def test_accumulator_rejects_bad_batches():
    acc = moments.init(3, 4)
    with pytest.raises(ValueError, match="2-D"):
        moments.accumulate(acc, np.zeros((5, 3, 1)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="same examples"):
        moments.accumulate(acc, np.zeros((5, 3)), np.zeros((6, 4)))
    with pytest.raises(ValueError, match="features but the accumulator"):
        moments.accumulate(acc, np.zeros((5, 2)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="no examples"):
        moments.finalize(acc)


def test_one_large_batch_keeps_cca_at_float32_resolution():
    """One 100k-row batch of 256 + 256 features: summed in CHUNK_ROWS chunks inside the update, the canonical
    correlations stay within 5e-7 of those from float64 moments (measured 2e-7); one float32 matmul over all the
    rows, which rounds its running sum once per row, moved them by 1.6e-6."""
    rng = np.random.default_rng(0)
    n, latent = 100_000, 32
    z = rng.standard_normal((n, latent), dtype=np.float32)
    x = z @ rng.standard_normal((latent, 256), dtype=np.float32) + rng.standard_normal((n, 256), dtype=np.float32)
    y = np.maximum(z @ rng.standard_normal((latent, 256), dtype=np.float32) + rng.standard_normal((n, 256)), 0)
    x, y = x + 3.0, (y + 1.0).astype(np.float32)
    assert n > 10 * moments.CHUNK_ROWS
    streamed = similarity.cca(moments.finalize(moments.from_arrays(x, y, batch_size=n))).coefficients
    float64 = similarity.cca(nulls.moments_of(x, y)).coefficients  # the same CCA from float64 moments
    np.testing.assert_allclose(streamed, float64, atol=5e-7)
