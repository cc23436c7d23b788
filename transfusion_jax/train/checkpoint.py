"""Checkpoints with orbax: `latest/` (every N steps, keep K; what a restart resumes from) and `best/` (best eval
AUC, keep 1), each step verified by a checksum manifest on restore.

Crash safety, in layers:
- Orbax writes a step into a temporary directory and renames it when every process has written its part, so a
  SIGKILL at any moment leaves either a whole step directory or none.
- After that rename, process 0 hashes every file of the step into `<step>/checksums.json` (in a background
  thread, so training goes on). A step without it never finished saving; one whose files differ from it (a
  truncated or missing file, a flipped byte, a deleted folder) was damaged afterwards.
- On start, process 0 verifies the newest steps first; unfinished and damaged ones are moved to
  `checkpoints/damaged/` (kept for inspection, not deleted) with a warning naming what is wrong, and the run
  resumes from the newest intact step. An unfinished step counts as no checkpoint (as an orbax temporary folder
  does): with nothing older the run starts from the beginning, which reproduces the same result. If steps
  finished saving but none is intact, the run stops with `CheckpointError`, changing nothing: something damaged
  them, and a person should look before hours of training are redone.
- The step to resume from is broadcast from process 0, so every process restores the same one.

Hashes are SHA-256 from hashlib: orbax/tensorstore keep no content checksum that survives a flipped byte.
The two managers have distinct orbax barrier prefixes: without them a best and a periodic save at the same step
of a multi-process job wait on each other's barrier forever.
Saves start one at a time in a process (`_SAVE_START`), though they finish in the background side by side: orbax
keys a save's signals by an operation id that is one counter for the whole process, read back while the save sets
itself up, so two saves starting at once in two threads (programs trained side by side) take each other's id; one
then waits for a signal sent under the other's (a `TimeoutError` after 300 s) or removes the other's folder.
"""

import hashlib
import json
import logging
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from transfusion_jax.train import rundir

CHECKSUM_FILE = "checksums.json"
_CHUNK = 1 << 20
_SAVE_START = threading.Lock()


class CheckpointError(RuntimeError):
    """No checkpoint in the workdir can be trusted; the run stops before changing anything."""


def same_on_all_processes(value):
    """Process 0's `value` (a NumPy-compatible scalar or array) on every process: a decision that leads to a
    collective (save, save best, stop) must be taken by all processes together or the job hangs."""
    if jax.process_count() == 1:
        return np.asarray(value)
    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def _files(directory: epath.Path) -> list[str]:
    """Relative paths of every file under `directory`, sorted, without the checksum manifest itself."""
    found = []
    pending = [directory]
    while pending:
        for entry in pending.pop().iterdir():
            if entry.is_dir():
                pending.append(entry)
            elif entry.name != CHECKSUM_FILE or entry.parent != directory:
                found.append(str(entry.relative_to(directory)))
    return sorted(found)


def _sha256(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(step_dir) -> None:
    """Writes `step_dir/checksums.json`: size and SHA-256 of every file of a finished checkpoint step."""
    step_dir = epath.Path(step_dir)
    files = {
        name: {"bytes": (step_dir / name).stat().length, "sha256": _sha256(step_dir / name)}
        for name in _files(step_dir)
    }
    staging = step_dir / (CHECKSUM_FILE + ".tmp")
    staging.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1, sort_keys=True))
    staging.rename(step_dir / CHECKSUM_FILE)


def verify(step_dir) -> str | None:
    """None if every file of the checkpoint step matches its checksum manifest, else what is wrong, in words."""
    step_dir = epath.Path(step_dir)
    manifest_path = step_dir / CHECKSUM_FILE
    if not step_dir.is_dir():
        return "the step folder is missing"
    if not manifest_path.exists():
        return f"it has no {CHECKSUM_FILE} (its save never finished)"
    try:
        expected = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"its {CHECKSUM_FILE} is unreadable ({e})"
    present = set(_files(step_dir))
    missing = sorted(set(expected) - present)
    for name in missing:  # a deleted folder is named as such, not as the list of files it held
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if not (step_dir / folder).exists():
                return f"folder {folder}/ is missing"
    if missing:
        return f"{missing[0]} is missing" + (f" (and {len(missing) - 1} more files)" if len(missing) > 1 else "")
    for name, want in sorted(expected.items()):
        size = (step_dir / name).stat().length
        if size < want["bytes"]:
            return f"{name} is truncated ({size} of {want['bytes']} bytes)"
        if size > want["bytes"]:
            return f"{name} has {size} bytes, {want['bytes']} expected"
        if _sha256(step_dir / name) != want["sha256"]:
            return f"{name} does not match its checksum (its content changed)"
    return None


