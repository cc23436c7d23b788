"""`python -m transfusion_jax.surgery gabor-png`: writes the bank as a PNG of the documented layout."""

import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from transfusion_jax.analysis.filters import filter_mosaic
from transfusion_jax.surgery.__main__ import main
from transfusion_jax.surgery.gabor_filters import gabor_bank

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gabor_png_in_process(tmp_path):
    out = tmp_path / "bank.png"
    main(["gabor-png", str(out), "--size", "5", "--num", "32", "--scale", "3"])
    png = matplotlib.image.imread(str(out))[..., :3]
    # Two panels of 2 rows x 8: height 2*15 + 3*2, width 2*(8*15 + 9*2) + 6.
    assert png.shape[:2] == (36, 282)
    expected = filter_mosaic(gabor_bank((5, 5, 3, 32)), ncols=8, panels=2, scale=3)
    np.testing.assert_allclose(png, expected, atol=1 / 255)


def test_gabor_png_as_module(tmp_path):
    out = tmp_path / "bank.png"
    result = subprocess.run(
        [sys.executable, "-m", "transfusion_jax.surgery", "gabor-png", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr
    assert "64 Gabor filters of 7x7" in result.stdout
    assert matplotlib.image.imread(str(out)).shape[:2] == (234, 938)


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["gabor-png", str(tmp_path / "x.png"), "--num", "0"])
    assert "--num must be >= 1" in capsys.readouterr().err
