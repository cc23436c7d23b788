"""`python -m transfusion_jax.analysis {similarity,compare} ...`: strict JSON out, progress on stderr, clear errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import analysis_reference as ref
import jax
import numpy as np
import pytest

from transfusion_jax.analysis import __main__ as cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 4))
    x = (z @ rng.standard_normal((4, 8)) + rng.standard_normal((300, 8))).astype(np.float32)
    y = (z @ rng.standard_normal((4, 6)) + rng.standard_normal((300, 6))).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", y)
    return tmp_path, x, y


def run(args, capsys):
    code = cli.main(["similarity", *map(str, args)])
    return code, json.loads(capsys.readouterr().out)


def test_cca_prints_score_and_coefficients(files, capsys):
    tmp, x, y = files
    code, out = run([tmp / "a.npy", tmp / "b.npy", "--method", "cca", "--batch-size", "64"], capsys)
    assert code == 0 and out["method"] == "cca" and out["n_examples"] == 300
    np.testing.assert_allclose(out["coefficients"], ref.cca_qr(x, y)[0], atol=1e-6)
    assert out["score"] == pytest.approx(np.mean(out["coefficients"]))


def test_svcca_keep_and_cka(files, capsys):
    tmp, x, y = files
    _, out = run([tmp / "a.npy", tmp / "b.npy", "--method", "svcca", "--keep", "3"], capsys)
    assert out["score"] == pytest.approx(ref.svcca_svd(x, y, 3), abs=1e-6) and len(out["coefficients"]) == 3
    _, out = run([tmp / "a.npy", tmp / "b.npy", "--method", "cka", "--debiased"], capsys)
    assert out["score"] == pytest.approx(ref.cka_debiased_gram(x, y), abs=1e-6) and "coefficients" not in out


def test_procrustes_distance_is_its_closed_form(files, capsys):
    """2 - 2 ||X^T Y||_* of the centred activations scaled to unit Frobenius norm, by NumPy's SVD."""
    tmp, x, y = files
    code, out = run([tmp / "a.npy", tmp / "b.npy", "--method", "procrustes"], capsys)
    xc, yc = (m.astype(np.float64) - m.mean(axis=0, dtype=np.float64) for m in (x, y))
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    expected = 2 - 2 * np.linalg.svd(xc.T @ yc, compute_uv=False).sum()
    assert code == 0 and out["method"] == "procrustes" and out["score"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "make,args,message",
    [
        (None, ["missing.npy", "b.npy"], "not found: .*missing.npy"),
        (lambda x, y: np.save("c.npy", x[:100]), ["a.npy", "c.npy"], "300 examples but .*c.npy has 100"),
        (lambda x, y: np.save("c.npy", x[:, :, None]), ["a.npy", "c.npy"], "expected 2-D"),
        (lambda x, y: np.save("c.npy", x[:5]), ["c.npy", "c.npy", "--method", "cca"], "more examples than features"),
        (None, ["a.npy", "b.npy", "--method", "cka", "--keep", "3"], "--keep does not apply"),
        (None, ["a.npy", "b.npy", "--keep", "lots"], "--keep must be"),
    ],
)
def test_bad_input_is_a_clear_error(files, capsys, monkeypatch, make, args, message):
    tmp, x, y = files
    monkeypatch.chdir(tmp)
    if make:
        make(x, y)
    with pytest.raises(SystemExit) as exc:
        cli.main(["similarity", *args])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_module_entry_point(files):
    tmp, _, _ = files
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfusion_jax.analysis",
            "similarity",
            str(tmp / "a.npy"),
            str(tmp / "b.npy"),
            "--method",
            "pwcca",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(proc.stdout)
    assert out["method"] == "pwcca" and abs(sum(out["weights"]) - 1) < 1e-9


