"""One experiment = many training runs, one workdir each: ROOT/<group>/<model>/<init>/seed_<k>.

A run is finished when the trainer has written its `summary.json` (it does so only after the last step), so rerunning
a sweep skips finished runs and resumes unfinished ones from their latest checkpoint (the trainer's own resume).

`train_many` trains a list of runs, stacking compatible ones into one program (`trainer.train_group`; which runs
are compatible: `transfusion_jax.train.multirun`): each run still gets its own workdir with everything a run
trained alone writes, and the same numbers.
"""

import concurrent.futures
import ctypes
import ctypes.util
import dataclasses
import functools
import importlib.util
import os
import threading
import time
from collections.abc import Callable

from transfusion_jax.train import rundir


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Where a run lives and what it is; `group` is the config file's stem (retina, retina_small, hybrid, ...)."""

    group: str
    model: str
    init: str
    seed: int

    def workdir(self, root: str) -> str:
        return os.path.join(root, self.group, self.model, init_dirname(self.init), f"seed_{self.seed}")

    def label(self) -> str:
        return f"{self.group} {self.model} {self.init} seed {self.seed}"


def init_dirname(init: str) -> str:
    """'transfusion:block2' -> 'transfusion-block2' (':' is awkward in paths and not allowed on some filesystems)."""
    return init.replace(":", "-")


def init_from_dirname(name: str) -> str:
    return name.replace("-", ":", 1) if name.startswith("transfusion-") else name


def is_finished(workdir: str) -> bool:
    return rundir.is_finished(workdir)


def load_config_module(path: str):
    """A configs/*.py file as a module (configs/ is a folder of files, not a package)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} not found; pass e.g. --config configs/retina.py.")
    name = "transfusion_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {path!r} has no get_config(arg) function.")
    return module


def parse_pretrained(value: str) -> Callable[[str], str]:
    """'path.npz' (every model) or 'cbr_small=a.npz,resnet50=b.npz' (per model) -> model -> path ('' if none)."""
    if not value:
        return lambda model: ""
    if "=" not in value:
        return lambda model: value
    mapping = dict(item.split("=", 1) for item in value.split(",") if item)
    return lambda model: mapping.get(model, mapping.get("resnet50", "") if model == "resnet50_slim" else "")


def plan(group: str, models: list[str], inits: list[str], seeds: list[int]) -> list[RunSpec]:
    return [RunSpec(group, m, i, s) for m in models for i in inits for s in seeds]


def run(config, workdir: str, train_fn: Callable | None = None) -> dict:
    """Trains `config` in `workdir` unless already finished; returns the summary plus 'skipped' and 'seconds'.

    A run that raises leaves a FAILED marker with the error and re-raises; a later call retries it (resuming).
    """
    if is_finished(workdir):
        return _read_summary(workdir)
    if train_fn is None:
        from transfusion_jax.train import train_and_evaluate as train_fn
    start = time.perf_counter()
    try:
        summary = train_fn(config, workdir)
    except Exception as e:
        _mark_failed(workdir, e)
        raise
    _clear_failed(workdir)
    return {**summary, "skipped": False, "seconds": time.perf_counter() - start}


def _mark_failed(workdir: str, error: BaseException) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, rundir.FAILED), "w") as f:
        f.write(f"{type(error).__name__}: {error}\n")


def _clear_failed(workdir: str) -> None:
    failed = os.path.join(workdir, rundir.FAILED)
    if os.path.exists(failed):
        os.remove(failed)


def _read_summary(workdir: str) -> dict:
    return {**rundir.read_summary(workdir), "skipped": True, "seconds": 0.0}


class RunsFailedError(RuntimeError):
    """Some runs of `train_many` failed (each has a FAILED marker); the others finished. `results` holds every
    run's summary, or for a failed run the exception that stopped it, in job order."""

    def __init__(self, results: list, failed: list[int], workdirs: list[str]):
        self.results = results
        names = "; ".join(f"{workdirs[k]}: {type(results[k]).__name__}: {results[k]}" for k in failed)
        super().__init__(f"{len(failed)} of {len(results)} runs failed: {names}")


def _jobs(jobs, workdirs) -> tuple[list, list[str]]:
    if workdirs is not None:
        configs = list(jobs)
        if len(configs) != len(workdirs):
            raise ValueError(f"{len(configs)} configs but {len(workdirs)} workdirs.")
        return configs, [str(w) for w in workdirs]
    pairs = [job[-2:] for job in jobs]  # (config, workdir) or (label, config, workdir)
    return [c for c, _ in pairs], [str(w) for _, w in pairs]


