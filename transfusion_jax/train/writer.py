"""Metrics to workdir/metrics.jsonl, one JSON record per (step, split), and to TensorBoard (tensorboardX).

Only process 0 writes. metrics.jsonl is the record; TensorBoard is a view of it. A run that starts at step S
(0 for a fresh start, also after a kill before the first checkpoint) keeps the records up to S, replaced
atomically, and rebuilds TensorBoard from them into one fresh event file. A run killed and restarted therefore
leaves the same metrics.jsonl as an unbroken one, and TensorBoard holds each (tag, step) once. The rebuilt points
carry the time of the rebuild as their wall time (metrics.jsonl keeps no wall times).
"""

import json
import math
import re

import numpy as np
from etils import epath

from transfusion_jax.train import rundir

_EVENT_FILE_PREFIX = "events.out.tfevents."


def strict_json(value):
    """`value` with every non-finite float replaced by None, recursively: standard JSON has no NaN or Infinity
    (json.dumps would write bare `NaN`, which strict parsers reject), so an undefined metric is written as null."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def dumps(value, **kwargs) -> str:
    """Standard JSON (NaN -> null); raises rather than ever writing NaN."""
    return json.dumps(strict_json(value), allow_nan=False, **kwargs)


def tensorboard_tag(split: str, key: str) -> str:
    """TensorBoard accepts [A-Za-z0-9_./-] in tags; class names like 'grade >= 2' or 'Pleural Effusion' are not."""
    return re.sub(r"[^A-Za-z0-9_./-]+", "_", f"{split}/{key}")


def read_records(path) -> list[dict]:
    """Records of a metrics.jsonl; a line cut short by a kill is skipped."""
    path = epath.Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricWriter:
    """Writes records of a run that starts at `start_step`, after dropping every record past it (see above)."""

    def __init__(self, workdir, *, start_step: int, enabled: bool = True):
        self.enabled = enabled
        self.path = epath.Path(workdir) / rundir.METRICS
        self._tb = None
        if not enabled:
            return
        # Imported by the writing process only: tensorboardX imports torch whenever torch is installed (seconds).
        from tensorboardX import SummaryWriter

        kept = [r for r in read_records(self.path) if r["step"] <= start_step]
        staging = self.path.with_name(self.path.name + ".tmp")
        staging.write_text("".join(dumps(r) + "\n" for r in kept))
        staging.replace(self.path)
        tb_dir = epath.Path(workdir) / rundir.TENSORBOARD
        if tb_dir.exists():
            for event_file in tb_dir.glob(_EVENT_FILE_PREFIX + "*"):
                event_file.unlink()
        self._tb = SummaryWriter(str(tb_dir))
        for record in kept:
            self._add_scalars(
                record["step"], record["split"], {k: v for k, v in record.items() if k not in ("step", "split")}
            )
        self._tb.flush()

    def records(self) -> list[dict]:
        return read_records(self.path) if self.enabled else []

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(dumps(record) + "\n")
        self._add_scalars(step, split, metrics)
        self._tb.flush()

    def _add_scalars(self, step: int, split: str, metrics: dict) -> None:
        for key, value in metrics.items():  # a null in metrics.jsonl is an undefined metric: NaN in TensorBoard
            self._tb.add_scalar(tensorboard_tag(split, key), math.nan if value is None else float(value), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
