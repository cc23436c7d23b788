"""runs.train_many: which runs are stacked into one program, which train alone and why, finished runs read back,
failures marked without stopping the others, programs trained at once. The trainers are fakes here
(tests/train/test_group_trainer.py checks that a stacked program gives each run what it gets alone, and the same
bits beside another program)."""

import json
import os
import threading
import time

import pytest

from transfusion_jax.experiments import runs
from transfusion_jax.train import config_lib, rundir, trainer


def _config(seed, **changes):
    c = config_lib.base_config()
    c.model.name = "cbr_small"
    c.seed = seed
    for dotted, value in changes.items():
        node = c
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return c


def _summary(workdir, config):
    summary = {"final_step": config.num_train_steps, "seed": config.seed}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, rundir.SUMMARY), "w") as f:
        json.dump(summary, f)
    return summary


class FakeTrainers:
    """Stands in for trainer.train_and_evaluate and trainer.train_group, recording which runs each trained."""

    def __init__(self, monkeypatch, fail=()):
        self.alone, self.groups, self.fail = [], [], set(fail)
        monkeypatch.setattr(trainer, "train_and_evaluate", self.train_alone)
        monkeypatch.setattr(trainer, "train_group", self.train_group)

    def _outcome(self, config, workdir):
        if os.path.basename(workdir) in self.fail:
            return RuntimeError(f"boom in {os.path.basename(workdir)}")
        return _summary(workdir, config)

    def train_alone(self, config, workdir):
        self.alone.append(os.path.basename(workdir))
        outcome = self._outcome(config, workdir)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def train_group(self, configs, workdirs, on_started=None):
        if on_started is not None:  # as the real one does once its first step is compiled
            on_started()
        self.groups.append([os.path.basename(w) for w in workdirs])
        return [self._outcome(c, w) for c, w in zip(configs, workdirs)]


def _jobs(tmp_path):
    configs = [
        _config(0),
        _config(1, init="transfer", pretrained="a.npz", freeze=("layer1",), optimizer__learning_rate=0.1),
        _config(0, optimizer__b1=0.8),  # another optimizer: another program
        _config(3, finetune__protocol="lp_ft", finetune__probe_steps=10),  # refused: trains alone
        _config(2),
        _config(4),
    ]
    return [(f"job {k}", c, str(tmp_path / f"run_{k}")) for k, c in enumerate(configs)]


def test_compatible_runs_stack_and_refused_ones_train_alone(monkeypatch, tmp_path):
    fake, messages = FakeTrainers(monkeypatch), []
    jobs = _jobs(tmp_path)
    _summary(jobs[4][2], jobs[4][1])  # finished before: read back, not trained
    summaries = runs.train_many(jobs, max_runs_per_program=0, log=messages.append)
    assert fake.groups == [["run_0", "run_1", "run_5"]]
    assert fake.alone == ["run_2", "run_3"]
    assert any("run_3: trains alone: LP-FT" in m for m in messages)
    assert [s["seed"] for s in summaries] == [0, 1, 0, 3, 2, 4]  # in job order
    assert [s["skipped"] for s in summaries] == [False, False, False, False, True, False]
    assert [s.get("runs_in_program") for s in summaries] == [3, 3, 1, 1, None, 3]


def test_max_runs_per_program_bounds_each_program(monkeypatch, tmp_path):
    fake = FakeTrainers(monkeypatch)
    runs.train_many(_jobs(tmp_path), max_runs_per_program=2, log=lambda _: None)
    assert fake.groups == [["run_0", "run_1"], ["run_4", "run_5"]] and fake.alone == ["run_2", "run_3"]


def test_one_run_per_program_is_one_at_a_time(monkeypatch, tmp_path):
    fake = FakeTrainers(monkeypatch)
    jobs = _jobs(tmp_path)
    runs.train_many([c for _, c, _ in jobs], [w for _, _, w in jobs], max_runs_per_program=1, log=lambda _: None)
    assert fake.groups == [] and fake.alone == [f"run_{k}" for k in range(6)]


def test_a_failed_run_is_marked_and_the_others_finish(monkeypatch, tmp_path):
    fake = FakeTrainers(monkeypatch, fail={"run_1", "run_2"})
    jobs = _jobs(tmp_path)
    with pytest.raises(runs.RunsFailedError, match="2 of 6 runs failed") as error:
        runs.train_many(jobs, log=lambda _: None)
    assert fake.groups == [["run_0", "run_1", "run_4", "run_5"]]
    results = error.value.results
    assert [isinstance(r, Exception) for r in results] == [False, True, True, False, False, False]
    for k in (1, 2):
        assert "RuntimeError: boom" in open(os.path.join(jobs[k][2], rundir.FAILED)).read()
        assert not runs.is_finished(jobs[k][2])
    fake.fail = set()
    again = runs.train_many(jobs, keep_going=True, log=lambda _: None)  # only the failed ones train again
    assert fake.groups[1:] == [] and fake.alone[-2:] == ["run_1", "run_2"]
    assert all(not os.path.exists(os.path.join(w, rundir.FAILED)) for _, _, w in jobs)
    assert [s["skipped"] for s in again] == [True, False, False, True, True, True]


