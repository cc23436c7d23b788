"""Fig. 4 (init vs final similarity, r and R²) and the fig2 / fig3 / fig4 / weights subcommands over real runs.

The runs are real trainer workdirs (generated data, a 3-step pretrain, 4-step fine-tunes from random seeds 0 and 1
and from the pretrained weights), made once per session.
"""

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.image import imread
from scipy import stats

from transfusion_jax.analysis import Reduction, paper
from transfusion_jax.analysis import __main__ as cli
from transfusion_jax.models import get_model


@functools.cache
def cbr(size=32):
    model = get_model("cbr_small", 2, widths=(4, 8, 8, 8))
    init = jax.jit(lambda key: model.init(key, np.zeros((1, size, size, 3), np.float32), train=False))
    return functools.partial(model.apply, train=False), init


@functools.partial(jax.jit, static_argnums=(2,))
def perturbed(variables, seed, scale):
    """A stand-in for a trained network: the init plus seeded noise on every parameter (jitted: op by op is slow)."""
    leaves, tree = jax.tree_util.tree_flatten(variables["params"])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [w + scale * jax.random.normal(k, w.shape) * (jnp.std(w) + 1e-3) for w, k in zip(leaves, keys)]
    return {**variables, "params": jax.tree_util.tree_unflatten(tree, noisy)}


def test_init_vs_final_correlation_points_r_and_r2(tmp_path):
    apply_fn, init = cbr()
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((12, 32, 32, 3)).astype(np.float32) for _ in range(2)]
    inits = [init(jax.random.key(s)) for s in range(3)]
    finals = [perturbed(v, 10 + i, 0.5) for i, v in enumerate(inits)]
    runs = list(zip(inits, finals))
    pairs = [(runs[0], runs[1]), (runs[0], runs[2]), (runs[2], runs[2])]
    layers = ["layer1", "layer3"]
    out = tmp_path / "fig4.json"
    result = paper.init_vs_final_correlation(
        apply_fn, pairs, batches, layers, method="cka", reduction=Reduction(mode="mean"), out=out
    )
    assert json.loads(out.read_text()) == result and result["num_pairs"] == 3
    for name in layers:
        layer = result["per_layer"][name]
        points = np.asarray(layer["points"], np.float64)
        assert points.shape == (3, 2) and np.all((points > 0) & (points <= 1 + 1e-6))
        assert np.all(points[:2] < 0.999)  # different networks
        np.testing.assert_allclose(points[2], [1.0, 1.0], atol=1e-5)  # identical networks, both ends
        fit = stats.linregress(points[:, 0], points[:, 1])
        assert layer["r"] == pytest.approx(np.corrcoef(points.T)[0, 1], abs=1e-12)
        assert layer["r2"] == pytest.approx(fit.rvalue**2, abs=1e-12)


def test_r_undefined_is_nan_with_a_reason():
    two = paper._pearson(np.array([[0.2, 0.3], [0.4, 0.9]]))
    assert math.isnan(two["r"]) and math.isnan(two["r2"]) and "need >= 3" in two["note"]
    assert "not finite" in paper._pearson(np.array([[0.2, 0.3], [0.4, np.nan], [0.5, 0.6]]))["note"]
    flat = paper._pearson(np.array([[0.5, 0.1], [0.5, 0.7], [0.5, 0.9]]))
    assert math.isnan(flat["r"]) and "no variation" in flat["note"]
    assert paper._pearson(np.array([[0.1, 0.3], [0.2, 0.5], [0.3, 0.7]]))["r"] == pytest.approx(1.0)


# ---------------------------------------------------------------- command line on real runs


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Three finished workdirs of the real trainer: random seed 0, random seed 1, transfer seed 0."""
    from transfusion_jax.experiments import quickstart, runs

    root = str(tmp_path_factory.mktemp("analysis_runs"))
    s = dataclasses.replace(
        quickstart.MINI,
        source_train=32,
        source_test=8,
        target_train=48,
        target_test=32,
        pretrain_steps=3,
        finetune_steps=4,
        eval_every=4,
        batch_size=16,
    )
    paths = quickstart.make_data(root, s)
    pretrained = f"{root}/runs/pretrain/pretrained.npz"
    runs.run(quickstart.pretrain_config(paths, s), f"{root}/runs/pretrain")
    dirs = {}
    for init, seed in (("random", 0), ("random", 1), ("transfer", 0)):
        dirs[f"{init}{seed}"] = quickstart.run_dir(root, init, seed)
        runs.run(quickstart.finetune_config(paths, s, init, seed, pretrained), dirs[f"{init}{seed}"])
    return dirs


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
    from transfusion_jax.analysis import weights
    from transfusion_jax.experiments import run_weights

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
        (partial, ("partial is not a finished training workdir: missing pretrained.npz, summary.json")),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(["weights", "--runs", trained["random0"], str(bad), "--out", str(tmp_path / "o")])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["fig4", "--runs", trained["random0"], "--out", str(tmp_path / "o")])
    assert "at least two --runs" in capsys.readouterr().err
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
