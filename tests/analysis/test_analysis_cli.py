"""`python -m transfusion_jax.analysis similarity A.npy B.npy ...`: JSON out, clear errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import analysis_reference as ref
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
