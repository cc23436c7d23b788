"""A training run's directory: the name of every file a run writes, in one place, and the test-score file's one
writer and reader. The trainer writes these files; sweeps, reports, analyses and the study read them by these names.

  config.json           the resolved config the run trained with
  metrics.jsonl         one record per (step, split): train means, validation and test metrics (train/writer.py)
  tensorboard/          the same records as TensorBoard events
  checkpoints/          orbax checkpoints, with the validation-selected one in checkpoints/best (train/checkpoint.py)
  init.npz              the variables step 1 started from (train/export.py's format): the analyses' "init"
  pretrained.npz        the final variables (with config.export_pretrained)
  train_subset.json     which training examples a small-data run used (data.subset_size)
  test_scores.npz       per-example test logits at the final (and validation-selected) step, with ids and labels
  test_scores_pending/  the logits of each new validation best, until the run ends
  summary.json          what the run measured; written last, so a run is finished when it exists
  FAILED                the error of a run that failed (experiments.runs), removed when it finishes

Paths are built with `os.path.join` or `etils.epath` (gs:// works with the latter), always from these names.
"""

import hashlib
import json
import os

import numpy as np
from etils import epath

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
INIT = "init.npz"
FINAL = "pretrained.npz"
TRAIN_SUBSET = "train_subset.json"
TEST_SCORES = "test_scores.npz"
PENDING_SCORES = "test_scores_pending"
SUMMARY = "summary.json"
FAILED = "FAILED"


def is_finished(workdir: str) -> bool:
    return os.path.exists(os.path.join(workdir, SUMMARY))


def read_summary(workdir: str) -> dict:
    with open(os.path.join(workdir, SUMMARY)) as f:
        return json.load(f)


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """Written whole or not at all (a temporary file renamed), so a kill never leaves a truncated file."""
    path = epath.Path(path)
    tmp = path.parent / f"{path.name}.tmp"
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


def load_npz(path) -> dict[str, np.ndarray]:
    with epath.Path(path).open("rb") as f, np.load(f, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def encode_ids(ids) -> np.ndarray:
    """Example ids as UTF-8 bytes (what test_scores.npz stores); already-encoded ids pass through."""
    ids = np.asarray(ids)
    return ids if ids.dtype.kind == "S" else np.char.encode(ids.astype(str), "utf-8")


def ids_digest(encoded_ids: np.ndarray) -> np.ndarray:
    """A digest of which examples, in which order: two sets of logits belong together only if theirs agree."""
    return np.array(hashlib.sha256(np.asarray(encoded_ids).tobytes()).hexdigest())


def write_test_scores(
    workdir,
    *,
    loss: str,
    label_names,
    final_step: int,
    final_logits: np.ndarray,
    ids,
    label: np.ndarray,
    label_mask: np.ndarray,
    selected_step: int | None = None,
    selected_logits: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """test_scores.npz, the one test-score file: per-example test logits at the final step (`final_logits`) and, when
    a step was selected on validation, at that step (`selected_logits`), with the examples' ids (UTF-8), labels and
    label masks and the task's loss kind and label names, so that runs scored on the same examples can be compared
    (DeLong). Returns the arrays written."""
    encoded = encode_ids(ids)
    arrays = {
        "id": encoded,
        "id_digest": ids_digest(encoded),
        "label": np.asarray(label),
        "label_mask": np.asarray(label_mask),
        "loss": np.array(loss),
        "label_names": np.array(label_names),
        "final_step": np.array(final_step),
        "final_logits": np.asarray(final_logits),
    }
    if selected_step is not None:
        arrays.update(selected_step=np.array(selected_step), selected_logits=np.asarray(selected_logits))
    save_npz(epath.Path(workdir) / TEST_SCORES, arrays)
    return arrays


def load_test_scores(workdir) -> dict[str, np.ndarray] | None:
    """A run's test_scores.npz as a dict of arrays, or None when it has none."""
    path = epath.Path(workdir) / TEST_SCORES
    return load_npz(path) if path.exists() else None
