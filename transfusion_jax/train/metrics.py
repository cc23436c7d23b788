"""Evaluation metrics on host-gathered arrays: AUC per class and mean (sklearn), and steps-to-threshold."""

from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def _auc_or_nan(targets: np.ndarray, scores: np.ndarray) -> float:
    """AUC, or NaN when only one class is present (AUC is undefined there, e.g. a rare label in a tiny split)."""
    if targets.size == 0 or np.unique(targets).size < 2:
        return float("nan")
    return float(roc_auc_score(targets, scores))


def per_class_auc(kind: str, scores: np.ndarray, labels: np.ndarray, label_mask: np.ndarray) -> np.ndarray:
    """AUC of each output, over valid rows only (callers drop padding first).

    softmax with 2 outputs: one AUC, of the positive class (the paper's binary moderate-DR AUC; class 0's AUC is the
    same number). softmax with C > 2: one-vs-rest AUC per class. sigmoid: per class, over rows where the label is
    known (`label_mask` = 1).
    """
    if kind == "softmax":
        if scores.shape[1] == 2:
            return np.array([_auc_or_nan(labels == 1, scores[:, 1])])
        return np.array([_auc_or_nan(labels == c, scores[:, c]) for c in range(scores.shape[1])])
    if kind == "sigmoid":
        keep = label_mask > 0
        return np.array([_auc_or_nan(labels[keep[:, c], c], scores[keep[:, c], c]) for c in range(scores.shape[1])])
    raise ValueError(f"Unknown loss kind {kind!r}.")


def auc_metrics(kind: str, label_names: Sequence[str], scores, labels, label_mask) -> dict[str, float]:
    """{'auc': mean over classes with a defined AUC, 'auc/<name>': each class}. Names come from the task."""
    aucs = per_class_auc(kind, scores, labels, label_mask)
    names = [label_names[-1]] if kind == "softmax" and scores.shape[1] == 2 else list(label_names)
    out = {f"auc/{name}": float(a) for name, a in zip(names, aucs)}
    out["auc"] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
    return out


def first_step_above(records: Iterable[dict], key: str, threshold: float) -> int | None:
    """The paper's convergence measure: the first eval step whose `key` is strictly above `threshold` ("train steps
    until AUC > 0.91"), or None. `records` are one split's evaluations; non-finite or missing values never count."""
    for record in sorted(records, key=lambda r: r["step"]):
        value = record.get(key)
        if isinstance(value, float) and np.isfinite(value) and value > threshold:
            return int(record["step"])
    return None


def accuracy_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy, plus top-5 when there are more than 5 classes (ImageNet pretraining reports top-5)."""
    out = {"accuracy": float(np.mean(np.argmax(scores, axis=1) == labels))}
    if scores.shape[1] > 5:
        top5 = np.argsort(-scores, axis=1)[:, :5]
        out["top5_accuracy"] = float(np.mean(np.any(top5 == labels[:, None], axis=1)))
    return out
