"""train_and_evaluate end to end on small data: learning, metrics files, NaN stop, and exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import CACHE_DIR
from fake_data import route_build_dataset, tiny_config
from tb_events import scalars

from transfusion_jax import pretrained
from transfusion_jax.train import NonFiniteLossError, config_lib, trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def fake_data(monkeypatch):
    """Routes build_dataset to FakeDataset; returns a dict of extra FakeDataset kwargs to fill in."""
    kwargs = {}
    route_build_dataset(monkeypatch, kwargs)
    return kwargs


def _records(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def test_loss_falls_auc_rises_and_summary_is_consistent(fake_data, tmp_path):
    workdir = str(tmp_path)
    summary = trainer.train_and_evaluate(tiny_config(export_pretrained=True), workdir)
    train, evals = _records(workdir, "train"), _records(workdir, "eval")
    assert [r["step"] for r in evals] == list(range(5, 41, 5))
    assert np.mean([r["loss"] for r in train[-2:]]) < 0.7 * np.mean([r["loss"] for r in train[:2]])
    assert evals[-1]["auc"] > evals[0]["auc"] + 0.1 and evals[-1]["auc"] > 0.9
    assert evals[-1]["num_examples"] == 40
    reached = next(r["step"] for r in evals if r["auc"] >= 0.8)
    assert summary["steps_to_threshold"] == reached
    assert summary["best_auc"] == max(r["auc"] for r in evals)
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["steps_to_threshold"] == reached
    # Calibration beside AUC: the final eval's ECE is that of the reliability diagram in the summary (positive class).
    assert list(summary["reliability"]) == ["c1"] and sum(summary["reliability"]["c1"]["count"]) == 40
    assert len(summary["reliability"]["c1"]["count"]) == config_lib.base_config().calibration_bins
    assert evals[-1]["ece"] == evals[-1]["ece/c1"] == pytest.approx(summary["reliability"]["c1"]["ece"])
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["model"]["overrides"]["widths"] == [4, 8]
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "latest")))[-1] == "40"
    # The exported weights are the final state's, in the format transfer/transfusion read.
    variables, meta = pretrained.load(os.path.join(workdir, "pretrained.npz"))
    final = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "latest", "40", "default"))
    assert meta["architecture"] == "cbr_small" and meta["num_classes"] == 2
    for a, b in zip(jax.tree_util.tree_leaves(variables["params"]), jax.tree_util.tree_leaves(final["params"])):
        np.testing.assert_array_equal(a, b)


def test_rerun_of_a_finished_run_gives_the_same_summary(fake_data, tmp_path):
    """A run killed after its last checkpoint resumes with nothing left to train: the summary, reliability diagram
    included, is recomputed from the final state and equals the first one."""
    config = tiny_config(num_train_steps=10, calibration_bins=4)
    first = trainer.train_and_evaluate(config, str(tmp_path))
    os.remove(tmp_path / "summary.json")
    again = trainer.train_and_evaluate(config, str(tmp_path))
    assert again == first and len(first["reliability"]["c1"]["count"]) == 4
    with open(tmp_path / "summary.json") as f:
        assert json.load(f) == json.loads(json.dumps(first))


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
    for split in ("train", "eval"):
        assert drop_timing(_records(unbroken, split)) == drop_timing(_records(killed, split))
    with open(os.path.join(unbroken, "summary.json")) as f1, open(os.path.join(killed, "summary.json")) as f2:
        assert json.load(f1) == json.load(f2)

    # TensorBoard: each (tag, step) once, the same points as the unbroken run's.
    def points(workdir):
        return sorted(
            (t, s, v) for _, t, s, v in scalars(os.path.join(workdir, "tensorboard")) if "per_second" not in t
        )

    assert points(unbroken) == points(killed)
    assert len({(t, s) for t, s, _ in points(killed)}) == len(points(killed))
