"""Evaluation metrics on host-gathered arrays: AUC per class and mean (sklearn), calibration (expected calibration error
and reliability diagrams, equal-mass bins), and steps-to-threshold."""

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


# Guo et al. (2017) report ECE with 15 bins; with equal-mass bins each holds N / 15 examples (~16 on CheXpert's
# 234-image validation set, thousands on Retina's test set).
DEFAULT_CALIBRATION_BINS = 15


def _reported_outputs(kind: str, label_names, scores, labels, label_mask) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, predicted probability, 0/1 outcome) of each output AUC reports, over valid rows.

    softmax, 2 outputs: the positive class only (P(class 1) against label == 1). softmax, C > 2: each class one-vs-
    rest. sigmoid: each label over the rows where it is known (`label_mask` = 1).
    """
    if kind == "softmax":
        columns = [1] if scores.shape[1] == 2 else range(scores.shape[1])
        names = [label_names[-1]] if scores.shape[1] == 2 else list(label_names)
        return [(n, scores[:, c], (labels == c).astype(np.float64)) for n, c in zip(names, columns)]
    if kind == "sigmoid":
        keep = label_mask > 0
        return [(n, scores[keep[:, c], c], labels[keep[:, c], c]) for c, n in enumerate(label_names)]
    raise ValueError(f"Unknown loss kind {kind!r}.")


def reliability_bins(probs: np.ndarray, outcomes: np.ndarray, num_bins: int = DEFAULT_CALIBRATION_BINS) -> dict:
    """Equal-mass bins of predicted probabilities: per bin the mean probability ('confidence'), the observed rate of
    the outcome ('frequency') and the number of examples ('count'); and the expected calibration error
    ECE = sum_b count_b / N * |frequency_b - confidence_b|.

    Equal mass: the examples sorted by probability and cut into `num_bins` runs whose sizes differ by at most one,
    as in the adaptive calibration error of Nixon et al. (2019); equal-width bins would leave most bins nearly empty
    for a confident model. Equal probabilities never straddle a cut (a cut inside a run of ties moves to the run's
    start), so the result does not depend on the order of the examples; ties and fewer examples than bins give fewer,
    unequal bins. With distinct probabilities and N divisible by `num_bins` the bins are those of sklearn's
    `calibration_curve(strategy='quantile')`.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    probs, outcomes = np.asarray(probs, np.float64).ravel(), np.asarray(outcomes, np.float64).ravel()
    if probs.shape != outcomes.shape:
        raise ValueError(f"probs and outcomes differ in size: {probs.size} vs {outcomes.size}.")
    order = np.argsort(probs, kind="stable")
    ranked = probs[order]
    nominal = [len(b) for b in np.array_split(ranked, min(num_bins, max(probs.size, 1)))]
    cuts = np.unique(np.searchsorted(ranked, ranked[np.cumsum(nominal)[:-1]], side="left"))
    bins = [b for b in np.split(order, cuts) if b.size]
    confidence = [float(probs[b].mean()) for b in bins]
    frequency = [float(outcomes[b].mean()) for b in bins]
    count = [int(b.size) for b in bins]
    gaps = np.abs(np.subtract(frequency, confidence))
    ece = float(np.dot(count, gaps) / probs.size) if probs.size else float("nan")
    return {"confidence": confidence, "frequency": frequency, "count": count, "ece": ece}


def reliability_diagram(
    kind: str, label_names, scores, labels, label_mask, num_bins: int = DEFAULT_CALIBRATION_BINS
) -> dict[str, dict]:
    """{output name: `reliability_bins`} for each output AUC reports (the positive class of a binary softmax)."""
    return {
        name: reliability_bins(p, y, num_bins)
        for name, p, y in _reported_outputs(kind, label_names, scores, labels, label_mask)
    }


def ece_metrics(diagram: dict[str, dict]) -> dict[str, float]:
    """{'ece': mean over outputs with a defined ECE, 'ece/<name>': each output} of a `reliability_diagram`, named
    like the AUC keys."""
    out = {f"ece/{name}": d["ece"] for name, d in diagram.items()}
    eces = np.array(list(out.values()))
    out["ece"] = float(np.nanmean(eces)) if np.isfinite(eces).any() else float("nan")
    return out


def first_step_above(records: Iterable[dict], key: str, threshold: float) -> int | None:
    """The paper's convergence measure (docs/paper.md §7): the first eval step whose `key` is strictly above
    `threshold` ("train steps until AUC > 0.91"), or None. `records` are one split's evaluations; non-finite or
    missing values never count."""
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
