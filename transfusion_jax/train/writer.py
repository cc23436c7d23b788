"""Metrics to TensorBoard (tensorboardX) and to workdir/metrics.jsonl, one JSON record per (step, split).

Only process 0 writes. After a resume from step S, records past S are dropped (`truncate_after`), so a run killed
and restarted leaves the same file as an unbroken one.
"""

import json
import math
import re

import numpy as np
from etils import epath
from tensorboardX import SummaryWriter


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
    def __init__(self, workdir, enabled: bool = True):
        self.enabled = enabled
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard")) if enabled else None

    def records(self) -> list[dict]:
        return read_records(self.path) if self.enabled else []

    def truncate_after(self, step: int) -> None:
        if self.enabled:
            kept = [r for r in read_records(self.path) if r["step"] <= step]
            self.path.write_text("".join(dumps(r) + "\n" for r in kept))

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(dumps(record) + "\n")
        for key, value in metrics.items():
            self._tb.add_scalar(tensorboard_tag(split, key), float(value), int(step))
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
