"""Intervals and verdicts for the paper's claims: paired differences over seeds, DeLong's covariance of correlated
AUCs on shared test examples, and a three-way verdict read from an interval and an equivalence margin.

Pure NumPy/SciPy functions of numbers the runs recorded; nothing here reads files.

Choices (where the field offers several):
- Over seeds, a t interval of the paired differences (run A and run B of one seed share the data order, the
  augmentation draws, the small-data subset and the head's init): with the 3-5 seeds such studies afford, a
  bootstrap over seeds has too few distinct resamples to be trusted, and the t quantile widens the interval for
  the variance being estimated from so few values.
- Over test examples, DeLong et al. (1988) in the fast midrank form of Sun & Xu (2014): exact for the covariance of
  several AUCs measured on the same examples, so the correlation between two models' errors on the same images is
  used rather than ignored (an unpaired comparison would overstate the uncertainty).
- An AUC difference averaged over seeds gets both variances: the seeds' spread (training randomness) and DeLong's
  variance of the seed-averaged contrast (which images happen to be in the test set). The seeds' spread already
  carries part of the test-set noise, so the sum is slightly conservative. The t quantile with n - 1 degrees of
  freedom is used for the sum, which is conservative too.
- Verdicts never come from a point estimate: an interval entirely inside (-margin, +margin) means "equivalent",
  entirely above +margin "better", entirely below -margin "worse", anything else "inconclusive".
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95

OUTCOMES = ("better", "worse", "equivalent", "inconclusive")
# What each kind of claim about a difference A - B expects, and what would contradict it.
CLAIMS = {
    "equivalent": ("equivalent", ("better", "worse")),  # "A and B perform comparably"
    "greater": ("better", ("equivalent", "worse")),  # "A helps" (by more than the margin)
    "less": ("worse", ("equivalent", "better")),  # "A needs fewer steps"
}


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided interval; `low`/`high` are None where no interval exists (n < 2)."""

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    method: str

    @property
    def defined(self) -> bool:
        return self.low is not None and self.high is not None


def t_interval(
    values: Sequence[float], confidence: float = CONFIDENCE, extra_variance: float = 0.0, method: str = "t over seeds"
) -> Interval:
    """mean ± t_{(1+c)/2, n-1} sqrt(s^2 / n + extra_variance), s the sample std (ddof 1): the t interval of a mean,
    widened by an independent variance of the mean from elsewhere (e.g. DeLong's over test examples)."""
    x = np.asarray(values, np.float64)
    n = x.size
    if n == 0:
        return Interval(None, None, None, 0, method)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, None, None, 1, f"{method} (one value: no interval)")
    half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * math.sqrt(x.var(ddof=1) / n + extra_variance)
    return Interval(mean, float(mean - half), float(mean + half), n, method)


def paired(a: Mapping, b: Mapping) -> tuple[list, list, list]:
    """(keys present with a value in both, a's values, b's values) in sorted key order; e.g. runs keyed by seed."""
    keys = sorted(k for k in a.keys() & b.keys() if a[k] is not None and b[k] is not None)
    return keys, [a[k] for k in keys], [b[k] for k in keys]


# ------------------------------------------------------------------------------------------------------- DeLong


