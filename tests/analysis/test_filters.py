"""The conv1 filter mosaic: RGB vs grayscale, per-filter normalisation (its PNG: tests/experiments/test_figures.py)."""

import numpy as np

from transfusion_jax.analysis import filters


def test_rgb_filters_show_in_colour_and_others_in_gray():
    red = np.zeros((3, 3, 3, 2))
    red[:, :, 0, :] = 1.0  # only the red input channel responds
    red[1, 1, :, :] = 0.0
    image = filters.filter_mosaic(red, ncols=2, scale=1, pad=0)
    assert np.all(image[0, 0] == [1.0, 0.0, 0.0])  # red where only red is weighted
    gray = filters.filter_mosaic(np.random.default_rng(0).normal(size=(3, 3, 16, 2)), ncols=2, scale=1, pad=0)
    assert np.all(gray[..., 0] == gray[..., 1]) and np.all(gray[..., 1] == gray[..., 2])
    assert gray.min() == 0.0 and gray.max() == 1.0  # per-filter min-max


def test_conv1_kernel_is_the_first_conv_reading_the_image():
    kernel = np.arange(5 * 5 * 3 * 4, dtype=np.float32).reshape(5, 5, 3, 4)
    variables = {
        "params": {
            "stem": {
                "Conv2d_1a_3x3": {"conv": {"kernel": kernel}},
                "Conv2d_2a_3x3": {"conv": {"kernel": np.ones((3, 3, 4, 4))}},
            },
            "head": {"kernel": np.ones((4, 2))},
        }
    }
    np.testing.assert_array_equal(filters.conv1_kernel(variables, ("stem",)), kernel)
    assert filters.conv1_kernel(variables, ("stem",)).dtype == np.float64
