"""trainer.train_group: runs stacked in one program end as the same runs trained alone by train_and_evaluate, with
every file a lone run writes, and a group killed after a checkpoint resumes (each run from its own checkpoint) to
the same end as an unbroken one."""

import json
import os

import chex
import numpy as np
import pytest
from fake_data import SPLITS, FakeDataset, route_build_dataset, tiny_config

from transfusion_jax import pretrained
from transfusion_jax.train import checkpoint, rundir, trainer
from transfusion_jax.train.writer import read_records

# Three runs that differ in what a group may vary: seed (init, dropout), frozen blocks, learning rate, data order
# (runs 0 and 1 share one order: one stream read for both). Early stopping with patience 2 stops them at different
# steps (checked below), so a group also finishes runs while the others go on.
RUNS = [
    dict(seed=0, data_order_seed=5),
    dict(seed=1, data_order_seed=5, freeze=("layer1",)),
    dict(seed=2, optimizer=dict(learning_rate=3e-3)),
]


def _config(run, **changes):
    run = dict(run)
    optimizer = run.pop("optimizer", {})
    config = tiny_config(num_train_steps=20, checkpoint_every_steps=10, export_pretrained=True, **run, **changes)
    config.optimizer.update(optimizer)
    return config


def _summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


def _without_timing(records):
    return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]


def _assert_close(ours, theirs, path="") -> None:
    """Equal structure, equal non-float values (steps, counts, names), floats to float32 rounding."""
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), path
        for key in theirs:
            _assert_close(ours[key], theirs[key], f"{path}/{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), path
        for k, (a, b) in enumerate(zip(ours, theirs)):
            _assert_close(a, b, f"{path}[{k}]")
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5), path
    else:
        assert ours == theirs, path


def _assert_same_run(group_dir, alone_dir):
    """Same summary (AUCs to float32 rounding), metrics, checkpoints, exports and test scores."""
    ours, theirs = _summary(group_dir), _summary(alone_dir)
    _assert_close(ours, theirs)
    ours_m, theirs_m = (_without_timing(read_records(os.path.join(d, "metrics.jsonl"))) for d in (group_dir, alone_dir))
    assert [(r["step"], r["split"]) for r in ours_m] == [(r["step"], r["split"]) for r in theirs_m]
    _assert_close(ours_m, theirs_m)
    assert [r.get("num_examples") for r in ours_m] == [r.get("num_examples") for r in theirs_m]  # identical counts
    with open(os.path.join(group_dir, "config.json")) as f, open(os.path.join(alone_dir, "config.json")) as g:
        assert json.load(f) == json.load(g)
    for name in (rundir.INIT, rundir.FINAL):
        chex.assert_trees_all_close(
            pretrained.load(os.path.join(group_dir, name))[0],
            pretrained.load(os.path.join(alone_dir, name))[0],
            rtol=1e-5,
            atol=1e-6,
        )
    with (
        np.load(os.path.join(group_dir, "test_scores.npz")) as a,
        np.load(os.path.join(alone_dir, "test_scores.npz")) as b,
    ):
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            if a[key].dtype.kind == "f":
                np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5)
            else:
                np.testing.assert_array_equal(a[key], b[key])
    for kind in ("latest", "best"):
        steps = lambda d: sorted(os.listdir(os.path.join(d, "checkpoints", kind)))  # noqa: E731
        assert steps(group_dir) == steps(alone_dir) and steps(group_dir)
        for step in steps(group_dir):
            assert checkpoint.verify(os.path.join(group_dir, "checkpoints", kind, step)) is None
    assert os.listdir(os.path.join(group_dir, "tensorboard"))


def _configs():
    return [_config(run, early_stopping_evals=2) for run in RUNS]


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Workdirs of RUNS trained one at a time by train_and_evaluate: the reference."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        route_build_dataset(monkeypatch, VALIDATION_WANDERS)
        root = tmp_path_factory.mktemp("alone")
        workdirs = [str(root / f"run_{i}") for i in range(len(RUNS))]
        for config, workdir in zip(_configs(), workdirs):
            trainer.train_and_evaluate(config, workdir)
    return workdirs


# Validation labels no model can learn: a validation AUC that wanders, so early stopping ends runs at different
# steps; the test split stays learnable.
VALIDATION_WANDERS = {"validation": {"learnable": False}}


def test_group_runs_end_as_runs_trained_alone(alone, monkeypatch, tmp_path):
    route_build_dataset(monkeypatch, VALIDATION_WANDERS)
    grouped = [str(tmp_path / f"run_{i}") for i in range(len(RUNS))]
    summaries = trainer.train_group(_configs(), grouped)
    assert summaries == [_summary(d) for d in grouped]
    for group_dir, alone_dir in zip(grouped, alone):
        _assert_same_run(group_dir, alone_dir)
    final_steps = [s["final_step"] for s in summaries]
    assert len(set(final_steps)) > 1 and min(final_steps) < 20, final_steps  # runs stopped at different steps


