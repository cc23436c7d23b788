"""The paper's figures from real runs (experiments.figures) through `python -m transfusion_jax.experiments`, the
conv1 filter grid, and the Gabor bank picture.

The runs are real trainer workdirs, made once per session (the `trained` fixture of conftest.py).
"""

import json
import math
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from matplotlib.image import imread

from transfusion_jax import pretrained
from transfusion_jax.analysis import weights
from transfusion_jax.analysis.filters import filter_mosaic
from transfusion_jax.experiments import __main__ as cli
from transfusion_jax.experiments import figures, run_weights
from transfusion_jax.surgery.gabor_filters import gabor_bank

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


SMALL = ["--max-images", "16", "--batch-size", "16"]


def outputs(out, name):
    png = imread(str(out / f"{name}.png"))
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.ndim == 3 and png.shape[0] > 100
    return json.loads((out / f"{name}.json").read_text())


def in_unit(x):
    return math.isfinite(x) and -1e-6 <= x <= 1 + 1e-6


def test_fig2_rand_imnet_and_rand_rand(trained, tmp_path):
    assert (
        cli.main(
            [
                "fig2",
                "--rand",
                trained["random0"],
                trained["random1"],
                "--imnet",
                trained["transfer0"],
                "--layers",
                "layer3,layer4",
                "--out",
                str(tmp_path),
                *SMALL,
            ]
        )
        == 0
    )
    result = outputs(tmp_path, "fig2")
    assert result["layers"] == ["layer3", "layer4"] and result["num_images"] == 16
    assert [p["runs"] for p in result["rand_imnet"]] == [
        [trained["random0"], trained["transfer0"]],
        [trained["random1"], trained["transfer0"]],
    ]
    assert [p["runs"] for p in result["rand_rand"]] == [[trained["random0"], trained["random1"]]]
    for point in result["rand_imnet"] + result["rand_rand"]:
        assert set(point["per_layer"]) == {"layer3", "layer4"} and all(map(in_unit, point["per_layer"].values()))
        assert point["mean"] == pytest.approx(np.mean(list(point["per_layer"].values())))


def test_fig3_similarity_to_own_init(trained, tmp_path):
    assert cli.main(["fig3", "--runs", trained["transfer0"], "--out", str(tmp_path), *SMALL]) == 0
    result = outputs(tmp_path, "fig3")
    assert list(result["runs"]) == [trained["transfer0"]]
    for run in result["runs"].values():
        assert list(run["similarity"]) == ["layer1", "layer2", "layer3", "layer4"]
        assert all(map(in_unit, run["similarity"].values()))
        changes = run["relative_weight_change"]
        assert all(math.isfinite(v) and v > 0 for k, v in changes.items() if k.startswith("layer"))


def test_fig4_pairs_of_runs(trained, tmp_path):
    runs = [trained["random0"], trained["random1"], trained["transfer0"]]
    assert cli.main(["fig4", "--runs", *runs, "--out", str(tmp_path), *SMALL]) == 0
    result = outputs(tmp_path, "fig4")
    assert result["pairs"] == [[runs[0], runs[1]], [runs[0], runs[2]], [runs[1], runs[2]]]
    for layer in result["per_layer"].values():
        points = np.asarray(layer["points"])
        assert points.shape == (3, 2) and all(map(in_unit, points.ravel()))
        assert layer["r2"] == pytest.approx(np.corrcoef(points.T)[0, 1] ** 2, abs=1e-9)


def test_weights_relative_change_per_block(trained, tmp_path):
    assert cli.main(["weights", "--runs", trained["random0"], trained["random1"], "--out", str(tmp_path)]) == 0
    result = outputs(tmp_path, "weights")
    run = run_weights.RunWeights(trained["random1"])
    expected = weights.relative_weight_change(run.initial()["params"], run.final()["params"])
    assert result["runs"][trained["random1"]] == pytest.approx(expected)
    assert set(expected) >= {"layer1", "layer4"} and all(0 < v < 10 for v in expected.values())