def delong(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs [k], covariance [k, k]) of k score vectors `scores` [k, N] on the same N examples with boolean
    `labels` [N]: Sun & Xu's midrank form of DeLong's structural components. Ties count one half, as in
    sklearn's roc_auc_score."""
    labels = np.asarray(labels).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    positives, negatives = scores[:, labels], scores[:, ~labels]
    m, n = positives.shape[1], negatives.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positive and 2 negative examples, got {m} and {n}.")
    rank_pos = scipy_stats.rankdata(positives, axis=1)
    rank_neg = scipy_stats.rankdata(negatives, axis=1)
    rank_all = scipy_stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    aucs = (rank_all[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v10 = (rank_all[:, :m] - rank_pos) / n  # per positive: the share of negatives it outranks
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m  # per negative: the share of positives that outrank it
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def auc_contrast(
    labels: np.ndarray,
    groups: Sequence[Sequence[np.ndarray]],
    coefficients: Sequence[float],
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean over seeds of sum_g c_g AUC(groups[g][s]), all on the same test examples: e.g. a difference (A - B,
    coefficients (1, -1)) or a difference of differences ([A - B] on one data size - [A - B] on another, (1, -1,
    -1, 1)). Every group holds one score vector per seed, in the same seed order. Interval: the t interval of the
    per-seed contrasts widened by DeLong's variance of their mean over test examples (module docstring), from the
    joint covariance of every AUC involved; with one seed only DeLong's part exists (a normal interval that ignores
    training randomness, marked as such)."""
    if len(groups) != len(coefficients) or not groups:
        raise ValueError(f"Need one coefficient per group, got {len(groups)} groups and {len(coefficients)}.")
    n = len(groups[0])
    if n == 0 or any(len(g) != n for g in groups):
        raise ValueError(f"Every group needs the same number (> 0) of runs, got {[len(g) for g in groups]}.")
    aucs, cov = delong(labels, np.stack([scores for group in groups for scores in group]))
    per_group = aucs.reshape(len(groups), n)
    contrasts = np.asarray(coefficients, np.float64) @ per_group
    weights = np.repeat(np.asarray(coefficients, np.float64) / n, n)
    example_variance = float(max(weights @ cov @ weights, 0.0))
    if n >= 2:
        return t_interval(contrasts, confidence, example_variance, method="t over seeds + DeLong over test examples")
    half = scipy_stats.norm.ppf((1 + confidence) / 2) * math.sqrt(example_variance)
    mean = float(contrasts[0])
    return Interval(mean, mean - half, mean + half, 1, "DeLong over test examples only (one seed)")


def averaged_auc_difference(
    labels: np.ndarray,
    scores_a: Sequence[np.ndarray],
    scores_b: Sequence[np.ndarray],
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean over seed pairs of AUC(a_i) - AUC(b_i), all on the same test examples (`auc_contrast` with
    coefficients (1, -1))."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError(f"Need the same number (> 0) of runs on both sides, got {len(scores_a)} and {len(scores_b)}.")
    return auc_contrast(labels, [scores_a, scores_b], [1.0, -1.0], confidence)


# ----------------------------------------------------------------------------------------------------- verdicts


# Which outcomes stay valid when the differences are only bounds (censored steps-to-threshold): an upper bound on
# A - B (B never reached the threshold, so its true value is larger) can only show that A is "worse" (fewer steps).
_VALID_UNDER_BOUND = {None: set(OUTCOMES), "upper": {"worse"}, "lower": {"better"}, "both": set()}


def outcome(interval: Interval, margin: float, bound: str | None = None) -> str:
    """'better' / 'worse' / 'equivalent' / 'inconclusive' for a difference A - B, from its interval only; with
    `bound` (see `verdict`), an outcome that bounds cannot establish is 'inconclusive'."""
    found = _zone(interval, margin)
    return found if found in _VALID_UNDER_BOUND[bound] else "inconclusive"


def _zone(interval: Interval, margin: float) -> str:
    if not interval.defined:
        return "inconclusive"
    if interval.low > margin:
        return "better"
    if interval.high < -margin:
        return "worse"
    if -margin <= interval.low and interval.high <= margin:
        return "equivalent"
    return "inconclusive"


def verdict(interval: Interval, margin: float, claim: str, bound: str | None = None) -> tuple[str, str]:
    """('supported' | 'contradicted' | 'inconclusive', why) for a claim about A - B ('equivalent', 'greater' or
    'less' than B), read from the interval and the margin; `why` is the interval's outcome ('better', 'worse',
    'equivalent', 'inconclusive') or the reason no outcome counts. `bound`: the differences are only upper / lower
    bounds of the true ones (censored values), so only the outcomes that bounds can still establish count. An
    interval from one seed never gives a verdict: training randomness is unknown."""
    expected, contrary = CLAIMS[claim]
    if interval.n < 2:
        return "inconclusive", f"{interval.n} seed pair(s): training variance unknown"
    found = _zone(interval, margin)
    if found not in _VALID_UNDER_BOUND[bound]:
        return "inconclusive", f"censored runs ({bound} bound): {found} cannot be concluded"
    if found == expected:
        return "supported", found
    if found in contrary:
        return "contradicted", found
    return "inconclusive", found