def test_programs_at_once_train_side_by_side_and_report_on_the_calling_thread(monkeypatch, tmp_path):
    jobs = [(f"job {k}", _config(k), str(tmp_path / f"run_{k}")) for k in range(4)]
    fake, done_on = FakeTrainers(monkeypatch), []
    barrier = threading.Barrier(2, timeout=20)
    group = fake.train_group

    def meet_then_train(configs, workdirs, on_started):  # returns only once both programs are in flight together
        on_started()
        barrier.wait()
        return group(configs, workdirs)

    monkeypatch.setattr(trainer, "train_group", meet_then_train)
    summaries = runs.train_many(
        jobs,
        max_runs_per_program=2,
        programs_at_once=2,
        on_done=lambda k, _: done_on.append((k, threading.current_thread() is threading.main_thread())),
        log=lambda _: None,
    )
    assert sorted(fake.groups) == [["run_0", "run_1"], ["run_2", "run_3"]]
    assert [s["seed"] for s in summaries] == [0, 1, 2, 3]  # in job order, whichever program ended first
    assert sorted(k for k, _ in done_on) == [0, 1, 2, 3] and all(main for _, main in done_on)


def test_after_run_follows_each_trained_run_in_its_programs_thread(monkeypatch, tmp_path):
    """`after_run` runs on the program's own thread once the program is done and before that thread's next program,
    for the runs it trained (not a failed run, not one finished before); an error in it is logged and the run stays
    finished."""
    fake = FakeTrainers(monkeypatch, fail={"run_5"})
    jobs = [(f"job {k}", _config(k), str(tmp_path / f"run_{k}")) for k in range(6)]
    _summary(jobs[4][2], jobs[4][1])  # finished before
    after, messages, group = [], [], fake.train_group

    def train_group(configs, workdirs, on_started):
        after.append(("program", [os.path.basename(w) for w in workdirs], threading.current_thread().name))
        return group(configs, workdirs, on_started)

    def after_run(k, summary):
        after.append((k, summary["seed"], threading.current_thread().name))
        if k == 1:
            raise OSError("disk full")

    monkeypatch.setattr(trainer, "train_group", train_group)
    results = runs.train_many(
        jobs, max_runs_per_program=2, programs_at_once=2, after_run=after_run, keep_going=True, log=messages.append
    )
    programs = {names[0]: thread for step, names, thread in after if step == "program"}
    assert sorted(programs) == ["run_0", "run_2"]  # run_5, alone, trains through train_and_evaluate and fails
    assert all(thread.startswith("program") for thread in programs.values())
    ran = [(k, seed, thread) for k, seed, thread in after if k != "program"]
    assert sorted((k, seed) for k, seed, _ in ran) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    for k, _, thread in ran:  # after its own program, on that program's thread
        first = f"run_{k - k % 2}"
        assert thread == programs[first]
        assert after.index(("program", [first, f"run_{k + 1 - k % 2}"], thread)) < after.index((k, k, thread))
    assert any("run_1: after training: OSError: disk full" in m for m in messages)
    assert runs.is_finished(jobs[1][2]) and not isinstance(results[1], Exception)
    assert isinstance(results[5], Exception) and results[4]["skipped"]


def test_programs_side_by_side_start_one_at_a_time(monkeypatch, tmp_path):
    """With programs at once, a program starts (sets up, compiles) only once the one starting before it has said its
    first step is compiled (`on_started`) or has ended without saying so; then both train side by side."""
    jobs = [(f"job {k}", _config(k), str(tmp_path / f"run_{k}")) for k in range(6)]
    fake, events, lock = FakeTrainers(monkeypatch), [], threading.Lock()
    both_training = threading.Barrier(2, timeout=20)

    def train_group(configs, workdirs, on_started):
        name = os.path.basename(workdirs[0])
        with lock:
            events.append(("start", name))
        time.sleep(0.2)  # setting up and compiling: the other program must not start meanwhile
        with lock:
            events.append(("compiled", name))
        if name == "run_2":  # this one fails before compiling: it must not keep the next one waiting
            raise RuntimeError("no memory")
        on_started()
        both_training.wait()  # the next program starts while this one trains
        return fake.train_group(configs, workdirs)

    monkeypatch.setattr(trainer, "train_group", train_group)
    out = []
    caller = threading.Thread(
        target=lambda: out.append(
            runs.train_many(jobs, max_runs_per_program=2, programs_at_once=2, keep_going=True, log=lambda _: None)
        ),
        daemon=True,
    )
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), f"a program waits for a gate nobody releases: {events}"
    (results,) = out
    starts = [k for k, (what, _) in enumerate(events) if what == "start"]
    for k in starts[1:]:  # every start follows the compile of the program that started before it
        assert events[k - 1][0] == "compiled", events
    assert [name for what, name in events if what == "start"] == ["run_0", "run_2", "run_4"]
    assert [isinstance(r, Exception) for r in results] == [False, False, True, True, False, False]


