"""The synthetic Gabor bank, measured back through each filter's 2-D spectrum (not the generator's formulas)."""

import numpy as np
import pytest

from transfusion_jax.surgery.gabor_filters import gabor_bank


def spectral_peak(image, pad=256):
    """(frequency in cycles/pixel, orientation in [0, pi)) of the largest |FFT| bin of a zero-padded image.

    Orientation is the wave vector's angle from the column axis x towards the row axis y.
    """
    spectrum = np.abs(np.fft.fft2(image, (pad, pad)))
    i, j = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    fy, fx = np.fft.fftfreq(pad)[i], np.fft.fftfreq(pad)[j]
    return float(np.hypot(fx, fy)), float(np.mod(np.arctan2(fy, fx), np.pi))


def angle_error(a, b):
    """Distance between two orientations modulo pi, in degrees."""
    return abs(np.degrees(np.angle(np.exp(2j * (a - b))) / 2))


def test_spectral_peak_reads_a_plain_grating():
    # The measuring tool itself, on a pure 64x64 grating of known frequency and orientation.
    y, x = np.mgrid[0:64, 0:64]
    f, theta = 0.25, np.pi / 3
    freq, orient = spectral_peak(np.cos(2 * np.pi * f * (x * np.cos(theta) + y * np.sin(theta))))
    assert abs(freq - f) < 0.01 and angle_error(orient, theta) < 1.0


def test_paper_bank_orientations_sweep_in_rows_and_frequencies_rise_by_panel():
    bank = gabor_bank((7, 7, 3, 64))
    measured = np.array([spectral_peak(bank[:, :, 0, i]) for i in range(64)])
    freqs, orients = measured[:, 0], measured[:, 1]
    # Shown 8 per row: each row sweeps 8 orientations pi/16 apart; rows alternate the halves [0, pi/2), [pi/2, pi).
    for i in range(64):
        row, col = divmod(i, 8)
        intended = (col + 8 * (row % 2)) * np.pi / 16
        assert angle_error(orients[i], intended) < 4.0, (i, np.degrees(orients[i]), np.degrees(intended))
    # Each pair of rows is one frequency; the four frequencies strictly rise (panel 1 low, panel 2 high).
    groups = freqs.reshape(4, 16)
    assert np.all(np.ptp(groups, axis=1) < 0.05)
    means = groups.mean(axis=1)
    assert np.all(np.diff(means) > 0.02), means
    assert means[0] < 0.22 and means[-1] > 0.3  # wavelengths of about 5 px vs 3 px
    assert means[-1] < 0.4  # clear of aliasing near Nyquist (0.5)


def test_bank_is_grayscale_repeated_zero_mean_and_unit_norm():
    bank = gabor_bank((7, 7, 3, 64))
    assert bank.shape == (7, 7, 3, 64) and bank.dtype == np.float32
    np.testing.assert_array_equal(bank[:, :, 0], bank[:, :, 1])
    np.testing.assert_array_equal(bank[:, :, 0], bank[:, :, 2])
    gray = bank[:, :, 0].astype(np.float64)
    np.testing.assert_allclose(gray.sum(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(gray.reshape(49, 64), axis=0), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape", [(5, 5, 3, 64), (3, 3, 3, 32), (7, 7, 1, 4), (11, 11, 3, 10), (1, 1, 3, 2)])
def test_any_kernel_shape(shape):
    bank = gabor_bank(shape)
    assert bank.shape == shape and np.all(np.isfinite(bank))


def test_orientations_in_larger_kernels_for_odd_counts():
    # 10 filters: 5 orientations pi/5 apart, 2 frequencies; a larger kernel resolves them sharply.
    bank = gabor_bank((11, 11, 3, 10))
    for i in range(10):
        _, orient = spectral_peak(bank[:, :, 0, i])
        assert angle_error(orient, (i % 5) * np.pi / 5) < 3.0


@pytest.mark.parametrize("shape", [(7, 5, 3, 64), (7, 7, 64), (7, 7, 3, 0)])
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError, match="kernel|num"):
        gabor_bank(shape)
