"""The quickstart end to end at --mini size, through its command line: report sections, figures, real numbers,
and a rerun that skips everything finished."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _quickstart(workdir, child_env):
    env = {**os.environ, **child_env}
    result = subprocess.run(
        [sys.executable, "-m", "transfusion_jax.experiments.quickstart", "--workdir", str(workdir), "--mini"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def mini(tmp_path_factory, child_env):
    workdir = tmp_path_factory.mktemp("quickstart")
    return workdir, _quickstart(workdir, child_env)


def test_report_sections_and_figures(mini):
    workdir, out = mini
    assert "[1/3] pretrain on source" in out and "[3/3] fine-tune transfer seed 0" in out
    report = (workdir / "report.md").read_text()
    for heading in (
        "## Setup",
        "## Is the synthetic task learnable?",
        "## Final AUC and convergence per init",
        "## Similarity of each layer to its initialisation",
        "## Relative weight change",
        "## conv1 filters before / after fine-tuning",
    ):
        assert heading in report
    for name in (
        "auc_curves",
        "similarity_to_init",
        "weight_change",
        "filters_random_init",
        "filters_random_final",
        "filters_transfer_init",
        "filters_transfer_final",
    ):
        png = workdir / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"figures/{name}.png" in report
    # --mini has one seed, so no CCA(Rand, Rand) pair and no such section
    assert "CCA(Rand, Rand)" not in report


def test_report_numbers_come_from_the_runs(mini):
    workdir, _ = mini
    report = (workdir / "report.md").read_text()
    for init in ("random", "transfer"):
        summary = json.loads((workdir / "runs" / init / "seed_0" / "summary.json").read_text())
        final, selected = summary["test"]["final"]["auc"], summary["test"]["selected"]["auc"]
        row = next(line for line in report.splitlines() if line.startswith(f"| {init} | 1 |"))
        assert f"| {final:.3f} | {selected:.3f} |" in row  # final test AUC, test AUC at the validation-selected step
        lines = (workdir / "runs" / init / "seed_0" / "metrics.jsonl").read_text().splitlines()
        metrics = [json.loads(line) for line in lines]
        assert [m["step"] for m in metrics if m["split"] == "test"] == [10, 20]
        assert [m["step"] for m in metrics if m["split"] == "val"] == [10, 20]
    analysis = json.loads((workdir / "analysis" / "analysis.json").read_text())
    scores = [analysis["to_init"][init][0][layer] for init in ("random", "transfer") for layer in analysis["layers"]]
    assert all(0.0 <= s <= 1.0 + 1e-6 for s in scores)
    assert len(set(round(s, 6) for s in scores)) > 1  # computed, not a constant


def test_rerun_skips_finished_work(mini, child_env):
    workdir, _ = mini
    before = (workdir / "runs" / "random" / "seed_0" / "metrics.jsonl").read_text()
    out = _quickstart(workdir, child_env)
    assert out.count("skipped (finished before)") == 3
    assert (workdir / "runs" / "random" / "seed_0" / "metrics.jsonl").read_text() == before
