"""A bank of synthetic Gabor filters for the paper's "Synthetic Gabor" hybrid init (docs/paper.md §6.4).

The paper gives no generator parameters, only a figure: 64 grayscale 7x7 filters repeated across RGB, two 4x8
panels (low vs high frequency), the orientation sweeping in 8 steps along each row and a pair of rows covering the
complementary half of the orientations. This generator reproduces that layout for any (k, k, c, n) kernel:

- filter i has frequency group `i // n_orient` and orientation `(i % n_orient) * pi / n_orient`, so with 8 columns
  and 16 orientations each frequency fills two rows (0..7pi/16, then 8pi/16..15pi/16);
- n_orient = 16 when n >= 32, else n // 2 (at least 1); the number of frequencies is ceil(n / n_orient), spaced
  geometrically from 1.4 / k to 1/3 cycle per pixel. Both ends are what a k x k kernel can show: below about
  1.4 / k a zero-mean Gabor's spectral peak stops following its nominal frequency (it stays near 1.2 / k, as the
  DC removal dominates), and above 1/3 (a 3-pixel wavelength) the envelope's spectrum aliases towards Nyquist;
- orientation `theta` is the direction of the wave vector (perpendicular to the stripes), measured from the kernel's
  column axis x towards its row axis y (rows grow downwards);
- an even (cosine) carrier under an isotropic Gaussian envelope of sigma = k / 4, made zero-mean by subtracting a
  multiple of the envelope (so no filter responds to plain brightness and each filter's spectrum peaks at its own
  frequency), then scaled to unit L2 norm.
"""

import math

import numpy as np

MAX_FREQUENCY = 1.0 / 3.0  # cycles per pixel
MIN_CYCLES_PER_KERNEL = 1.4


def bank_layout(num: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(orientation in radians, frequency in cycles/pixel) of each of the `num` filters, in bank order."""
    if num < 1 or size < 1:
        raise ValueError(f"A Gabor bank needs num >= 1 and size >= 1, got num={num}, size={size}.")
    n_orient = 16 if num >= 32 else max(1, num // 2)
    n_freq = math.ceil(num / n_orient)
    freqs = np.geomspace(min(MIN_CYCLES_PER_KERNEL / size, MAX_FREQUENCY), MAX_FREQUENCY, n_freq)
    index = np.arange(num)
    return (index % n_orient) * np.pi / n_orient, freqs[index // n_orient]


def gabor_filter(size: int, theta: float, frequency: float) -> np.ndarray:
    """One zero-mean, unit-norm, even Gabor filter of shape (size, size), float64."""
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    envelope = np.exp(-(x**2 + y**2) / (2.0 * (size / 4.0) ** 2))
    g = envelope * np.cos(2.0 * np.pi * frequency * (x * np.cos(theta) + y * np.sin(theta)))
    g = g - envelope * (g.sum() / envelope.sum())
    norm = np.linalg.norm(g)
    return g / norm if norm > 0 else g  # a 1x1 kernel has no zero-mean structure: all zeros


def gabor_bank(shape) -> np.ndarray:
    """A (k, k, c, n) float32 kernel (Flax HWIO layout) of n grayscale Gabors, each repeated across the c inputs."""
    if len(shape) != 4 or shape[0] != shape[1]:
        raise ValueError(f"Expected a square conv kernel shape (k, k, in, out), got {tuple(shape)}.")
    size, _, channels, num = shape
    thetas, freqs = bank_layout(num, size)
    filters = np.stack([gabor_filter(size, t, f) for t, f in zip(thetas, freqs)], axis=-1)  # (k, k, n)
    return np.repeat(filters[:, :, None, :], channels, axis=2).astype(np.float32)
