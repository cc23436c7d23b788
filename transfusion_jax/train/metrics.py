"""Evaluation metrics on host-gathered logits: AUC per class and mean (sklearn), calibration (Guo et al.'s expected
calibration error with its reliability diagram, and Nixon et al.'s adaptive calibration error), and
steps-to-threshold.

Everything starts from the logits, in float64 on the host: AUC ranks log-odds (float32 probabilities of confident
examples round to exactly 0 or 1 and would tie), calibration reads probabilities computed from them."""

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import special
from sklearn.metrics import roc_auc_score


def ranking_scores(kind: str, logits: np.ndarray) -> np.ndarray:
    """What AUC ranks, one column per AUC the task reports, in float64: the log-odds of each output.

    softmax with 2 outputs: one column, logit_1 - logit_0 (the log-odds of class 1). softmax with C > 2: per class
    c, logit_c - logsumexp(the other logits) (one-vs-rest log-odds, monotone in the probability of c). sigmoid: the
    logits. These order examples exactly as the probabilities do, without the ties float32 probabilities make."""
    logits = np.asarray(logits, np.float64)
    if kind == "softmax":
        if logits.shape[1] == 2:
            return logits[:, 1:] - logits[:, :1]
        others = [np.delete(logits, c, axis=1) for c in range(logits.shape[1])]
        return np.stack([logits[:, c] - special.logsumexp(o, axis=1) for c, o in enumerate(others)], axis=1)
    if kind == "sigmoid":
        return logits
    raise ValueError(f"Unknown loss kind {kind!r}.")


def probabilities(kind: str, logits: np.ndarray) -> np.ndarray:
    """Class probabilities (softmax) or per-class probabilities (sigmoid) of the logits, in float64."""
    logits = np.asarray(logits, np.float64)
    if kind == "softmax":
        return special.softmax(logits, axis=1)
    if kind == "sigmoid":
        return special.expit(logits)
    raise ValueError(f"Unknown loss kind {kind!r}.")


def _auc_or_nan(targets: np.ndarray, scores: np.ndarray) -> float:
    """AUC, or NaN when only one class is present (AUC is undefined there, e.g. a rare label in a tiny split)."""
    if targets.size == 0 or np.unique(targets).size < 2:
        return float("nan")
    return float(roc_auc_score(targets, scores))


def auc_inputs(kind: str, logits: np.ndarray, labels: np.ndarray, label_mask: np.ndarray) -> list[tuple]:
    """(binary targets, ranking scores) behind each AUC the task reports, over valid rows (callers drop padding
    first): the positive class of a 2-output softmax (the paper's binary moderate-DR AUC; class 0's AUC is the same
    number), each class one-vs-rest of a C > 2 softmax, each label over the rows where it is known (`label_mask` =
    1) of a sigmoid task."""
    ranks = ranking_scores(kind, logits)
    if kind == "softmax":
        if ranks.shape[1] == 1:
            return [(labels == 1, ranks[:, 0])]
        return [(labels == c, ranks[:, c]) for c in range(ranks.shape[1])]
    keep = label_mask > 0
    return [(labels[keep[:, c], c] > 0.5, ranks[keep[:, c], c]) for c in range(ranks.shape[1])]


def per_class_auc(kind: str, logits: np.ndarray, labels: np.ndarray, label_mask: np.ndarray) -> np.ndarray:
    """AUC of each output `auc_inputs` names."""
    return np.array([_auc_or_nan(t, s) for t, s in auc_inputs(kind, logits, labels, label_mask)])


def _auc_names(kind: str, label_names: Sequence[str], logits) -> list[str]:
    return [label_names[-1]] if kind == "softmax" and np.shape(logits)[1] == 2 else list(label_names)


def auc_metrics(kind: str, label_names: Sequence[str], logits, labels, label_mask) -> dict[str, float]:
    """{'auc': mean over classes with a defined AUC, 'auc/<name>': each class}. Names come from the task."""
    aucs = per_class_auc(kind, logits, labels, label_mask)
    out = {f"auc/{name}": float(a) for name, a in zip(_auc_names(kind, label_names, logits), aucs)}
    out["auc"] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
    return out


# Guo et al. (2017) report ECE with 15 equal-width bins; the adaptive error (ACE) uses as many equal-mass bins,
# each holding N / 15 examples (~16 on CheXpert's 234-image validation set, thousands on Retina's test set).
DEFAULT_CALIBRATION_BINS = 15
STRATEGIES = ("uniform", "quantile")


