"""The Colab notebooks: up to date with colabs/build_notebooks.py, and each runs top to bottom at MINI scale."""

import os
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLABS = os.path.join(REPO, "colabs")
NOTEBOOKS = ("1_performance.ipynb", "2_representations.ipynb", "3_convergence.ipynb", "4_beyond_the_paper.ipynb")


def test_notebooks_match_their_builder():
    result = subprocess.run(
        [sys.executable, os.path.join(COLABS, "build_notebooks.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_at_mini_scale(name, tmp_path, child_env, monkeypatch):
    nb = nbformat.read(os.path.join(COLABS, name), as_version=4)
    assert "MINI = True" in nb.cells[2].source  # the committed notebooks default to the CPU-sized run
    # Run from a scratch copy of the checkout's layout: cwd tmp_path, with the package and configs reachable.
    os.symlink(os.path.join(REPO, "configs"), tmp_path / "configs")
    for key, value in child_env.items():  # the kernel inherits this process's environment
        monkeypatch.setenv(key, value)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "each notebook shows at least one figure"
