"""train_and_evaluate end to end on small data: learning, metrics files, NaN stop, and exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import CACHE_DIR
from fake_data import route_build_dataset, tiny_config
from sklearn.metrics import roc_auc_score
from tb_events import scalars

from transfusion_jax import pretrained
from transfusion_jax.train import NonFiniteLossError, config_lib, preflight, rundir, trainer
from transfusion_jax.train.writer import MetricWriter, dumps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def fake_data(monkeypatch):
    """Routes build_dataset to FakeDataset; returns the dict of extra FakeDataset kwargs to fill in (a split's name
    as key holds that split's own, every other key applies to all splits)."""
    kwargs = {}
    route_build_dataset(monkeypatch, kwargs)
    return kwargs


def _records(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def _strict_json(path):
    """The file parsed as standard JSON: a bare NaN or Infinity raises."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    with open(path) as f:
        return (
            [json.loads(line, parse_constant=refuse) for line in f]
            if path.endswith(".jsonl")
            else json.load(f, parse_constant=refuse)
        )


def test_loss_falls_auc_rises_and_summary_is_consistent(fake_data, tmp_path):
    workdir = str(tmp_path)
    summary = trainer.train_and_evaluate(tiny_config(export_pretrained=True), workdir)
    train, val, test = (_records(workdir, split) for split in ("train", "val", "test"))
    assert [r["step"] for r in val] == [r["step"] for r in test] == list(range(5, 41, 5))
    assert np.mean([r["loss"] for r in train[-2:]]) < 0.7 * np.mean([r["loss"] for r in train[:2]])
    assert test[-1]["auc"] > test[0]["auc"] + 0.1 and test[-1]["auc"] > 0.9
    assert val[-1]["num_examples"] == test[-1]["num_examples"] == 40
    assert summary["test"]["steps_to_threshold"] == next(r["step"] for r in test if r["auc"] > 0.8)
    assert summary["val"]["steps_to_threshold"] == next(r["step"] for r in val if r["auc"] > 0.8)
    relative = 0.95 * val[-1]["auc"]
    assert summary["relative_threshold_auc"] == pytest.approx(relative)
    assert summary["val"]["steps_to_relative_threshold"] == next(r["step"] for r in val if r["auc"] > relative)
    assert summary["final_step"] == 40 and not summary["stopped_early"] and summary["epochs"] == 40 * 16 / 64
    final = dict(summary["test"]["final"])
    reliability = final.pop("reliability")
    assert final == {k: v for k, v in test[-1].items() if k != "split"}
    assert _strict_json(os.path.join(workdir, "summary.json")) == json.loads(json.dumps(summary))
    _strict_json(os.path.join(workdir, "metrics.jsonl"))
    # Calibration beside AUC on both splits; the summary's test reliability diagram at the final step is the one
    # behind that evaluation's ECE (the top label's confidence, at least 1/2 for two classes: only the upper half of
    # the 15 equal-width bins can hold examples), over all 40 test examples; ACE per output beside it.
    assert "ece" in val[-1] and "ace/c1" in val[-1] and "reliability" not in val[-1]
    assert list(reliability) == ["top_label"] and sum(reliability["top_label"]["count"]) == 40
    assert len(reliability["top_label"]["count"]) <= 8 and min(reliability["top_label"]["confidence"]) >= 0.5
    assert test[-1]["ece"] == test[-1]["ece/top_label"] == pytest.approx(reliability["top_label"]["error"])
    assert test[-1]["ace"] == test[-1]["ace/c1"]
    with open(os.path.join(workdir, "config.json")) as f:
        written = json.load(f)
    assert written["model"]["overrides"]["widths"] == [4, 8] and written["data"]["normalization"] == "torchvision"
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "latest")))[-1] == "40"
    # The exported weights are the final state's, in the format transfer/transfusion read.
    variables, meta = pretrained.load(os.path.join(workdir, "pretrained.npz"))
    final = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "latest", "40", "default"))
    assert meta["architecture"] == "cbr_small" and meta["num_classes"] == 2
    for a, b in zip(jax.tree_util.tree_leaves(variables["params"]), jax.tree_util.tree_leaves(final["params"])):
        np.testing.assert_array_equal(a, b)


def test_rerun_of_a_finished_run_gives_the_same_summary(fake_data, tmp_path):
    """A run killed after its last checkpoint resumes with nothing left to train: the summary, the test reliability
    diagrams at the selected and the final step included, is recomputed (from test_scores.npz) and equals the first."""
    config = tiny_config(num_train_steps=10, calibration_bins=4)
    first = trainer.train_and_evaluate(config, str(tmp_path))
    os.remove(tmp_path / "summary.json")
    again = trainer.train_and_evaluate(config, str(tmp_path))
    assert again == first
    for when in ("selected", "final"):
        diagram = first["test"][when]["reliability"]["top_label"]
        assert sum(diagram["count"]) == first["test"][when]["num_examples"] and len(diagram["count"]) <= 3
    with open(tmp_path / "summary.json") as f:
        assert json.load(f) == json.loads(json.dumps(first))


def test_selection_uses_validation_only_and_test_is_reported_at_both_steps(fake_data, tmp_path):
    """Validation labels carry no signal (its AUC wanders around 0.5) while the test AUC climbs: the selected step,
    the best/ checkpoint and every 'selected' number follow validation, never the test curve."""
    fake_data["validation"] = {"learnable": False}
    workdir = str(tmp_path)
    summary = trainer.train_and_evaluate(tiny_config(), workdir)
    val, test = _records(workdir, "val"), _records(workdir, "test")
    by_val = max(val, key=lambda r: (r["auc"], -r["step"]))["step"]  # highest validation AUC, earliest of ties
    by_test = max(test, key=lambda r: (r["auc"], -r["step"]))["step"]
    assert by_val != by_test  # the two criteria disagree in this run, so the test below can tell them apart
    assert summary["selected_step"] == by_val
    assert os.listdir(os.path.join(workdir, "checkpoints", "best")) == [str(by_val)]
    selected = {k: v for k, v in summary["test"]["selected"].items() if k != "reliability"}
    assert selected == {k: v for k, v in next(r for r in test if r["step"] == by_val).items() if k != "split"}
    assert summary["val"]["selected"]["auc"] == max(r["auc"] for r in val)
    assert not any("best" in key for key in _flat_keys(summary))
    # Per-example test scores at both steps reproduce the recorded AUCs (an independent sklearn computation).
    with np.load(os.path.join(workdir, rundir.TEST_SCORES)) as scores:
        assert int(scores["selected_step"]) == by_val and int(scores["final_step"]) == 40
        assert [i.decode() for i in scores["id"]] == [f"test/{i}" for i in range(40)]
        for when, record in (("selected", summary["test"]["selected"]), ("final", summary["test"]["final"])):
            logits = scores[f"{when}_logits"].astype(np.float64)
            auc = roc_auc_score(scores["label"], logits[:, 1] - logits[:, 0])
            assert auc == pytest.approx(record["auc"], abs=1e-12)
    assert not os.path.exists(os.path.join(workdir, "test_scores_pending"))


def test_without_best_checkpoints_the_run_is_the_same_but_saves_no_best(fake_data, tmp_path):
    """keep_best_checkpoint=False (the study's many short runs): the same summary, selected step and final weights
    as with best checkpoints, and checkpoints/best stays empty. Fails if the flag stops selection or is ignored."""
    with_best, without = str(tmp_path / "with"), str(tmp_path / "without")
    first = trainer.train_and_evaluate(tiny_config(), with_best)
    second = trainer.train_and_evaluate(tiny_config(keep_best_checkpoint=False), without)
    assert second == first and os.listdir(os.path.join(with_best, "checkpoints", "best"))
    assert os.listdir(os.path.join(without, "checkpoints", "best")) == []
    final = [ocp.StandardCheckpointer().restore(os.path.join(w, "checkpoints", "latest", "40", "default")) for w in
             (with_best, without)]  # fmt: skip
    chex.assert_trees_all_equal(*final)


def _flat_keys(tree, prefix=""):
    if not isinstance(tree, dict):
        return [prefix]
    return [k for key, value in tree.items() for k in _flat_keys(value, f"{prefix}/{key}")] + [prefix]


def test_early_stopping_and_epochs(fake_data, tmp_path):
    fake_data["validation"] = {"learnable": False}
    config = tiny_config(early_stopping_evals=2, num_train_epochs=25.0, checkpoint_every_steps=100)
    summary = trainer.train_and_evaluate(config, str(tmp_path))
    assert summary["num_train_steps"] == 25 * 64 // 16  # 25 passes over 64 training examples at batch 16
    val = _records(str(tmp_path), "val")
    best = max(val, key=lambda r: (r["auc"], -r["step"]))["step"]
    assert summary["stopped_early"] and summary["final_step"] == best + 2 * 5 == val[-1]["step"] < 100
    assert os.listdir(tmp_path / "checkpoints" / "latest") == [str(summary["final_step"])]
    with np.load(tmp_path / rundir.TEST_SCORES) as scores:
        assert int(scores["final_step"]) == summary["final_step"]
    # What early stopping counted lives in the checkpoint (every process restores it), not in metrics.jsonl.
    loop = ocp.CheckpointManager(tmp_path / "checkpoints" / "latest").metadata(summary["final_step"]).custom_metadata
    assert loop == {"best_auc": max(r["auc"] for r in val), "best_step": best, "evals_since_best": 2}
    # Rerunning the finished workdir resumes at the stop step and stops again without training.
    again = trainer.train_and_evaluate(config, str(tmp_path))
    assert again == json.loads(json.dumps(summary))


def test_explicit_eval_steps_and_the_last_step_are_the_evaluations(fake_data, tmp_path):
    explicit = dict(eval_steps=(1, 2, 3, 7), eval_every_steps=config_lib.PAPER_EVAL_EVERY)  # the default: unread
    summary = trainer.train_and_evaluate(tiny_config(num_train_steps=12, **explicit), str(tmp_path))
    assert [r["step"] for r in _records(str(tmp_path), "val")] == [1, 2, 3, 7, 12]
    assert [r["step"] for r in _records(str(tmp_path), "test")] == [1, 2, 3, 7, 12]
    assert summary["eval_steps"] == [1, 2, 3, 7]
    with pytest.raises(preflight.ConfigError, match="eval_steps must lie in 1..num_train_steps"):
        bad = dict(explicit, eval_steps=(0, 13))
        trainer.train_and_evaluate(tiny_config(num_train_steps=12, **bad), str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()  # refused before step 1


def test_metric_files_are_strict_json(tmp_path):
    """An undefined metric (an AUC of a split with one class) is written as null, never as bare NaN or a string."""
    writer = MetricWriter(str(tmp_path), start_step=0)
    writer.write(5, "val", {"auc": float("nan"), "auc/a": 0.75, "loss": float("inf")})
    writer.close()
    MetricWriter(str(tmp_path), start_step=5).close()  # a restart rewrites the kept records and rebuilds TensorBoard
    (record,) = _strict_json(str(tmp_path / "metrics.jsonl"))
    assert record == {"step": 5, "split": "val", "auc": None, "auc/a": 0.75, "loss": None}
    assert dumps({"a": [np.float32("nan"), np.int64(3)]}) == '{"a": [null, 3]}'


def test_summary_selection_by_hand():
    records = [
        {"step": 1, "split": "val", "auc": 0.70},
        {"step": 1, "split": "test", "auc": 0.99},
        {"step": 2, "split": "val", "auc": 0.80},
        {"step": 2, "split": "test", "auc": 0.60},
        {"step": 3, "split": "val", "auc": 0.80},  # a tie: the loop keeps the earlier step (strict >)
        {"step": 3, "split": "test", "auc": 0.70},
        {"step": 4, "split": "val", "auc": None},
        {"step": 4, "split": "test", "auc": 0.91},
    ]
    config = tiny_config(num_train_steps=4, eval_every_steps=1, auc_threshold=0.9, relative_threshold=0.9)
    summary = trainer._summary(records, config, train_examples=8, final_step=4, selected=2)
    assert summary["selected_step"] == 2
    assert summary["test"]["selected"] == {"step": 2, "auc": 0.60} and summary["test"]["final"]["auc"] == 0.91
    assert summary["test"]["steps_to_threshold"] == 1 and summary["val"]["steps_to_threshold"] is None
    assert summary["relative_threshold_auc"] is None  # the final validation AUC is undefined


def test_nan_loss_stops_the_run_naming_the_step(fake_data, tmp_path):
    fake_data["nan_at_step"] = 6  # the 7th update sees NaN pixels
    config = tiny_config(log_every_steps=100, eval_every_steps=100, checkpoint_every_steps=3)
    with pytest.raises(NonFiniteLossError, match="at step 7;"):
        trainer.train_and_evaluate(config, str(tmp_path))
    # The checkpoint due at step 9 was never written; the one at step 6 (before the NaN) was.
    assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints" / "latest") if s.isdigit()) == [3, 6]


def _cli(workdir, env):
    args = [
        sys.executable,
        "-m",
        "transfusion_jax.main",
        "--config=configs/retina.py:cbr_small,random,local",
        f"--workdir={workdir}",
        "--config.num_train_steps=30",
        "--config.checkpoint_every_steps=5",
        "--config.progress_bar=False",
        "--config.keep_checkpoints=10",
    ]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_state(workdir):
    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "latest", "30", "default"))


def test_run_killed_with_sigkill_resumes_to_identical_result(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
    }
    unbroken, killed = str(tmp_path / "unbroken"), str(tmp_path / "killed")
    reference = _cli(unbroken, env)
    victim = _cli(killed, env)
    first_ckpt = os.path.join(killed, "checkpoints", "latest", "5", "checksums.json")  # a finished checkpoint
    deadline = time.time() + 240
    while not os.path.exists(first_ckpt) and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed:\n" + victim.stdout.read()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = _cli(killed, env)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "Resuming from the checkpoint at step" in out
    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out

    a, b = _final_state(unbroken), _final_state(killed)
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)
    drop_timing = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_second"} for r in rs]  # noqa: E731
    for split in ("train", "val", "test"):
        assert drop_timing(_records(unbroken, split)) == drop_timing(_records(killed, split))
    with open(os.path.join(unbroken, "summary.json")) as f1, open(os.path.join(killed, "summary.json")) as f2:
        assert json.load(f1) == json.load(f2)
    with (
        np.load(os.path.join(unbroken, rundir.TEST_SCORES)) as a,
        np.load(os.path.join(killed, rundir.TEST_SCORES)) as b,
    ):
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)

    # TensorBoard: each (tag, step) once, the same points as the unbroken run's.
    def points(workdir):
        return sorted(
            (t, s, v) for _, t, s, v in scalars(os.path.join(workdir, "tensorboard")) if "per_second" not in t
        )

    assert points(unbroken) == points(killed)
    assert len({(t, s) for t, s, _ in points(killed)}) == len(points(killed))