def calibration_bins(
    confidence: np.ndarray, outcomes: np.ndarray, num_bins: int = DEFAULT_CALIBRATION_BINS, strategy: str = "uniform"
) -> dict:
    """Binned calibration: per non-empty bin the mean forecast ('confidence'), the observed rate of the outcome
    ('frequency') and the number of examples ('count'); and error = sum_b count_b / N * |frequency_b - confidence_b|.

    strategy='uniform': equal-width bins ((m-1)/M, m/M] of [0, 1], as Guo et al.'s ECE and sklearn's
    `calibration_curve(strategy='uniform')` (a forecast on an edge belongs to the lower bin).
    strategy='quantile': equal-mass bins, as Nixon et al.'s adaptive calibration error: the examples sorted by
    forecast and cut into `num_bins` runs whose sizes differ by at most one. Equal forecasts never straddle a cut (a
    cut inside a run of ties moves to the run's start), so the result does not depend on the order of the examples;
    ties and fewer examples than bins give fewer, unequal bins. With distinct forecasts and N divisible by
    `num_bins` the bins are those of `calibration_curve(strategy='quantile')`.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}.")
    probs, outcomes = np.asarray(confidence, np.float64).ravel(), np.asarray(outcomes, np.float64).ravel()
    if probs.shape != outcomes.shape:
        raise ValueError(f"Forecasts and outcomes differ in size: {probs.size} vs {outcomes.size}.")
    if strategy == "uniform":
        ids = np.searchsorted(np.linspace(0.0, 1.0, num_bins + 1)[1:-1], probs, side="left")
        bins = [np.flatnonzero(ids == b) for b in range(num_bins)]
    else:
        order = np.argsort(probs, kind="stable")
        ranked = probs[order]
        nominal = [len(b) for b in np.array_split(ranked, min(num_bins, max(probs.size, 1)))]
        cuts = np.unique(np.searchsorted(ranked, ranked[np.cumsum(nominal)[:-1]], side="left"))
        bins = np.split(order, cuts)
    bins = [b for b in bins if b.size]
    mean_forecast = [float(probs[b].mean()) for b in bins]
    frequency = [float(outcomes[b].mean()) for b in bins]
    count = [int(b.size) for b in bins]
    gaps = np.abs(np.subtract(frequency, mean_forecast))
    error = float(np.dot(count, gaps) / probs.size) if probs.size else float("nan")
    return {"confidence": mean_forecast, "frequency": frequency, "count": count, "error": error}


def top_label_outputs(kind: str, label_names, logits, labels, label_mask) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, confidence of the predicted label, whether it is right) of each decision the task makes, over valid
    rows: a softmax task's top label ('top_label': the largest probability against argmax == label, as Guo et al.);
    a sigmoid task's each label as a binary decision (predicted present when its probability exceeds 1/2; confidence
    max(p, 1 - p)), over the rows where it is known."""
    probs = probabilities(kind, logits)
    if kind == "softmax":
        return [("top_label", probs.max(axis=1), np.argmax(probs, axis=1) == labels)]
    keep = label_mask > 0
    out = []
    for c, name in enumerate(label_names):
        p, y = probs[keep[:, c], c], labels[keep[:, c], c] > 0.5
        out.append((name, np.maximum(p, 1.0 - p), (p > 0.5) == y))
    return out


def class_outputs(kind: str, label_names, logits, labels, label_mask) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, probability, 0/1 outcome) of each output AUC reports, over valid rows: the positive class of a
    2-output softmax, each class one-vs-rest of a larger softmax, each label where it is known (sigmoid)."""
    probs = probabilities(kind, logits)
    names = _auc_names(kind, label_names, logits)
    if kind == "softmax":
        columns = [1] if probs.shape[1] == 2 else range(probs.shape[1])
        return [(n, probs[:, c], (labels == c).astype(np.float64)) for n, c in zip(names, columns)]
    keep = label_mask > 0
    return [(n, probs[keep[:, c], c], labels[keep[:, c], c]) for c, n in enumerate(names)]


def reliability_diagram(
    kind: str, label_names, logits, labels, label_mask, num_bins: int = DEFAULT_CALIBRATION_BINS
) -> dict[str, dict]:
    """Guo et al.'s reliability diagram: {decision name: `calibration_bins` of its top-label confidence against
    its accuracy, equal-width bins} for each of `top_label_outputs`; each entry's 'error' is its ECE."""
    return {
        name: calibration_bins(conf, right, num_bins, "uniform")
        for name, conf, right in top_label_outputs(kind, label_names, logits, labels, label_mask)
    }


def _mean_over(prefix: str, per_output: dict[str, float]) -> dict[str, float]:
    out = {f"{prefix}/{name}": value for name, value in per_output.items()}
    values = np.array(list(per_output.values()))
    out[prefix] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


def calibration_metrics(
    kind: str, label_names, logits, labels, label_mask, num_bins: int = DEFAULT_CALIBRATION_BINS
) -> tuple[dict[str, float], dict[str, dict]]:
    """(metrics, reliability diagram). metrics: 'ece' (Guo et al. 2017: top-label confidence, `num_bins`
    equal-width bins; what papers report as ECE) and 'ace' (Nixon et al. 2019's adaptive calibration error: each
    output AUC reports, its probability against its outcome in `num_bins` equal-mass bins, less noisy when a
    confident model leaves most equal-width bins empty), each the mean over outputs with '/<name>' per output."""
    diagram = reliability_diagram(kind, label_names, logits, labels, label_mask, num_bins)
    ace = {
        name: calibration_bins(p, y, num_bins, "quantile")["error"]
        for name, p, y in class_outputs(kind, label_names, logits, labels, label_mask)
    }
    metrics = {**_mean_over("ece", {k: d["error"] for k, d in diagram.items()}), **_mean_over("ace", ace)}
    return metrics, diagram


def first_step_above(records: Iterable[dict], key: str, threshold: float) -> int | None:
    """The paper's convergence measure (docs/paper.md §7): the first eval step whose `key` is strictly above
    `threshold` ("train steps until AUC > 0.91"), or None. `records` are one split's evaluations; non-finite or
    missing values never count."""
    for record in sorted(records, key=lambda r: r["step"]):
        value = record.get(key)
        if isinstance(value, float) and np.isfinite(value) and value > threshold:
            return int(record["step"])
    return None


def accuracy_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy, plus top-5 when there are more than 5 classes (ImageNet pretraining reports top-5)."""
    out = {"accuracy": float(np.mean(np.argmax(logits, axis=1) == labels))}
    if logits.shape[1] > 5:
        top5 = np.argsort(-np.asarray(logits), axis=1)[:, :5]
        out["top5_accuracy"] = float(np.mean(np.any(top5 == labels[:, None], axis=1)))
    return out
