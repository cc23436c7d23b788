"""Checkpoint damage and recovery: a damaged or unfinished latest checkpoint is detected by its checksum manifest,
moved aside with a warning naming what is wrong, and the run resumes from the newest intact step to the same result
as an unbroken run; with no intact finished step the run stops with a one-line error."""

import json
import logging
import os
import re
import shutil
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from fake_data import route_build_dataset, tiny_config
from tb_events import scalars

from transfusion_jax.train import CheckpointError, trainer
from transfusion_jax.train.checkpoint import CHECKSUM_FILE

# lr 1e-2: the best validation AUC comes at step 10 and is never beaten, so a resumed run that forgot it would save a
# different best checkpoint (the condition is asserted in test_best_so_far_comes_from_the_checkpoint).
CONFIG = dict(num_train_steps=30, checkpoint_every_steps=10, keep_checkpoints=10)


def _config():
    config = tiny_config(**CONFIG)
    config.optimizer.learning_rate = 1e-2
    return config


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unbroken")
    with pytest.MonkeyPatch.context() as mp:
        route_build_dataset(mp)
        trainer.train_and_evaluate(_config(), str(workdir))
    return workdir


def _resume_copy(unbroken, tmp_path, damage=None):
    """Copies the finished run, applies `damage` to it, reruns the same command there; returns the workdir."""
    workdir = tmp_path / "run"
    shutil.copytree(unbroken, workdir)
    if damage is not None:
        damage(workdir / "checkpoints" / "latest")
    with pytest.MonkeyPatch.context() as mp:
        route_build_dataset(mp)
        trainer.train_and_evaluate(_config(), str(workdir))
    return workdir


def _state(workdir, step):
    return ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "latest" / str(step) / "default")


def _records_without_timing(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in map(json.loads, lines)]


def _tensorboard_points(workdir):
    return sorted((t, s, v) for _, t, s, v in scalars(workdir / "tensorboard") if "per_second" not in t)


