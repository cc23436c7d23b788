"""The SSL study (experiments/ssl_study) end to end at --mini size through its command line: the report's gates,
verdicts and figures; every arm starting from the checkpoint it names; test AUCs that equal sklearn's on the runs'
own test scores; the SSL pretraining reading the training images only; strict JSON and no machine path in what it
publishes; a rerun that trains nothing; a work directory that refuses another design and a quickstart's. The
verdict logic itself: test_ssl_study_verdicts.py."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from transfusion_jax import pretrained
from transfusion_jax.experiments.ssl_study import design, execute
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import StudyConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BODY = ("layer1", "layer2", "layer3", "layer4")


def _run(child_env, *argv):
    return subprocess.run([sys.executable, "-m", "transfusion_jax.experiments.ssl_study", *argv], capture_output=True,
                          text=True, env={**os.environ, **child_env}, timeout=900)  # fmt: skip


@pytest.fixture(scope="module")
def mini(tmp_path_factory, child_env):
    workdir = tmp_path_factory.mktemp("ssl_study")
    result = _run(child_env, "--workdir", str(workdir), "--mini")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stdout


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_report_has_gates_verdicts_and_figures(mini):
    workdir, out = mini
    text = (workdir / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| S")]
    assert [row.split("|")[1].strip() for row in rows[:3]] == ["S1", "S2", "S0"]
    for row in rows[:3]:
        assert any(f"**{v}**" in row for v in ("supported", "contradicted", "inconclusive", "not testable")), row
    assert text.index("**Gates**") < text.index("| S1 |") < text.index("## Where the features are reused")
    linked = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert {"figures/ssl_forest.png", "figures/ssl_probes.png", "figures/ssl_similarity_svcca.png"} <= set(linked)
    for name in linked:
        assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "S1 AUC(ssl) - AUC(transfer)" in out


def test_published_files_are_strict_json_without_machine_paths(mini):
    workdir, _ = mini
    report, record = (workdir / "report.md").read_text(), (workdir / "ssl_study.json").read_text()
    found = _strict(record)
    assert {v["claim"] for v in found["verdicts"]} == {"S1", "S2", "S0"}
    for text in (report, record):
        for path in (str(workdir), os.path.expanduser("~"), "/tmp/", "/work/"):
            assert path not in text


def test_every_arm_starts_from_the_checkpoint_it_names(mini):
    workdir, _ = mini
    c = design.get_config("mini")
    ssl_ckpt = pretrained.load(design.ssl_checkpoint(str(workdir), c.model))[0]["params"]
    source = pretrained.load(workdir_lib.checkpoint_of(str(workdir), c.model))[0]["params"]
    for seed in c.study.seeds:
        init = {}
        for arm in design.ARMS:
            path = os.path.join(design.RunKey(c.model, c.data, arm, seed).workdir(str(workdir)), "init.npz")
            init[arm] = pretrained.load(path)[0]["params"]
        body = lambda p: {k: p[k] for k in BODY}  # noqa: E731  (the head is the run's own, fresh)
        jax.tree.map(np.testing.assert_array_equal, body(init["ssl"]), body(ssl_ckpt))
        jax.tree.map(np.testing.assert_array_equal, body(init["transfer"]), body(source))
        kernel = lambda p: np.asarray(p["layer1"]["conv"]["kernel"])  # noqa: E731
        assert not np.array_equal(kernel(init["random"]), kernel(source))
        assert not np.array_equal(kernel(init["random"]), kernel(ssl_ckpt))
    assert not np.array_equal(kernel(ssl_ckpt), kernel(source))


def test_test_aucs_are_sklearns_on_the_runs_test_scores(mini):
    workdir, _ = mini
    c = design.get_config("mini")
    found = _strict((workdir / "ssl_study.json").read_text())
    per_seed = {}
    for seed in c.study.seeds:
        for arm in design.ARMS:
            run = design.RunKey(c.model, c.data, arm, seed).workdir(str(workdir))
            with np.load(os.path.join(run, "test_scores.npz")) as scores:
                logits, labels = scores["final_logits"].astype(np.float64), scores["label"]
            assert len(labels) == c.study.target.test
            per_seed[arm, seed] = roc_auc_score(labels == 1, logits[:, 1] - logits[:, 0])
            assert found["test_auc"][arm][str(seed)] == pytest.approx(per_seed[arm, seed], abs=1e-9)
    s1 = next(v for v in found["verdicts"] if v["claim"] == "S1")
    expected = [per_seed["ssl", s] - per_seed["transfer", s] for s in c.study.seeds]
    assert s1["per_seed"] == pytest.approx(expected, abs=1e-9)
    assert s1["interval"]["estimate"] == pytest.approx(np.mean(expected), abs=1e-9)


def test_ssl_pretraining_saw_the_training_images_only_and_gates_rule(mini):
    workdir, _ = mini
    c = design.get_config("mini")
    found = _strict((workdir / "ssl_study.json").read_text())
    assert found["ssl_pretraining"]["train_examples"] == c.study.target.train  # no validation or test image
    failed = {g["gate"] for g in found["gates"] if not g["passed"]}
    needs = {"S1": {"P", "source"}, "S2": {"P"}, "S0": {"source"}}
    for v in found["verdicts"]:
        assert (v["verdict"] == "not testable") == bool(needs[v["claim"]] & failed), v


def test_rerun_trains_nothing(mini, child_env):
    workdir, _ = mini
    again = _run(child_env, "--workdir", str(workdir), "--mini")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "it trained 0 of the 8 runs" in (workdir / "report.md").read_text()


def test_workdir_refuses_another_design_and_a_quickstart_dir(mini, tmp_path):
    workdir, _ = mini
    other = design.load_config("mini", ["sesoi=0.03"])
    with pytest.raises(StudyConfigError, match=r"other settings \(sesoi\)"):
        execute.check_workdir(str(workdir), other)
    execute.check_workdir(str(workdir), design.load_config("mini", ["max_runs_per_program=1"]))  # execution only
    (tmp_path / workdir_lib.DESIGN_RECORD).write_text("{}")
    with pytest.raises(StudyConfigError, match="quickstart"):
        execute.check_workdir(str(tmp_path), design.get_config("mini"))


def test_unusable_designs_are_refused_before_anything_runs():
    for override, named in (
        ("arms=('random', 'ssl')", "arms must be"),
        ("eval_steps=(1, 10, 100)", "eval_steps must increase from >= 1 to the last step 300"),
        ("eval_steps=(299, 300)", "eval_steps needs >= 3 steps"),
        ("ssl.method='mae'", "ssl: method in"),
        ("noninferiority_margin=0.0", "noninferiority_margin > 0"),
    ):
        with pytest.raises(StudyConfigError, match=re.escape(named)):
            design.check_config(design.load_config("default", [override]))
    design.check_config(design.get_config("default"))
    design.check_config(design.get_config("mini"))


def test_docs_quote_the_published_report():
    """README.md, docs/ssl_study.md and docs/ssl.md quote each verdict's interval of the published run
    (docs/ssl_report/ssl_study.json) as its report writes it; the published files are strict JSON without machine
    paths, and every figure the report links is there."""
    published = os.path.join(REPO, "docs", "ssl_report")
    with open(os.path.join(published, "ssl_study.json")) as f:
        record = f.read()
    with open(os.path.join(published, "report.md")) as f:
        report = f.read()
    found = _strict(record)
    assert found["design"]["variant"] == "default"
    for text in (record, report):
        assert "/tmp/" not in text and "/work/" not in text and os.path.expanduser("~") + "/" not in text
    for name in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert os.path.isfile(os.path.join(published, name)), name
    docs = {name: open(os.path.join(REPO, name)).read() for name in ("README.md", "docs/ssl_study.md", "docs/ssl.md")}
    for v in found["verdicts"]:
        i = v["interval"]
        quoted = f"{i['estimate']:+.3f} [{i['low']:+.3f}, {i['high']:+.3f}]"
        assert f"| {v['claim']} |" in report and quoted in report
        for name, text in docs.items():
            assert quoted in text, (name, v["claim"], quoted)


def test_the_default_design_starts_its_transfer_arm_from_the_shipped_source_checkpoint(tmp_path):
    """The default design (the study's shipped checkpoints) installs the small model's checked checkpoint without a
    source set to pretrain on (the study's data step no longer writes one), and G1's source accuracy comes with it.
    Fails if the SSL study pretrains on the source, which the default no longer generates."""
    from transfusion_jax.experiments.study import sources  # noqa: PLC0415

    c = design.get_config("default")
    missing = {"source": str(tmp_path / "no_source_set"), "target": str(tmp_path / "no_target_set")}
    summary = execute.pretrain_source(str(tmp_path), c, missing, log=lambda _: None)
    entry = sources.read_manifest()[c.model]
    assert summary["shipped"] and summary["val"]["final"]["accuracy"] == entry["source_accuracy"]
    assert sources.sha256(workdir_lib.checkpoint_of(str(tmp_path), c.model)) == entry["sha256"]
    assert execute.source_design(c).models_run == (c.model,) and c.study.models_run == ("small", "large")