def plan_programs(configs: list, max_runs_per_program: int = 0) -> list[tuple[list[int], str | None]]:
    """How `train_many` trains `configs`: (run indices, refusal) per program, in order of each program's first
    run. Runs that may share a program (`multirun.group_runs`) are stacked, at most `max_runs_per_program` each
    (0: no limit; 1: every run alone); a run that `multirun.solo_reason` refuses trains alone, with that reason
    as the refusal (None for every other program)."""
    from transfusion_jax.train import multirun  # noqa: PLC0415  (JAX only when training)

    if max_runs_per_program < 0:
        raise ValueError(f"max_runs_per_program must be >= 0 (0: no limit), got {max_runs_per_program}.")
    programs, stackable = [], []
    for k, config in enumerate(configs):
        reason = multirun.solo_reason(config)
        if reason or max_runs_per_program == 1:
            programs.append(([k], reason))
        else:
            stackable.append(k)
    for group in multirun.group_runs([configs[k] for k in stackable], max_runs_per_program):
        members = [stackable[g] for g in group]
        programs.append((members, None))
    return sorted(programs, key=lambda p: p[0][0])


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def release_freed_memory() -> None:
    """Returns the heap memory glibc keeps after frees to the OS (`malloc_trim`; elsewhere nothing). After an XLA
    program's work, glibc holds ~0.3 GiB of freed buffers in the middle of its heap, which only a trim returns
    (BENCHMARKS.md, "Programs at once"): called after each program and each phase of the study, it keeps them from
    adding up."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class _StartGate:
    """Programs trained side by side start one at a time: each holds `lock` from its start until its first step is
    compiled (`release`, once), and again while `after_run` works on its runs. A program's setup and compile are its
    memory peak, and the study's peaks of 1.88-1.89 GiB came from one beside another's start or test scoring
    (BENCHMARKS.md); the wait costs the program that is training nothing. `lock=None`: no gate."""

    def __init__(self, lock):
        self._lock = lock
        if lock is not None:
            lock.acquire()

    def release(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def train_many(
    jobs,
    workdirs=None,
    *,
    max_runs_per_program: int = 0,
    programs_at_once: int = 1,
    train_fn: Callable | None = None,
    keep_going: bool = False,
    on_done: Callable[[int, object], None] | None = None,
    after_run: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> list:
    """Trains every run not finished yet, compatible runs stacked as one program; returns the summaries in job
    order, each with 'skipped' (finished before: read back from its summary.json), 'seconds' (the run's share of
    its program's wall time) and 'runs_in_program'.

    jobs: (config, workdir) or (label, config, workdir) tuples, or configs with their `workdirs` beside them.
    max_runs_per_program: 0 = no limit (memory grows with it); 1 = one run at a time, as `run` in a loop.
    programs_at_once: programs trained at the same time, each in its own thread (memory grows with it). A program's
    numbers do not depend on what runs beside it; what it buys is cores: XLA:CPU spreads the small convolutions of
    one program over a second core poorly (BENCHMARKS.md, "Programs at once"), two programs use both.
    `train_fn(config, workdir)`, when given, trains each run alone instead (no stacking).
    A run that fails gets a FAILED marker and the others go on; at the end RunsFailedError is raised, unless
    `keep_going`: then a failed run's entry is the exception. `on_done(index, summary or exception)` is called as
    each run ends, on the calling thread. `after_run(index, summary)` is called for each run its program trained,
    in the program's own thread once the program is done, before the next program starts there: work on a finished
    run that should overlap the programs still training (the study scores each run's test images here). An error
    in it is logged and leaves the run finished; whoever reads that work later does it again, or raises. An
    interrupt with programs at once starts no further program and waits for those in flight (Python cannot stop a
    thread; a second interrupt leaves at once, and every run resumes from its last checkpoint).
    """
    if programs_at_once < 1:
        raise ValueError(f"programs_at_once must be >= 1, got {programs_at_once}.")
    configs, dirs = _jobs(jobs, workdirs)
    results: list = [None] * len(configs)
    pending = []
    for k, workdir in enumerate(dirs):
        if is_finished(workdir):
            results[k] = _read_summary(workdir)
            if on_done:
                on_done(k, results[k])
        else:
            pending.append(k)
    per_program = 1 if train_fn is not None else max_runs_per_program
    programs = [
        ([pending[m] for m in members], why)
        for members, why in plan_programs([configs[k] for k in pending], per_program)
    ]

    starting = threading.Lock()  # held by a program from its start until its first step is compiled

    def train_program(n: int, members: list[int], why: str | None) -> tuple[list, float]:
        start = time.perf_counter()
        gate = _StartGate(starting if programs_at_once > 1 else None)
        try:
            if len(members) == 1:
                gate.release()  # a lone run does not say when it has compiled
                if why:
                    log(f"{dirs[members[0]]}: trains alone: {why}")
                try:
                    outcomes = [run(configs[members[0]], dirs[members[0]], train_fn)]
                except Exception as e:  # marked FAILED by `run`
                    outcomes = [e]
            else:
                from transfusion_jax.train import trainer  # noqa: PLC0415

                log(f"program {n} of {len(programs)}: {len(members)} runs stacked")
                try:
                    configs_here, dirs_here = [configs[k] for k in members], [dirs[k] for k in members]
                    outcomes = trainer.train_group(configs_here, dirs_here, on_started=gate.release)
                except Exception as e:  # the program itself failed: every run of it did
                    outcomes = [e] * len(members)
        finally:
            gate.release()
        if after_run is not None:
            with _StartGate(starting if programs_at_once > 1 else None):  # not beside another's compile
                for k, outcome in zip(members, outcomes):
                    if isinstance(outcome, Exception) or outcome.get("skipped"):
                        continue
                    try:
                        after_run(k, outcome)
                    except Exception as e:  # noqa: BLE001 - the run itself is trained and finished
                        log(f"{dirs[k]}: after training: {type(e).__name__}: {e}")
        release_freed_memory()
        return outcomes, (time.perf_counter() - start) / len(members)

    def record(members: list[int], outcomes: list, seconds: float) -> None:
        for k, outcome in zip(members, outcomes):
            if isinstance(outcome, Exception):
                _mark_failed(dirs[k], outcome)
                results[k] = outcome
            else:
                _clear_failed(dirs[k])
                results[k] = {**outcome, "skipped": outcome.get("skipped", False), "seconds": seconds}
                results[k]["runs_in_program"] = len(members)
            if on_done:
                on_done(k, results[k])

    if programs_at_once == 1:
        for n, (members, why) in enumerate(programs, 1):
            record(members, *train_program(n, members, why))
    else:
        pool = concurrent.futures.ThreadPoolExecutor(programs_at_once, thread_name_prefix="program")
        try:
            started = {
                pool.submit(train_program, n, members, why): members for n, (members, why) in enumerate(programs, 1)
            }
            for future in concurrent.futures.as_completed(started):
                record(started[future], *future.result())
        finally:  # after an interrupt no program starts; those in flight end first (their runs resume later anyway)
            pool.shutdown(wait=False, cancel_futures=True)
    failed = [k for k, r in enumerate(results) if isinstance(r, Exception)]
    if failed and not keep_going:
        raise RunsFailedError(results, failed, dirs) from results[failed[0]]
    return results


def _test_auc(summary: dict, when: str) -> float | None:
    value = ((summary.get("test") or {}).get(when) or {}).get("auc")
    return value if isinstance(value, float) else None


def final_test_auc(summary: dict) -> float | None:
    """The test AUC at the run's last step (None when undefined or the run has no test split)."""
    return _test_auc(summary, "final")


def selected_test_auc(summary: dict) -> float | None:
    """The test AUC at the step selected on validation (never the best test AUC: that would select on test)."""
    return _test_auc(summary, "selected")


def test_steps_to_threshold(summary: dict) -> int | None:
    """The paper's convergence measure: first eval step with test AUC > the threshold (None if never)."""
    return (summary.get("test") or {}).get("steps_to_threshold")


def describe(summary: dict) -> str:
    """One progress line's worth of a run summary."""
    final, selected = final_test_auc(summary), selected_test_auc(summary)
    text = lambda v: f"{v:.4f}" if v is not None else "n/a"  # noqa: E731
    reached = test_steps_to_threshold(summary)
    threshold = summary.get("auc_threshold")
    when = f"step {reached}" if reached is not None else "not reached"
    took = "skipped (finished before)" if summary.get("skipped") else f"{summary.get('seconds', 0.0):.1f}s"
    return (
        f"test AUC final {text(final)}, at step {summary.get('selected_step')} (selected on validation) "
        f"{text(selected)}, test AUC > {threshold}: {when}, {took}"
    )