def test_after_run_never_works_beside_another_programs_start(monkeypatch, tmp_path):
    """after_run holds the start gate too: no program sets up and compiles while another's runs are being scored."""
    jobs = [(f"job {k}", _config(k), str(tmp_path / f"run_{k}")) for k in range(8)]
    fake, events, lock = FakeTrainers(monkeypatch), [], threading.Lock()

    def note(what):
        with lock:
            events.append(what)

    def train_group(configs, workdirs, on_started):
        note("start")
        time.sleep(0.05)
        note("compiled")
        on_started()
        time.sleep(0.05 * int(os.path.basename(workdirs[0])[4:]))  # programs end at different times
        return fake.train_group(configs, workdirs)

    def after_run(k, summary):
        note("scoring")
        time.sleep(0.05)
        note("scored")

    monkeypatch.setattr(trainer, "train_group", train_group)
    runs.train_many(jobs, max_runs_per_program=2, programs_at_once=2, after_run=after_run, log=lambda _: None)
    assert events.count("start") == 4 and events.count("scoring") == 8
    for k, what in enumerate(events):
        if what == "start":
            assert events[k + 1] == "compiled", events
        if what == "scoring":
            assert events[k + 1] == "scored", events


def test_programs_at_once_keep_failures_to_their_runs(monkeypatch, tmp_path):
    fake = FakeTrainers(monkeypatch, fail={"run_1", "run_2"})
    jobs = _jobs(tmp_path)
    with pytest.raises(runs.RunsFailedError, match="2 of 6 runs failed") as error:
        runs.train_many(jobs, programs_at_once=3, log=lambda _: None)
    assert fake.groups == [["run_0", "run_1", "run_4", "run_5"]] and sorted(fake.alone) == ["run_2", "run_3"]
    assert [isinstance(r, Exception) for r in error.value.results] == [False, True, True, False, False, False]
    assert "RuntimeError: boom" in open(os.path.join(jobs[1][2], rundir.FAILED)).read()


def test_programs_at_once_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="programs_at_once must be >= 1"):
        runs.train_many(_jobs(tmp_path), programs_at_once=0, log=lambda _: None)


def _resident_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(
    not os.path.exists("/proc/self/status") or not hasattr(runs._libc(), "malloc_trim"),
    reason="glibc on Linux only: elsewhere release_freed_memory does nothing by design",
)
def test_release_freed_memory_returns_a_fragmented_heap_to_the_os():
    """Memory freed in the middle of the heap (below the last chunk still in use) stays resident after free(); only
    a trim returns it. 192 MiB in 64 KiB blocks (under glibc's mmap threshold, so on the heap), all freed but the
    last."""
    import numpy as np

    blocks = [np.ones(64 * 1024, np.uint8) for _ in range(3 * 1024)]
    last = blocks[-1]
    del blocks
    before = _resident_bytes()
    runs.release_freed_memory()
    assert before - _resident_bytes() > 100 * 2**20, (before, _resident_bytes())
    assert last.sum() == 64 * 1024


class _Interrupt(BaseException):
    """What Ctrl-C raises on the calling thread (a BaseException, like KeyboardInterrupt)."""


def test_an_interrupt_starts_no_further_program(monkeypatch, tmp_path):
    """Four one-run programs, two at once: the first ends at once, the others wait; the interrupt raised when the
    first is reported must keep the fourth from ever starting (the third may have started as the first ended)."""
    fake, release = FakeTrainers(monkeypatch), threading.Event()
    alone = fake.train_alone

    def train_alone(config, workdir):
        if not workdir.endswith("run_0"):
            release.wait(timeout=20)
        return alone(config, workdir)

    monkeypatch.setattr(trainer, "train_and_evaluate", train_alone)

    def interrupt(k, _):
        raise _Interrupt

    jobs = [(f"job {k}", _config(k), str(tmp_path / f"run_{k}")) for k in range(4)]
    with pytest.raises(_Interrupt):
        runs.train_many(jobs, max_runs_per_program=1, programs_at_once=2, on_done=interrupt, log=lambda _: None)
    release.set()
    for thread in [t for t in threading.enumerate() if t.name.startswith("program")]:
        thread.join(timeout=20)
    assert {"run_0", "run_1"} <= set(fake.alone) and "run_3" not in fake.alone  # the fourth never started
