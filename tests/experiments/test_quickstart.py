"""The quickstart (the miniature study) end to end at --mini size through its command line: the report's gates and
verdicts, numbers that come from the runs (checked against independent computations), the null beside every
similarity, the data splits, a rerun that skips everything finished, and a workdir that refuses another design."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from transfusion_jax.experiments import study, study_report
from transfusion_jax.experiments.study_verdicts import NOT_RUN, RunKey

REPO = study.CONFIG_DIR.rsplit("/", 1)[0]


def _quickstart(workdir, child_env, *args):
    env = {**__import__("os").environ, **child_env}
    result = subprocess.run(
        [sys.executable, "-m", "transfusion_jax.experiments.quickstart", "--workdir", str(workdir), "--mini", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )
    return result


@pytest.fixture(scope="module")
def mini(tmp_path_factory, child_env):
    workdir = tmp_path_factory.mktemp("study")
    result = _quickstart(workdir, child_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stdout


def test_report_has_gates_verdicts_and_figures(mini):
    workdir, out = mini
    c = study.load_config("mini")
    assert f"[{len(study.plan(c))}/{len(study.plan(c))}] fine-tune small model, small data, transfer, seed 1" in out
    assert f"this design: {len(study.plan(c))} fine-tuning runs + 1 pretraining" in out.splitlines()[1]
    text = (workdir / "report.md").read_text()
    block = study_report.verdicts_block(text)
    rows = [line for line in block.splitlines() if line.startswith("| C") or line.startswith("| R ")]
    assert len(rows) == 17
    for row in rows:  # the cut: the large model's claims say so; the small model's are judged
        assert (NOT_RUN in row) == ("large" in row.split("|")[3])
        if "large" not in row.split("|")[3]:
            assert any(f"**{v}**" in row for v in ("supported", "contradicted", "inconclusive", "not testable"))
    assert text.index("## Gates") < text.index("## Claims in detail")
    for name in ("verdicts", "g1_kernel_std_ratio", "g2_probe_auc", "val_auc_small_full", "similarity_to_init_small"):
        assert (workdir / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"figures/{name}.png" in text


def _reject(constant):
    raise ValueError(f"non-standard JSON constant {constant}")


def test_every_json_the_quickstart_writes_is_strict(mini):
    """Standard JSON has no NaN or Infinity: every .json and every line of every .jsonl under the workdir parses
    with them refused (runs, analyses' caches, the design record, figures' data)."""
    workdir, _ = mini
    files = sorted(p for p in workdir.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
    assert len(files) > 50  # every run's config, summary and metrics, the study's own records
    for path in files:
        text = path.read_text()
        for line in text.splitlines() if path.suffix == ".jsonl" else [text]:
            if line.strip():
                json.loads(line, parse_constant=_reject)


def test_report_numbers_come_from_the_runs(mini):
    workdir, _ = mini
    c = study.load_config("mini")
    text = (workdir / "report.md").read_text()
    # G3's row: each random run's steps to threshold and final validation AUC, as its summary.json has them.
    summaries = [json.loads((workdir / RunKey("small", "full", "random", s).workdir("") / "summary.json").read_text())
                 for s in c.seeds]  # fmt: skip
    finals = ", ".join(f"{s['val']['final']['auc']:.3f}" for s in summaries)
    assert any(line.startswith("| small |") and finals in line for line in text.splitlines())
    # C1 (small): mean over seeds of AUC(transfer) - AUC(random) on the test images, by sklearn.
    diffs = []
    for seed in c.seeds:
        scores = {
            init: np.load(workdir / RunKey("small", "full", init, seed).workdir("") / study.TEST_FILE)
            for init in ("transfer", "random")
        }
        labels = scores["random"]["label"].astype(bool)
        np.testing.assert_array_equal(scores["random"]["id"], scores["transfer"]["id"])
        diffs.append(
            roc_auc_score(labels, scores["transfer"]["score"]) - roc_auc_score(labels, scores["random"]["score"])
        )
    c1 = next(line for line in text.splitlines() if line.startswith("| C1 |") and "small model" in line)
    assert f"{np.mean(diffs):+.3f} [" in c1
    # Test scores are the Private images only: none of them is a validation (Public) or train image.
    test_ids = set(np.load(workdir / RunKey("small", "full", "random", 0).workdir("") / study.TEST_FILE)["id"])
    assert len(test_ids) == c.target.test
    solution = (workdir / "data" / "retina" / "retinopathy_solution.csv").read_text().splitlines()[1:]
    public = {row.split(",")[0] for row in solution if row.endswith("Public")}
    assert not any(any(p in i for p in public) for i in test_ids)


def test_every_similarity_has_its_null_and_size(mini):
    workdir, _ = mini
    c = study.load_config("mini")
    sim = json.loads((workdir / "analysis" / "similarity_small.json").read_text())
    assert set(sim["to_init"]) == {f"{i}/{s}" for i in ("random", "transfer") for s in c.seeds}
    assert set(sim["pairs"]) == {f"{k}/{i}" for k in ("rand_rand", "rand_imnet") for i in range(len(c.seeds))}
    for entry in list(sim["to_init"].values()) + list(sim["pairs"].values()):
        for layer in sim["layers"]:
            for method in c.similarity.methods:
                r = entry[layer][method]
                assert len(r["null"]) == c.similarity.null_permutations
                assert r["null_min"] <= r["null_mean"] <= r["null_max"] and 0 <= r["score"] <= 1 + 1e-6
                assert r["n"] % c.target.test == 0 and r["n_per_dim"] == r["n"] / max(r["dx"], r["dy"])
    assert sim["reduction"]["positions"] == c.similarity.positions


def test_rerun_skips_finished_work(mini, child_env):
    workdir, _ = mini
    before = (workdir / RunKey("small", "full", "random", 0).workdir("") / "metrics.jsonl").read_text()
    block = study_report.verdicts_block((workdir / "report.md").read_text())
    result = _quickstart(workdir, child_env)
    assert result.returncode == 0, result.stderr[-3000:]
    c = study.load_config("mini")
    assert result.stdout.count("finished before") == len(study.plan(c)) + len(c.models_run)
    assert (workdir / RunKey("small", "full", "random", 0).workdir("") / "metrics.jsonl").read_text() == before
    # The same verdicts; the block's first line says where and how long the invocation that wrote it ran.
    again = study_report.verdicts_block((workdir / "report.md").read_text()).splitlines()
    runs_ = len(study.plan(c)) + len(c.models_run)
    assert f" 0 of {runs_} runs trained in it." in again[1]
    assert again[2:] == block.splitlines()[2:] and f"{runs_} of {runs_} runs trained in it." in block.splitlines()[1]


def test_a_workdir_refuses_another_design_and_bad_configs_fail_first(mini, tmp_path):
    workdir, _ = mini
    other = study.load_config("mini", ["seeds=(0, 1, 2)"])
    with pytest.raises(study.StudyConfigError, match=r"other settings \(seeds\)"):
        study.check_workdir(str(workdir), other)
    study.check_workdir(str(workdir), study.load_config("mini", ['models_run=("small", "large")']))  # may grow
    bad = study.load_config("mini", ["seeds=(0,)", "threshold=1.5"])
    bad.cells = (("small", "full", ("random", "transfusion:layer9")),)
    with pytest.raises(study.StudyConfigError) as e:
        study.check_config(bad)
    assert "layer9" in str(e.value) and "at least 2 distinct seeds" in str(e.value) and "threshold" in str(e.value)
    assert not (tmp_path / "anything").exists()


def test_every_variant_is_a_usable_design_and_scale_is_the_larger_one():
    """--full, --scale and the default pass the checks a run makes before its first image; --scale is the same
    design larger (docs/study.md §9): more pixels, wider models, more data, steps and seeds, the same claims."""
    configs = {arg: study.load_config(arg) for arg in ("default", "full", "scale", "mini")}
    for c in configs.values():
        study.check_config(c)
    default, full, scale = configs["default"], configs["full"], configs["scale"]
    assert len(study.plan(default)) == 25 and len(study.plan(full)) == 75 and len(study.plan(scale)) == 150
    assert scale.image_size == 64 and scale.finetune.steps == 1500 and scale.target.train == 20_000
    assert all(w_s > w_f for m in ("small", "large") for w_s, w_f in zip(scale.widths[m], full.widths[m]))
    assert [(m, d, tuple(i)) for m, d, i in scale.cells] == [(m, d, tuple(i)) for m, d, i in full.cells]
    assert (scale.threshold, dict(scale.margins), dict(scale.gates)) == (
        full.threshold,
        dict(full.margins),
        dict(full.gates),
    )
    for c in (default, scale):  # every step at first, then ~15 % apart: finer than the steps margin (ln 1.25)
        steps = np.array(c.eval_steps)
        assert steps[-1] == c.finetune.steps and tuple(steps[:10]) == tuple(range(1, 11))
        assert np.all(steps[1:][steps[:-1] >= 20] / steps[:-1][steps[:-1] >= 20] < 1.2)