class _KilledError(BaseException):
    """A kill: not an error of the run (those are returned per run), it stops the whole process."""


def test_group_killed_after_a_checkpoint_resumes_to_the_same_end(alone, monkeypatch, tmp_path):
    """Killed right after run 0 saved its step-10 checkpoint and before the others saved theirs: on restart run 0
    resumes from step 10 and runs 1 and 2 from the beginning, as two programs."""
    route_build_dataset(monkeypatch, VALIDATION_WANDERS)
    grouped = [str(tmp_path / f"run_{i}") for i in range(len(RUNS))]
    save = trainer.RunRecorder.checkpoint

    def save_then_die(self, done, state):
        save(self, done, state)
        if done == 10:
            self.close()  # what a kill leaves: the checkpoint finished on disk (close waits for it)
            raise _KilledError

    monkeypatch.setattr(trainer.RunRecorder, "checkpoint", save_then_die)
    with pytest.raises(_KilledError):
        trainer.train_group(_configs(), grouped)
    monkeypatch.setattr(trainer.RunRecorder, "checkpoint", save)
    assert os.listdir(os.path.join(grouped[0], "checkpoints", "latest")) == ["10"]
    assert not os.listdir(os.path.join(grouped[1], "checkpoints", "latest"))
    started = []
    begin = trainer.RunRecorder.begin
    monkeypatch.setattr(
        trainer.RunRecorder, "begin", lambda self, *a: started.append(self.start_step) or begin(self, *a)
    )
    finished_when_compiled = []  # on_started: once, as the first program's first step is compiled, not at the end
    summaries = trainer.train_group(
        _configs(),
        grouped,
        on_started=lambda: finished_when_compiled.append(
            sum(os.path.exists(os.path.join(d, rundir.SUMMARY)) for d in grouped)
        ),
    )
    assert started == [10, 0, 0]
    assert finished_when_compiled == [0]  # two programs here (resumed at 10, and at 0): one call
    for group_dir, alone_dir, summary in zip(grouped, alone, summaries):
        assert summary == _summary(group_dir)
        _assert_same_run(group_dir, alone_dir)


def test_a_run_whose_loss_turns_nan_fails_alone(monkeypatch, tmp_path):
    def build(config, split, *, train):  # run 1's training images turn NaN at step 3 (0-based)
        nan_at_step = 3 if train and config.seed == 1 else None
        n = 64 if train else 40
        return FakeDataset(n, size=8, train=train, seed=SPLITS.index(split), name=split, nan_at_step=nan_at_step)

    monkeypatch.setattr(trainer.data_lib, "build_dataset", build)
    configs = [tiny_config(num_train_steps=10, checkpoint_every_steps=10, seed=seed) for seed in (0, 1)]
    workdirs = [str(tmp_path / f"run_{i}") for i in range(2)]
    healthy, failed = trainer.train_group(configs, workdirs)
    assert isinstance(failed, trainer.NonFiniteLossError) and "at step 4" in str(failed)
    assert not os.path.exists(os.path.join(workdirs[1], "summary.json"))
    assert healthy == _summary(workdirs[0]) and healthy["final_step"] == 10


def _bits(workdir):
    """Everything a run computed, as written: its metrics (timing aside), summary and final weights."""
    records = _without_timing(read_records(os.path.join(workdir, "metrics.jsonl")))
    return records, _summary(workdir), pretrained.load(os.path.join(workdir, rundir.FINAL))[0]


def test_a_program_beside_another_computes_the_same_bits(alone, monkeypatch, tmp_path):
    """Two programs trained at once (runs.train_many's programs_at_once: one thread each, one XLA:CPU thread pool
    shared) give every run exactly what it gets with the programs one after another: not to rounding, to the bit."""
    from transfusion_jax.experiments import runs

    route_build_dataset(monkeypatch, VALIDATION_WANDERS)
    ends = {}
    for at_once in (1, 2):
        workdirs = [str(tmp_path / f"at_once_{at_once}" / f"run_{i}") for i in range(len(RUNS))]
        runs.train_many(_configs(), workdirs, max_runs_per_program=2, programs_at_once=at_once, log=lambda _: None)
        ends[at_once] = [_bits(d) for d in workdirs]
    for (records, summary, weights), (records2, summary2, weights2) in zip(ends[1], ends[2]):
        assert records == records2 and summary == summary2
        chex.assert_trees_all_equal(weights, weights2)
    for workdir, alone_dir in zip([str(tmp_path / "at_once_2" / f"run_{i}") for i in range(len(RUNS))], alone):
        _assert_same_run(workdir, alone_dir)