def _assert_same_run(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(_state(a, 30)), jax.tree_util.tree_leaves(_state(b, 30)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert _records_without_timing(a) == _records_without_timing(b)
    assert _tensorboard_points(a) == _tensorboard_points(b)
    assert os.listdir(a / "checkpoints" / "best") == os.listdir(b / "checkpoints" / "best")


def _largest_data_file(step_dir):
    files = [os.path.join(root, f) for root, _, names in os.walk(step_dir / "default") for f in names]
    return max((f for f in files if f"{os.sep}d{os.sep}" in f), key=os.path.getsize)


def _truncate(latest):
    path = _largest_data_file(latest / "30")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip_byte(latest):
    path = _largest_data_file(latest / "30")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


DAMAGE = {
    "truncated_file": (_truncate, r"default/\S+ is truncated \(\d+ of \d+ bytes\)"),
    "missing_metadata": (
        lambda latest: (latest / "30" / "default" / "_METADATA").unlink(),
        "default/_METADATA is missing",
    ),
    "flipped_byte": (_flip_byte, r"default/\S+ does not match its checksum"),
    "missing_folder": (lambda latest: shutil.rmtree(latest / "30" / "default"), "folder default/ is missing"),
    "unfinished_save": (lambda latest: (latest / "30" / CHECKSUM_FILE).unlink(), "never finished saving"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(unbroken, tmp_path, caplog, kind):
    damage, message = DAMAGE[kind]
    caplog.set_level(logging.INFO)
    resumed = _resume_copy(unbroken, tmp_path, damage)
    warnings = [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "Checkpoint step 30" in r.message
    ]
    assert len(warnings) == 1, caplog.text
    assert re.search(message, warnings[0]), warnings[0]
    assert "resuming from step 20" in warnings[0]
    assert "Resuming from the checkpoint at step 20" in caplog.text
    assert os.path.isdir(resumed / "checkpoints" / "damaged" / "latest_30")  # kept for inspection
    _assert_same_run(unbroken, resumed)


def test_unfinished_saves_only_start_from_the_beginning(unbroken, tmp_path, caplog):
    def unfinish_all(latest):
        for step in ("10", "20", "30"):
            (latest / step / CHECKSUM_FILE).unlink()

    resumed = _resume_copy(unbroken, tmp_path, unfinish_all)
    assert sum("never finished saving" in r.getMessage() for r in caplog.records) == 3
    assert "resuming from the beginning" in caplog.text
    _assert_same_run(unbroken, resumed)


def test_no_intact_checkpoint_is_a_one_line_error_that_changes_nothing(unbroken, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(unbroken, workdir)
    latest = workdir / "checkpoints" / "latest"
    for step in ("10", "20", "30"):
        (latest / step / "default" / "_METADATA").unlink()
    before = sorted(p for p in workdir.rglob("*"))
    with pytest.MonkeyPatch.context() as mp:
        route_build_dataset(mp)
        with pytest.raises(CheckpointError) as error:
            trainer.train_and_evaluate(_config(), str(workdir))
    message = str(error.value)
    assert "\n" not in message
    assert "No intact checkpoint" in message and "step 30: default/_METADATA is missing" in message
    assert "To start fresh, move" in message and str(workdir / "checkpoints") in message
    assert sorted(p for p in workdir.rglob("*")) == before


def test_best_so_far_comes_from_the_checkpoint_not_the_metrics_file(unbroken, tmp_path):
    """Processes other than 0 never see metrics.jsonl: a resumed run must take the best validation AUC so far (and
    its step, and the evaluations since, for early stopping) from the checkpoint, or it saves a 'best' that is not
    (and in a multi-process job, process 1 alone saves: a hang)."""
    evals = [r for r in map(json.loads, (unbroken / "metrics.jsonl").read_text().splitlines()) if r["split"] == "val"]
    best = max(evals, key=lambda r: (r["auc"], -r["step"]))
    assert best["step"] <= 20 and os.listdir(unbroken / "checkpoints" / "best") == [str(best["step"])]
    assert any(r["step"] > 20 for r in evals)  # evaluations after the resume point that are not a new best

    def lose_step_30_and_the_metrics(latest):
        shutil.rmtree(latest / "30")
        (latest.parent.parent / "metrics.jsonl").unlink()

    resumed = _resume_copy(unbroken, tmp_path, lose_step_30_and_the_metrics)
    assert os.listdir(resumed / "checkpoints" / "best") == [str(best["step"])]
    loop = ocp.CheckpointManager(resumed / "checkpoints" / "latest").metadata(30).custom_metadata
    since = sum(r["step"] > best["step"] for r in evals)
    assert loop == {"best_auc": best["auc"], "best_step": best["step"], "evals_since_best": since}
    with open(resumed / "summary.json") as f:
        assert json.load(f)["selected_step"] == best["step"]  # from the checkpoint too: metrics.jsonl was lost


def test_saves_from_programs_side_by_side_neither_hang_nor_mix(tmp_path):
    """Programs trained side by side (runs.train_many(programs_at_once=2)) save from their own threads. Orbax keys a
    save's signals by one process-wide operation counter; without serialising the saves' starts, three such threads
    hung or failed in every one of six tries (FileExistsError, 'Directory not empty', missing array metadata, or a
    TimeoutError after 300 s). Each thread here saves 20 periodic and 10 best steps; all must finish, and each
    program's steps must verify and restore to its own values."""
    from transfusion_jax.train.checkpoint import Checkpointer, verify

    programs, steps, errors = 3, 20, []

    def program(index):
        try:
            checkpointer = Checkpointer(tmp_path / str(index), keep=2, keep_best=1)
            for step in range(1, steps + 1):
                state = {"w": np.full(1000, 100.0 * index + step, np.float32), "b": {"c": np.ones((10, 10))}}
                checkpointer.save(step, state, {"step": step})
                if step % 2 == 0:
                    checkpointer.save_best(step, state, float(step))
            checkpointer.close()
        except BaseException as e:  # the assertion below names it
            errors.append(f"program {index}: {e!r}")

    threads = [threading.Thread(target=program, args=(i,), daemon=True) for i in range(programs)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a save hung"
    assert errors == []
    for index in range(programs):
        checkpoints = tmp_path / str(index) / "checkpoints"
        assert sorted(os.listdir(checkpoints / "latest")) == [str(steps - 1), str(steps)]
        assert os.listdir(checkpoints / "best") == [str(steps)]  # the highest 'auc' saved, kept alone
        for step_dir in (checkpoints / "latest" / str(steps - 1), checkpoints / "latest" / str(steps),
                         checkpoints / "best" / str(steps)):  # fmt: skip
            assert verify(step_dir) is None, step_dir
        reopened = Checkpointer(tmp_path / str(index), keep=2, keep_best=1)
        state, loop = reopened.restore(steps, {"w": np.zeros(1000, np.float32), "b": {"c": np.zeros((10, 10))}})
        reopened.close()
        np.testing.assert_array_equal(state["w"], np.full(1000, 100.0 * index + steps, np.float32))
        assert loop == {"step": steps}