def _steps(directory: epath.Path) -> list[int]:
    """Finished orbax step folders (named by the step number), newest first."""
    if not directory.exists():
        return []
    return sorted((int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)


def _quarantine(step_dir: epath.Path, damaged_root: epath.Path) -> epath.Path:
    """Moves a bad step out of its manager's folder (orbax would list it, and refuse to save that step again)."""
    damaged_root.mkdir(parents=True, exist_ok=True)
    target = damaged_root / f"{step_dir.parent.name}_{step_dir.name}"
    suffix = 1
    while target.exists():
        suffix += 1
        target = damaged_root / f"{step_dir.parent.name}_{step_dir.name}.{suffix}"
    step_dir.rename(target)
    return target


def _recover(root: epath.Path) -> int:
    """Process 0's pass over the checkpoints before the managers open them; returns the step to resume from (0:
    the beginning). Moves unfinished and damaged steps aside, drops best steps newer than the resume step (the
    resumed run recomputes them, exactly), raises CheckpointError if steps finished saving but none is intact."""
    latest_dir, best_dir, damaged_dir = root / "latest", root / "best", root / "damaged"
    step, unfinished, damaged = None, [], []
    for candidate in _steps(latest_dir):
        if not (latest_dir / str(candidate) / CHECKSUM_FILE).exists():
            unfinished.append(candidate)  # killed between orbax's rename and the checksum: never a checkpoint
        elif (problem := verify(latest_dir / str(candidate))) is not None:
            damaged.append((candidate, problem))
        else:
            step = candidate
            break
    if damaged and step is None:
        listed = "; ".join(f"step {s}: {p}" for s, p in damaged)
        raise CheckpointError(
            f"No intact checkpoint in {latest_dir} ({listed}). To start fresh, move {root} away or use a new --workdir."
        )
    resume = f"step {step}" if step is not None else "the beginning"
    for bad_step in unfinished:
        moved = _quarantine(latest_dir / str(bad_step), damaged_dir)
        logging.warning(
            "Checkpoint step %d never finished saving (no %s). Moved it to %s; resuming from %s.",
            bad_step,
            CHECKSUM_FILE,
            moved,
            resume,
        )
    for bad_step, problem in damaged:
        moved = _quarantine(latest_dir / str(bad_step), damaged_dir)
        logging.warning(
            "Checkpoint step %d is damaged: %s. Moved it to %s; resuming from %s.", bad_step, problem, moved, resume
        )
    step = step or 0
    for best_step in _steps(best_dir):
        if best_step > step:
            (best_dir / str(best_step)).rmtree()
        elif (problem := verify(best_dir / str(best_step))) is not None:
            moved = _quarantine(best_dir / str(best_step), damaged_dir)
            logging.warning(
                "Best checkpoint step %d is unusable: %s. Moved it to %s; best/ stays empty until an evaluation "
                "beats the best AUC recorded so far.",
                best_step,
                problem,
                moved,
            )
    return step


class Checkpointer:
    """Opens `workdir/checkpoints` after recovering it (see the module docstring); `start_step` is where the run
    resumes (0 for a fresh run), identical on every process."""

    def __init__(self, workdir, keep: int, keep_best: int):
        root = epath.Path(workdir) / rundir.CHECKPOINTS
        self._lead = jax.process_index() == 0
        start, error = 0, None
        if self._lead:
            try:
                start = _recover(root)
            except CheckpointError as e:
                error = e
        start, failed = (int(v) for v in same_on_all_processes(np.array([start, error is not None])))
        if error is not None:
            raise error
        if failed:
            raise CheckpointError(f"Process 0 found no intact checkpoint in {root}; see its log.")
        self.start_step = start
        self.latest = ocp.CheckpointManager(root / "latest", options=self._options("latest", max_to_keep=keep))
        self.best = ocp.CheckpointManager(
            root / "best",
            options=self._options(
                "best",
                max_to_keep=keep_best,
                best_fn=lambda metrics: metrics["auc"],
                best_mode="max",
                keep_checkpoints_without_metrics=False,
            ),
        )
        self._checksum_threads: dict[str, threading.Thread] = {}
        self._checksum_errors: list[BaseException] = []

    @staticmethod
    def _options(name: str, **kwargs) -> ocp.CheckpointManagerOptions:
        return ocp.CheckpointManagerOptions(
            create=True,
            cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name),
            **kwargs,
        )

    def restore(self, step: int, like):
        """(state, loop) at `step`: the state with the shapes, dtypes and shardings of `like`, and the loop's
        bookkeeping dict saved with it (e.g. the best AUC so far)."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        state = self.latest.restore(step, args=ocp.args.StandardRestore(abstract))
        return state, dict(self.latest.metadata(step).custom_metadata or {})

    def save(self, step: int, state, loop: dict) -> None:
        """Saves `state` and the loop's JSON-able bookkeeping `loop` (restored with it) at `step`."""
        self._start_save(self.latest, step, state, custom_metadata=loop)

    def save_best(self, step: int, state, auc: float) -> None:
        self._start_save(self.best, step, state, metrics={"auc": float(auc)})

    def _start_save(self, manager, step: int, state, **kwargs) -> None:
        self._join_checksum(manager)
        with _SAVE_START:
            saved = manager.save(step, args=ocp.args.StandardSave(state), **kwargs)
        if saved and self._lead:
            thread = threading.Thread(target=self._checksum_when_finished, args=(manager, step), daemon=True)
            self._checksum_threads[str(manager.directory)] = thread
            thread.start()

    def _checksum_when_finished(self, manager, step: int) -> None:
        try:
            manager.wait_until_finished()  # on process 0 this returns after the step folder's final rename
            write_checksums(manager.directory / str(step))
        except BaseException as e:  # re-raised in the main thread by _join_checksum
            self._checksum_errors.append(e)

    def _join_checksum(self, manager) -> None:
        thread = self._checksum_threads.pop(str(manager.directory), None)
        if thread is not None:
            thread.join()
        if self._checksum_errors:
            raise self._checksum_errors.pop()

    def close(self) -> None:
        for manager in (self.latest, self.best):
            manager.wait_until_finished()
            self._join_checksum(manager)
            manager.close()