def strict_loads(text):
    """json.loads that rejects the bare NaN / Infinity Python's json writes by default."""

    def reject(constant):
        raise ValueError(f"not standard JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def test_output_is_strict_json_and_a_bar_shows_progress(files, capsys):
    """CKA of a constant layer is 0/0: written as null, never as a bare NaN; a run of several batches shows a
    progress bar on stderr, and stdout holds the JSON alone."""
    tmp, x, _ = files
    np.save(tmp / "constant.npy", np.ones_like(x))
    code = cli.main(["similarity", str(tmp / "constant.npy"), str(tmp / "b.npy"), "--method", "cka"])
    captured = capsys.readouterr()
    assert code == 0 and strict_loads(captured.out)["score"] is None
    cli.main(["similarity", str(tmp / "a.npy"), str(tmp / "b.npy"), "--method", "cca", "--batch-size", "64"])
    captured = capsys.readouterr()
    assert strict_loads(captured.out)["n_examples"] == 300
    assert "moments" in captured.err and "5/5" in captured.err  # 300 rows in batches of 64


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two CBRs (different seeds) as a converted checkpoint and a training workdir, and uint8 images."""
    from transfusion_jax import models
    from transfusion_jax.train import rundir
    from transfusion_jax.train.export import export_pretrained

    tmp = tmp_path_factory.mktemp("compare")
    module = models.get_model("cbr_small", 2, widths=(4, 6))
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    init = jax.jit(lambda key: module.init(key, images[:1].astype(np.float32), train=False))
    variables = [jax.tree.map(np.asarray, init(jax.random.key(seed))) for seed in range(2)]
    (tmp / "run").mkdir()
    paths = [tmp / "a.npz", tmp / "run" / rundir.FINAL]
    for path, v in zip(paths, variables):
        export_pretrained(
            str(path), v, architecture="cbr_small", model_overrides={"widths": (4, 6)}, num_classes=2,
            normalization="torchvision", source="test",
        )  # fmt: skip
    np.save(tmp / "images.npy", images)
    return tmp, module, variables, images


def test_compare_two_checkpoints_block_by_block(checkpoints, capsys):
    """Every block's score equals linear CKA of the two models' features computed here by hand (torchvision
    normalisation, every spatial position a datapoint) through n x n Gram matrices; a run's workdir stands for its
    final weights; the batches show a bar."""
    from transfusion_jax.data import preprocess

    tmp, module, variables, images = checkpoints
    args = ["compare", str(tmp / "a.npz"), str(tmp / "run"), "--images", str(tmp / "images.npy"), "--method", "cka"]
    code = cli.main([*args, "--positions", "all", "--batch-size", "4", "--out", str(tmp / "out" / "cka.json")])
    captured = capsys.readouterr()
    out = strict_loads(captured.out)
    assert code == 0 and out == strict_loads((tmp / "out" / "cka.json").read_text())
    assert list(out["layers"]) == ["layer1", "layer2"] and out["num_images"] == 10
    assert "images" in captured.err and "3/3" in captured.err  # 10 images in batches of 4
    x = preprocess.get_normalization("torchvision")(images)
    features = [jax.jit(lambda v: module.apply(v, x, train=False)[1])(v) for v in variables]
    for layer, result in out["layers"].items():
        a, b = (np.asarray(f[layer]).reshape(-1, f[layer].shape[-1]) for f in features)
        assert result["n_examples"] == len(a)
        assert result["score"] == pytest.approx(ref.cka_gram(a, b), abs=1e-5)


def test_compare_keeps_every_layer_it_can_measure(checkpoints, capsys):
    """CCA of a layer with fewer datapoints than features fails for that layer alone: named on stderr, exit 1, the
    other layers' scores still written."""
    tmp, _, _, _ = checkpoints
    code = cli.main(
        ["compare", str(tmp / "a.npz"), str(tmp / "run"), "--images", str(tmp / "images.npy"), "--method", "cca",
         "--mode", "mean", "--max-images", "5", "--layers", "layer1,layer2"]
    )  # fmt: skip
    captured = capsys.readouterr()
    out = strict_loads(captured.out)
    assert code == 1 and out["num_images"] == 5
    assert "more examples than features" in out["layers"]["layer2"]["error"]  # 5 images, 6 channels
    assert 0 <= out["layers"]["layer1"]["score"] <= 1  # 5 images, 4 channels
    assert "layer layer2" in captured.err


def test_compare_bad_input_is_a_clear_error(checkpoints, capsys):
    tmp, _, _, _ = checkpoints
    np.save(tmp / "flat.npy", np.zeros((4, 16, 16), np.uint8))
    for args, message in [
        ([str(tmp / "missing.npz"), str(tmp / "run"), "--images", str(tmp / "images.npy")], "No such file"),
        ([str(tmp / "a.npz"), str(tmp / "run"), "--images", str(tmp / "flat.npy")], r"expected images \[N, H, W, 3\]"),
        ([str(tmp / "a.npz"), str(tmp / "run"), "--images", str(tmp / "images.npy"), "--layers", "x"], "not found"),
    ]:
        with pytest.raises(SystemExit) as exc:
            cli.main(["compare", *args])
        assert exc.value.code == 2 and re.search(message, capsys.readouterr().err)