def test_unfinished_or_missing_run_names_the_path(trained, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    for bad, message in (
        (tmp_path / "nope", "nope is not a directory"),
        (partial, "partial is not a finished training workdir: missing init.npz, pretrained.npz, summary.json"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(["weights", "--runs", trained["random0"], str(bad), "--out", str(tmp_path / "o")])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["fig4", "--runs", trained["random0"], "--out", str(tmp_path / "o")])
    assert "at least two runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(
            [
                "fig2",
                "--rand",
                trained["random0"],
                "--imnet",
                trained["transfer0"],
                "--layers",
                "layer9",
                "--out",
                str(tmp_path / "o"),
                *SMALL,
            ]
        )
    assert "'layer9'" in capsys.readouterr().err


def test_filters_of_each_run_at_init_and_after_training(trained, tmp_path):
    assert cli.main(["filters", "--runs", trained["transfer0"], "--out", str(tmp_path)]) == 0
    run = run_weights.RunWeights(trained["transfer0"])
    for when, variables in (("init", run.initial()), ("final", run.final())):
        png = matplotlib.image.imread(str(tmp_path / f"filters_0_{when}.png"))[..., :3]
        expected = filter_mosaic(figures.filters.conv1_kernel(variables, run.blocks), ncols=8, scale=8)
        np.testing.assert_allclose(png, expected, atol=1 / 255)


def test_initial_weights_come_from_the_run_not_from_its_config(trained):
    """init.npz is what the analyses read: a run whose pretrained checkpoint is gone still has its init."""
    run = run_weights.RunWeights(trained["transfer0"])
    os.rename(run.config.pretrained, run.config.pretrained + ".moved")
    try:
        initial = run_weights.RunWeights(trained["transfer0"]).initial()
    finally:
        os.rename(run.config.pretrained + ".moved", run.config.pretrained)
    source = pretrained.load(run.config.pretrained)[0]
    np.testing.assert_array_equal(
        initial["params"]["layer1"]["conv"]["kernel"], source["params"]["layer1"]["conv"]["kernel"]
    )


def test_legend_labels_are_the_shortest_distinct_path_suffixes(tmp_path):
    same_group = [str(tmp_path / "g1/m/random/seed_0"), str(tmp_path / "g1/m/random/seed_1")]
    assert list(figures.labels(same_group).values()) == ["m/random/seed_0", "m/random/seed_1"]
    two_groups = [str(tmp_path / "lp/m/transfer/seed_0"), str(tmp_path / "ft/m/transfer/seed_0")]
    assert list(figures.labels(two_groups).values()) == ["lp/m/transfer/seed_0", "ft/m/transfer/seed_0"]


# ---------------------------------------------------------------- filter grids


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
    figures.filter_grid(one_hot_filters(n, k, 3), str(path), ncols=ncols, panels=panels, scale=scale, pad=pad)
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


def test_grid_from_variables_uses_the_first_conv(tmp_path):
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
    image = figures.filter_grid(variables, str(tmp_path / "v.png"), blocks=("stem",), ncols=4, scale=1, pad=0)
    np.testing.assert_array_equal(image, filter_mosaic(kernel, ncols=4, scale=1, pad=0))
    with pytest.raises(ValueError, match="blocks="):
        figures.filter_grid(variables, str(tmp_path / "w.png"))


# ---------------------------------------------------------------- the Gabor bank picture


def test_gabor_png_in_process(tmp_path):
    out = tmp_path / "bank.png"
    assert cli.main(["gabor-png", str(out), "--size", "5", "--num", "32", "--scale", "3"]) == 0
    png = matplotlib.image.imread(str(out))[..., :3]
    # Two panels of 2 rows x 8: height 2*15 + 3*2, width 2*(8*15 + 9*2) + 6.
    assert png.shape[:2] == (36, 282)
    expected = filter_mosaic(gabor_bank((5, 5, 3, 32)), ncols=8, panels=2, scale=3)
    np.testing.assert_allclose(png, expected, atol=1 / 255)


def test_gabor_png_as_module(tmp_path):
    out = tmp_path / "bank.png"
    result = subprocess.run(
        [sys.executable, "-m", "transfusion_jax.experiments", "gabor-png", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr
    assert "64 Gabor filters of 7x7" in result.stdout
    assert matplotlib.image.imread(str(out)).shape[:2] == (234, 938)


def test_gabor_png_bad_arguments_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["gabor-png", str(tmp_path / "x.png"), "--num", "0"])
    assert "--num must be >= 1" in capsys.readouterr().err


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Captures the Figure each picture function saves (and still writes its PNG)."""
    figs = []
    save = figures.save_figure

    def keep(fig, path):
        figs.append(fig)
        return save(fig, path)

    monkeypatch.setattr(figures, "save_figure", keep)
    return figs


def _markers(ax, marker):
    return [line for line in ax.get_lines() if line.get_marker() == marker]


def test_forest_plot_draws_open_sides_seeds_boundaries_and_verdicts(drawn, tmp_path):
    rows = [
        dict(label="C1 small", measure="test AUC", estimate=0.001, low=-0.005, high=0.007, boundaries=(-0.02, 0.02),
             band=(-0.02, 0.02), per_seed=[0.0, 0.002, -0.001], verdict="supported"),
        dict(label="C5 large", measure="ln steps", estimate=0.5, low=0.2, high=float("inf"), boundaries=(0.0, 0.22),
             band=None, per_seed=[(0.1, 0.4), (0.3, float("inf"))], verdict="supported"),
    ]  # fmt: skip
    path = figures.forest_plot(rows, str(tmp_path / "forest.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    auc, steps = drawn[0].axes
    assert len(_markers(auc, ".")) == 3 and not _markers(auc, ">")  # three seeds' dots, no open side
    assert len(_markers(steps, ">")) == 1 and not _markers(steps, "<")  # the open upper end is an arrow
    assert steps.get_xlim()[1] < 10  # ... at the panel's edge, not at infinity
    assert [t.get_text() for t in auc.texts] == ["supported"]


def test_seed_curves_one_line_per_seed_and_arm(drawn, tmp_path):
    curves = {arm: {seed: {1: 0.6, 10: 0.85, 100: 0.93} for seed in range(3)} for arm in ("random", "transfer")}
    figures.seed_curves(curves, str(tmp_path / "curves.png"), threshold=0.9)
    for ax in drawn[0].axes:
        assert len([line for line in ax.get_lines() if len(line.get_xdata()) == 3]) == 3
        assert ax.get_xscale() == "log"


def test_layer_intervals_shade_each_series_null(drawn, tmp_path):
    series = {"random": {"layer1": (0.9, 0.85, 0.95), "layer2": (0.7, 0.6, 0.8)}}
    nulls = {"random": {"layer1": (0.3, 0.25, 0.35), "layer2": (0.2, 0.1, 0.3)}}
    figures.layer_intervals(series, str(tmp_path / "layers.png"), "svcca", nulls)
    (ax,) = drawn[0].axes
    assert len(ax.collections) >= 3  # the intervals and one null band per layer


def test_violins_draw_every_value(drawn, tmp_path):
    figures.violins({"random": [0.93, 0.94, 0.95], "transfer": [0.94, 0.95]}, str(tmp_path / "v.png"), "AUC")
    (ax,) = drawn[0].axes
    assert sum(len(line.get_xdata()) for line in _markers(ax, "o")) == 5
