"""The conv1 filter grid: exact pixel size, each filter in its cell, RGB vs grayscale, from variables or kernels."""

import matplotlib.image
import numpy as np
import pytest

from transfusion_jax.analysis import filters


def expected_size(n, k, ncols, panels, scale, pad):
    """(height, width) by hand: cells of k*scale px, `pad` px gaps around cells, 3*pad between panels."""
    per_panel = -(-n // panels)
    rows = -(-per_panel // ncols)
    cell = k * scale
    panel_w = ncols * cell + (ncols + 1) * pad
    return rows * cell + (rows + 1) * pad, panels * panel_w + (panels - 1) * 3 * pad


def one_hot_filters(n, k, channels):
    """Filter i is zero except one bright pixel at a position that encodes i."""
    kernel = np.zeros((k, k, channels, n))
    for i in range(n):
        kernel[i % k, (i // k) % k, :, i] = 1.0
    return kernel


@pytest.mark.parametrize("n,k,ncols,panels", [(64, 7, 8, 2), (32, 3, 8, 1), (10, 5, 4, 2)])
def test_png_pixel_size_and_cell_contents(tmp_path, n, k, ncols, panels):
    scale, pad = 4, 2
    path = tmp_path / "grid.png"
    filters.save_filter_grid(one_hot_filters(n, k, 3), str(path), ncols=ncols, panels=panels, scale=scale, pad=pad)
    png = matplotlib.image.imread(str(path))[..., :3]
    assert png.shape[:2] == expected_size(n, k, ncols, panels, scale, pad)
    per_panel, cell = -(-n // panels), k * scale
    panel_w = expected_size(per_panel, k, ncols, 1, scale, pad)[1]
    for i in range(n):
        p, j = divmod(i, per_panel)
        r, c = divmod(j, ncols)
        top, left = pad + r * (cell + pad), p * (panel_w + 3 * pad) + pad + c * (cell + pad)
        block = png[top : top + cell, left : left + cell].mean(axis=-1)
        bright = np.argwhere(block > 0.5)  # the normalised filter: 1 at its hot pixel, 0 elsewhere
        rows, cols = set(bright[:, 0] // scale), set(bright[:, 1] // scale)
        assert rows == {i % k} and cols == {(i // k) % k}, i
        assert len(bright) == scale * scale


def test_rgb_filters_show_in_colour_and_others_in_gray():
    red = np.zeros((3, 3, 3, 2))
    red[:, :, 0, :] = 1.0  # only the red input channel responds
    red[1, 1, :, :] = 0.0
    image = filters.filter_mosaic(red, ncols=2, scale=1, pad=0)
    assert np.all(image[0, 0] == [1.0, 0.0, 0.0])  # red where only red is weighted
    gray = filters.filter_mosaic(np.random.default_rng(0).normal(size=(3, 3, 16, 2)), ncols=2, scale=1, pad=0)
    assert np.all(gray[..., 0] == gray[..., 1]) and np.all(gray[..., 1] == gray[..., 2])
    assert gray.min() == 0.0 and gray.max() == 1.0  # per-filter min-max


def test_from_variables_uses_the_first_conv(tmp_path):
    kernel = one_hot_filters(4, 5, 3)
    variables = {
        "params": {
            "stem": {
                "Conv2d_1a_3x3": {"conv": {"kernel": kernel}},
                "Conv2d_2a_3x3": {"conv": {"kernel": np.ones((3, 3, 4, 4))}},
            },
            "head": {"kernel": np.ones((4, 2))},
        }
    }
    image = filters.save_filter_grid(variables, str(tmp_path / "v.png"), blocks=("stem",), ncols=4, scale=1, pad=0)
    np.testing.assert_array_equal(image, filters.filter_mosaic(kernel, ncols=4, scale=1, pad=0))
    with pytest.raises(ValueError, match="blocks="):
        filters.save_filter_grid(variables, str(tmp_path / "w.png"))
