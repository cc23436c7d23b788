"""Aggregation arithmetic and paper-number placement, on fabricated sweep workdirs (summary.json files only)."""

import json
import os
import statistics

import pytest

from transfusion_jax.data.tasks import CHEXPERT_PATHOLOGIES
from transfusion_jax.experiments import __main__ as cli
from transfusion_jax.experiments import paper_numbers, report, runs
from transfusion_jax.train import rundir


def _write(root, group, model, init, seed, auc, steps=None, extra=None, selected_auc=None, relative_steps=50):
    """A finished run's summary.json as the trainer writes it (test AUC at the final and the selected step)."""
    workdir = runs.RunSpec(group, model, init, seed).workdir(str(root))
    os.makedirs(workdir)
    final = {"step": 100, "auc": auc, **(extra or {})}
    selected = {"step": 90, "auc": auc + 0.001 if selected_auc is None else selected_auc, **(extra or {})}
    summary = {
        "final_step": 100,
        "eval_every_steps": 10,
        "selected_step": 90,
        "auc_threshold": 0.91,
        "relative_threshold": 0.95,
        "val": {"final": {"step": 100, "auc": 0.9}, "steps_to_relative_threshold": relative_steps},
        "test": {"final": final, "selected": selected, "steps_to_threshold": steps},
    }
    with open(os.path.join(workdir, rundir.SUMMARY), "w") as f:
        json.dump(summary, f)
    return workdir


def test_mean_and_sample_std_match_statistics_module(tmp_path):
    aucs = [0.9612, 0.9655, 0.9571]
    for seed, auc in enumerate(aucs):
        _write(tmp_path, "retina", "cbr_small", "random", seed, auc)
    _write(tmp_path, "retina", "cbr_small", "transfer", 0, 0.97)
    rows = report.aggregate(report.collect(str(tmp_path)))["retina"]
    row = next(r for r in rows if r.init == "random")
    assert row.n == 3
    assert row.auc_mean == pytest.approx(statistics.mean(aucs), abs=1e-12)
    assert row.auc_std == pytest.approx(statistics.stdev(aucs), abs=1e-12)  # sample std (n - 1)
    single = next(r for r in rows if r.init == "transfer")
    assert single.auc_std is None  # no std from one run
    text = report.render(str(tmp_path))
    expected = f"{100 * statistics.mean(aucs):.2f} ± {100 * statistics.stdev(aucs):.2f}"
    assert expected in text
    selected = [a + 0.001 for a in aucs]  # the test AUC at the validation-selected step, its own column
    assert f"{100 * statistics.mean(selected):.2f} ± {100 * statistics.stdev(selected):.2f}" in text
    assert not [line for line in text.splitlines() if line.startswith("|") and "best" in line.lower()]
    # CBR-Small's Table 1 numbers are recollections: shown, with their tag and a '?'
    assert paper_numbers.TABLE1[("cbr_small", "random")].format(1) + " [S]" in text
    assert "(?)" in text


def test_differs_marking(tmp_path):
    _write(tmp_path, "retina", "resnet50", "random", 0, 0.80)  # paper 96.4: far off
    _write(tmp_path, "retina", "resnet50", "transfer", 0, 0.9672)  # paper 96.7: within 1 point
    lines = report.render(str(tmp_path)).splitlines()
    random_line = next(line for line in lines if "| resnet50 | random |" in line)
    transfer_line = next(line for line in lines if "| resnet50 | transfer |" in line)
    assert "96.4 ± 0.05 [S]" in random_line and "**differs**" in random_line
    assert "96.7 ± 0.04 [S]" in transfer_line and "**differs**" not in transfer_line


def test_convergence_table_averages_reached_runs_only(tmp_path):
    for seed, steps in enumerate([7007, 9009, None]):
        _write(tmp_path, "hybrid", "resnet50", "transfer", seed, 0.95, steps)
    _write(tmp_path, "hybrid", "resnet50", "transfusion:conv1", 0, 0.95, 30030)
    rows = report.aggregate(report.collect(str(tmp_path)))["hybrid"]
    row = next(r for r in rows if r.init == "transfer")
    assert (row.reached, row.n) == (2, 3)
    assert row.steps_mean == pytest.approx(8008.0)
    text = report.render(str(tmp_path))
    line = next(line for line in text.splitlines() if "| resnet50 | transfer |" in line)
    assert "8,008 ± 1,416 (2/3 reached)" in line  # stdev(7007, 9009) = 1416.0
    assert "8,008 [P-fig]" in line and "**differs**" not in line
    transfusion = next(line for line in text.splitlines() if "transfusion:conv1" in line)
    assert "30,030" in transfusion and "—" in transfusion  # no paper number for per-block transfusion


def test_chexpert_table_per_pathology(tmp_path):
    per_class = {f"auc/{p}": 0.80 + 0.01 * i for i, p in enumerate(CHEXPERT_PATHOLOGIES)}
    _write(tmp_path, "chexpert", "resnet50", "random", 0, 0.82, extra=per_class)
    text = report.render(str(tmp_path))
    line = next(line for line in text.splitlines() if "| resnet50 | random |" in line)
    assert "80.00 / 79.52" in line and "83.00 / 88.34 **differs**" in line


def test_unfinished_runs_are_left_out_and_empty_root_is_an_error(tmp_path, capsys):
    os.makedirs(runs.RunSpec("retina", "cbr_small", "random", 0).workdir(str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="No finished runs"):
        report.render(str(tmp_path))
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "No finished runs" in capsys.readouterr().err
