"""The study's diagnostics against closed forms: He std, spectral peakedness, BN moments (its frozen-feature probe
is analysis.probes', tested in test_probes.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transfusion_jax.analysis import diagnostics
from transfusion_jax.models.layers import HE_FAN_OUT
from transfusion_jax.surgery import gabor_filters


def _dft_power(filter2d: np.ndarray) -> np.ndarray:
    """|DFT|^2 by the defining sum (no FFT): an independent reference for spectral_peakedness."""
    kh, kw = filter2d.shape
    u = np.exp(-2j * np.pi * np.outer(np.arange(kh), np.arange(kh)) / kh)
    v = np.exp(-2j * np.pi * np.outer(np.arange(kw), np.arange(kw)) / kw)
    return np.abs(u @ filter2d @ v.T) ** 2


def test_he_std_is_the_models_initialiser():
    shape = (7, 7, 16, 64)
    assert diagnostics.he_fan_out_std(shape) == pytest.approx(np.sqrt(2 / (7 * 7 * 64)), rel=1e-12)
    kernel = np.asarray(HE_FAN_OUT(jax.random.key(0), shape, jnp.float32))
    ratio = diagnostics.kernel_std_ratios({"layer1": {"conv": {"kernel": kernel}}})["layer1/conv/kernel"]
    # 50k iid draws: the sample std is within ~0.3 % of the true one (3 standard errors ~ 1 %).
    assert ratio == pytest.approx(1.0, abs=0.01)


def test_std_ratio_closed_form():
    shape = (5, 5, 3, 8)
    he = np.sqrt(2 / (5 * 5 * 8))
    signs = np.where(np.arange(np.prod(shape)) % 2 == 0, 1.0, -1.0).reshape(shape)  # mean 0, population std 1
    params = {"layer1": {"conv": {"kernel": 0.3 * signs}}, "head": {"kernel": np.ones((8, 2)), "bias": np.zeros(2)}}
    ratios = diagnostics.kernel_std_ratios(params)
    assert list(ratios) == ["layer1/conv/kernel"]  # dense kernels are not conv kernels
    assert ratios["layer1/conv/kernel"] == pytest.approx(0.3 / he, rel=1e-12)
    with pytest.raises(ValueError, match="No 4-D conv kernels"):
        diagnostics.kernel_std_ratios({"head": {"kernel": np.ones((8, 2))}})


def test_batchnorm_moments():
    params = {
        "layer1": {"conv": {"kernel": np.zeros((3, 3, 1, 2))}, "bn": {"scale": np.array([1.0, 3.0]), "bias": [-1, 1]}},
        "head": {"kernel": np.zeros((2, 2)), "bias": np.array([5.0, 5.0])},
    }
    moments = diagnostics.batchnorm_moments(params)
    assert moments == {"layer1/bn": {"scale_mean": 2.0, "scale_std": 1.0, "bias_mean": 0.0, "bias_std": 1.0}}


def _kernel(*filters2d):
    """(k, k, 1, n) from n single-channel filters."""
    return np.stack(filters2d, axis=-1)[:, :, None, :]


def test_peakedness_closed_forms():
    k = 7
    delta = np.zeros((k, k))
    delta[3, 3] = 1.0  # flat spectrum: every bin holds 1 / 49 of the power
    constant = np.ones((k, k))  # all power at DC
    x = np.arange(k)
    cosine = np.cos(2 * np.pi * 2 * x / k)[None, :].repeat(k, 0)  # all power in the two bins (0, +-2)
    kernel = _kernel(delta, constant, cosine)
    chex.assert_trees_all_close(diagnostics.spectral_peakedness(kernel, top=1), np.array([1 / 49, 1.0, 0.5]))
    chex.assert_trees_all_close(diagnostics.spectral_peakedness(kernel, top=2), np.array([2 / 49, 1.0, 1.0]))
    chex.assert_trees_all_close(diagnostics.spectral_peakedness(kernel, top=49), np.ones(3))
    zero = diagnostics.spectral_peakedness(_kernel(np.zeros((k, k))), top=4)
    assert np.isnan(zero[0])
    with pytest.raises(ValueError, match="top must be in 1..49"):
        diagnostics.spectral_peakedness(kernel, top=50)


def test_peakedness_matches_the_defining_dft_and_sums_channels():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(7, 7, 3, 5))
    got = diagnostics.spectral_peakedness(kernel, top=4)
    for i in range(5):
        power = sum(_dft_power(kernel[:, :, c, i]) for c in range(3)).ravel()
        assert got[i] == pytest.approx(np.sort(power)[-4:].sum() / power.sum(), rel=1e-10)
    # |DFT| ignores circular shifts and overall scale
    shifted = 2.5 * np.roll(kernel, (2, 3), axis=(0, 1))
    chex.assert_trees_all_close(diagnostics.spectral_peakedness(shifted, top=4), got, rtol=1e-10)


def test_gabor_bank_is_far_more_structured_than_random_filters():
    shape = (7, 7, 3, 64)
    gabor = diagnostics.conv1_structure(gabor_filters.gabor_bank(shape))
    random = diagnostics.conv1_structure(np.asarray(HE_FAN_OUT(jax.random.key(1), shape, jnp.float32)))
    assert gabor["floor"] == random["floor"] == 4 / 49
    assert len(random["per_filter"]) == 64
    # white noise: the top 4 of 49 exponential-ish bin powers hold ~20 %; a Gabor concentrates most of its power
    assert 0.12 < random["mean"] < 0.3 < 0.6 < gabor["mean"]
