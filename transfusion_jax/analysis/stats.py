"""Intervals and verdicts for the paper's claims: paired differences over seeds, AUC contrasts over seeds and
shared test examples, steps to threshold seen on an evaluation grid, similarity contrasts over pairs of runs, and
a three-way verdict read from an interval and an equivalence margin.

Pure NumPy/SciPy functions of numbers the runs recorded; nothing here reads files. docs/statistics.md derives
each interval and gives the simulations (tests/analysis/test_stats_coverage.py) that show its coverage.

Choices (where the field offers several):
- Over seeds, a t interval of the paired differences (run A and run B of one seed share the data order, the
  augmentation draws, the small-data subset and the head's init): with the 3-5 seeds such studies afford, a
  bootstrap over seeds has too few distinct resamples to be trusted, and the t quantile widens the interval for
  the variance being estimated from so few values.
- Over test examples, DeLong et al. (1988) with structural components counted along one sort (the idea of Sun &
  Xu, 2014): exact for the covariance of several AUCs measured on the same examples, so the correlation between
  models' errors on the same images is used rather than ignored.
- An AUC contrast averaged over seeds (`auc_contrast`): the seeds' spread, which already holds each seed's own
  test-set noise, plus only the test-set noise all seeds share (DeLong's cross-seed covariances), with
  Welch-Satterthwaite degrees of freedom.
- Steps to threshold (`steps_interval`, `steps_contrast`): a crossing is only known to lie between two
  evaluations and a run that never crossed only to lie beyond the last one; the interval is a profile likelihood
  over seeds that treats both as censoring (`censored.interval_censored_t`; with a view in which the grid's cells
  are rounding noise), never of zero width, with an open side where censoring leaves it unbounded.
- Similarity between runs of different seeds (`seed_pair_interval`): pairs share runs, so a jackknife over seeds.
- Verdicts never come from a point estimate: an interval entirely inside (-margin, +margin) means "equivalent",
  entirely above +margin "better", entirely below -margin "worse", anything else "inconclusive".
- Every interval function takes `confidence`; CONFIDENCE is only their default.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

from transfusion_jax.analysis.censored import interval_censored_t

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
    """A point estimate with its two-sided interval. `low`/`high` are None where no interval exists (n < 2); an
    open side is -inf / +inf (censoring left it unbounded): `defined` still holds, verdicts read it as any other
    bound, and whoever writes an Interval to JSON must map the infinities to something strict JSON allows (not
    null, which means "no interval"). `estimate` can be +-inf where only censored values bound the data."""

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
    """(AUCs [..., k], covariance [..., k, k]) of k score vectors `scores` [..., k, N] on the same N examples with
    boolean `labels` [N]: DeLong's structural components (the share of negatives each positive outranks, of
    positives that outrank each negative; ties count one half, as in sklearn's roc_auc_score). Leading axes are
    independent sets (e.g. simulated studies). Written out because no library computes them in batches (the
    coverage simulations need 10^4 score vectors at once): one sort per score vector and counts along it, Sun &
    Xu's midrank idea without scipy's three separate rankings."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    scores = scores[None] if scores.ndim == 1 else scores
    if labels.ndim != 1 or scores.shape[-1] != labels.size:
        raise ValueError(f"Need labels [N] and scores [..., k, N] with the same N, got {labels.shape}, {scores.shape}.")
    m, n = int(labels.sum()), int((~labels).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positive and 2 negative examples, got {m} and {n}.")
    order = np.argsort(scores, axis=-1)
    ordered = np.take_along_axis(scores, order, axis=-1)
    positive = labels[order]
    size = labels.size
    index = np.broadcast_to(np.arange(size), scores.shape)
    starts = np.ones(scores.shape, bool)  # where a group of tied scores starts, and ends
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = np.ones(scores.shape, bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, index, size), axis=-1), axis=-1), axis=-1)
    positives_through = np.cumsum(positive, axis=-1)  # positives at or before each sorted position
    positives_below = np.take_along_axis(positives_through - positive, first, axis=-1)  # before the tie group
    positives_tied = np.take_along_axis(positives_through, last, axis=-1) - positives_below
    negatives_below, negatives_tied = first - positives_below, last - first + 1 - positives_tied
    component = np.where(
        positive,
        (negatives_below + negatives_tied / 2) / n,  # per positive: the share of negatives it outranks
        (m - positives_below - positives_tied / 2) / m,  # per negative: the share of positives above it
    )
    by_example = np.empty(scores.shape)
    np.put_along_axis(by_example, order, component, axis=-1)
    v10, v01 = by_example[..., labels], by_example[..., ~labels]
    return v10.mean(axis=-1), _covariance(v10) / m + _covariance(v01) / n


def _covariance(x: np.ndarray) -> np.ndarray:
    """Sample covariance (ddof 1) of the rows of x [..., k, N] over the last axis: [..., k, k]."""
    x = x - x.mean(axis=-1, keepdims=True)
    return x @ np.swapaxes(x, -1, -2) / (x.shape[-1] - 1)


def seed_averaged_contrast(
    aucs: np.ndarray, covariance: np.ndarray, coefficients: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high, degrees of freedom) for the mean over seeds of C_s = sum_g c_g AUC[g, s], from AUCs
    [..., G, n] (G groups, n seeds) and their DeLong covariance [..., G n, G n] (group-major order, as `delong`
    returns it for the stacked groups); leading axes are independent studies.

    With C_s = theta + u_s + e_s (u_s: seed s's training randomness, e_s: its test-set error, correlated across
    seeds because all are scored on the same images), Var(mean C) = E[s^2] / n + k, where s^2 is the seeds'
    sample variance and k the mean over seed pairs s != t of Cov(e_s, e_t) (docs/statistics.md derives it): the
    seeds' spread already holds each seed's own test noise, and only the noise every seed shares is added, from
    DeLong's joint covariance. The variance of the mean is never below its test-set part (DeLong's variance of the
    mean contrast; where it binds, the variance rests on the test set alone and counts as known: normal quantile).
    Otherwise Student's t with Welch-Satterthwaite degrees of freedom, (s^2/n + k)^2 / ((s^2/n)^2 / (n - 1)), k
    counted as known (it rests on hundreds of test images): n - 1 when seed noise dominates, towards normal when
    the shared test noise does. The simulations in tests/analysis/test_stats_coverage.py chose this: n - 1
    throughout covers up to 99.7 % where test noise dominates, the normal quantile throughout 89.5 % where seed
    noise does (docs/statistics.md). One seed: DeLong's part only, normal quantile (training randomness unknown)."""
    aucs = np.asarray(aucs, np.float64)
    covariance = np.asarray(covariance, np.float64)
    coefficients = np.asarray(coefficients, np.float64)
    groups, n = aucs.shape[-2:]
    if coefficients.shape != (groups,) or covariance.shape[-2:] != (groups * n, groups * n):
        raise ValueError(
            f"Need one coefficient per group and a [G n, G n] covariance, got {coefficients.shape} coefficients, "
            f"AUCs {aucs.shape} and covariance {covariance.shape}."
        )
    contrasts = np.einsum("g,...gn->...n", coefficients, aucs)
    weights = np.kron(coefficients[:, None], np.eye(n))  # [G n, n]: seed s's contrast from the stacked AUCs
    errors = np.einsum("ia,...ij,jb->...ab", weights, covariance, weights)  # Cov(e_s, e_t) [..., n, n]
    estimate = contrasts.mean(axis=-1)
    test_part = np.maximum(errors.sum(axis=(-2, -1)) / n**2, 0.0)  # DeLong's variance of the mean contrast
    if n == 1:
        half = scipy_stats.norm.ppf((1 + confidence) / 2) * np.sqrt(test_part)
        return estimate, estimate - half, estimate + half, np.full(estimate.shape, np.inf)
    shared = (errors.sum(axis=(-2, -1)) - np.trace(errors, axis1=-2, axis2=-1)) / (n * (n - 1))
    seeds_part = contrasts.var(axis=-1, ddof=1) / n
    variance = np.maximum(seeds_part + shared, test_part)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(seeds_part + shared > test_part, variance**2 / (seeds_part**2 / (n - 1)), np.inf)
    half = scipy_stats.t.ppf((1 + confidence) / 2, df) * np.sqrt(variance)
    return estimate, estimate - half, estimate + half, df


def auc_contrast(
    labels: np.ndarray,
    groups: Sequence[Sequence[np.ndarray]],
    coefficients: Sequence[float],
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean over seeds of sum_g c_g AUC(groups[g][s]), all on the same test examples: e.g. a difference (A - B,
    coefficients (1, -1)) or a difference of differences ([A - B] on one data size - [A - B] on another, (1, -1,
    -1, 1)). Every group holds one score vector per seed, in the same seed order. Interval: the seeds' spread plus
    the test-set noise all seeds share, from DeLong's joint covariance of every AUC involved
    (`seed_averaged_contrast`); with one seed only DeLong's part exists (a normal interval that ignores training
    randomness, marked as such)."""
    if len(groups) != len(coefficients) or not groups:
        raise ValueError(f"Need one coefficient per group, got {len(groups)} groups and {len(coefficients)}.")
    n = len(groups[0])
    if n == 0 or any(len(g) != n for g in groups):
        raise ValueError(f"Every group needs the same number (> 0) of runs, got {[len(g) for g in groups]}.")
    aucs, cov = delong(labels, np.stack([scores for group in groups for scores in group]))
    estimate, low, high, df = (
        float(x) for x in seed_averaged_contrast(aucs.reshape(len(groups), n), cov, coefficients, confidence)
    )
    if n == 1:
        return Interval(estimate, low, high, 1, "DeLong over test examples only (one seed)")
    return Interval(estimate, low, high, n, f"seeds + test noise shared by the seeds (DeLong), t with {df:.3g} df")


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


# ------------------------------------------------------------------------------------- similarity between runs


def seed_pair_interval(
    same: Mapping[tuple[int, int], float],
    cross: Mapping[tuple[int, int], float],
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean similarity over the `same` pairs minus mean over the `cross` pairs of runs from different seeds, with a
    delete-one-seed jackknife interval (t, n - 1 degrees of freedom, n the seeds involved). For the R claim:
    same[(i, j)] = sim(R_i, R_j) for every i < j and cross[(i, j)] = sim(R_i, T_j) for every i != j (R: random
    init, T: transfer; the all-pairs design, n(n-1)/2 + n(n-1) similarities: 30 for 5 seeds).

    Every pair shares a run with others, so pair values are not independent and a t interval over them is not
    valid; the difference of means is a (two-kernel) U-statistic over seeds, and deleting one seed at a time
    (with all its pairs) gives its jackknife variance, slightly conservative (Efron & Stein). In simulations with
    a known truth (tests/analysis/test_stats_coverage.py, docs/statistics.md) this design covers at 94-99 % with 5
    and 10 seeds; the cyclic pairs (k, k+1) with the same jackknife cover at 97-99 % with intervals 1.3-2.2x as
    wide, and the t over the cyclic pairs used before drops to 92 % where a run's typicality among random-init
    runs is not matched in its similarity to transfer runs.
    Any other design is computed the same way but has no such proof."""
    pairs = {"same": same, "cross": cross}
    for name, values in pairs.items():
        if not values:
            raise ValueError(f"Need at least one {name} pair.")
        bad = [k for k in values if len(k) != 2 or k[0] == k[1]]
        if bad:
            raise ValueError(f"{name} pairs must be (seed i, seed j) with i != j, got {bad[:3]}.")
    arrays = {
        name: (np.array([k for k in v]), np.array([float(x) for x in v.values()], np.float64))
        for name, v in pairs.items()
    }
    if not all(np.isfinite(x).all() for _, x in arrays.values()):
        raise ValueError("Every pair needs a finite similarity.")
    seeds = np.unique(np.concatenate([k.ravel() for k, _ in arrays.values()]))
    (same_keys, same_x), (cross_keys, cross_x) = arrays["same"], arrays["cross"]
    estimate = float(same_x.mean() - cross_x.mean())
    method = "difference of mean pair similarities, jackknife over seeds"
    n = seeds.size
    leave_out = []
    for seed in seeds:
        keep_same, keep_cross = (same_keys != seed).all(axis=1), (cross_keys != seed).all(axis=1)
        if not keep_same.any() or not keep_cross.any():
            return Interval(estimate, None, None, int(n), f"{method} (seed {seed} is in every pair: no interval)")
        leave_out.append(same_x[keep_same].mean() - cross_x[keep_cross].mean())
    leave_out = np.asarray(leave_out)
    variance = (n - 1) / n * np.sum((leave_out - leave_out.mean()) ** 2)
    half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * math.sqrt(variance)
    return Interval(estimate, estimate - half, estimate + half, int(n), method)


# ------------------------------------------------------------------------- steps to threshold (censored by a grid)


def log_step_bounds(
    first_steps: Sequence[int | None], grid: Sequence[int], rounded: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) with lo <= ln T <= hi for each run's steps-to-threshold T, from the first evaluation step at which
    the run was above the threshold (None: never within the run). The crossing seen at grid step g happened after
    the previous evaluation (0 before the first one, so lo = -inf there) and at the latest at g; a run that never
    crossed has T > the last evaluation (hi = +inf). `rounded`: a crossing between two evaluations is taken to be
    at the middle of its cell on the log scale (lo = hi), the view in which the cell's width is rounding noise
    (`steps_contrast`); the open cells stay open."""
    grid = np.asarray(grid)
    if grid.ndim != 1 or grid.size == 0 or not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"The evaluation grid must be a non-empty 1-D sequence of integer steps, got {grid!r}.")
    if grid[0] < 1 or np.any(np.diff(grid) <= 0):
        raise ValueError(f"The evaluation grid must be strictly increasing steps >= 1, got {grid.tolist()}.")
    log_grid = np.log(grid.astype(np.float64))
    lo, hi = [], []
    for step in first_steps:
        if step is None:
            lo.append(log_grid[-1])
            hi.append(np.inf)
            continue
        k = int(np.searchsorted(grid, step))
        if k == grid.size or grid[k] != step:
            raise ValueError(f"First step above the threshold {step!r} is not an evaluation step of the grid.")
        lo.append(log_grid[k - 1] if k > 0 else -np.inf)
        hi.append(log_grid[k])
        if rounded and k > 0:
            lo[-1] = hi[-1] = (log_grid[k - 1] + log_grid[k]) / 2
    return np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def steps_contrast_bounds(
    first_steps: Sequence[Sequence[int | None]],
    coefficients: Sequence[float],
    grid: Sequence[int],
    rounded: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per seed bounding sum_g c_g ln T_g[s], from each group's first steps (one per seed, in seed order):
    interval arithmetic on `log_step_bounds` (lo takes each group's end that makes the sum smallest)."""
    if len(first_steps) != len(coefficients) or not first_steps:
        raise ValueError(f"Need one coefficient per group, got {len(first_steps)} groups and {len(coefficients)}.")
    n = len(first_steps[0])
    if any(len(g) != n for g in first_steps):
        raise ValueError(f"Every group needs one first step per seed, got {[len(g) for g in first_steps]}.")
    lo, hi = np.zeros(n), np.zeros(n)
    for c, steps in zip(coefficients, first_steps):
        if c == 0:
            continue
        g_lo, g_hi = log_step_bounds(steps, grid, rounded)
        lo += c * (g_lo if c > 0 else g_hi)
        hi += c * (g_hi if c > 0 else g_lo)
    return lo, hi


STEPS_METHOD = "profile likelihood over seeds, crossings censored to their grid cell or at its log-midpoint (hull)"


def steps_contrast(
    first_steps: Sequence[Sequence[int | None]],
    coefficients: Sequence[float],
    grid: Sequence[int],
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean over seeds of sum_g c_g ln T_g[s] (T: steps to threshold; e.g. (1, -2, 1) for a difference of two
    speed-ups), from each group's first evaluation step above the threshold (None: never), one per seed: the
    interval of `grid_interval` on the contrast's bounds in both views (`steps_contrast_bounds`)."""
    censored = steps_contrast_bounds(first_steps, coefficients, grid)
    rounded = steps_contrast_bounds(first_steps, coefficients, grid, rounded=True)
    estimate, low, high, n = (x.item() for x in grid_interval(censored, rounded, confidence))
    if n == 0:
        return Interval(None, None, None, 0, STEPS_METHOD + " (no seed bounds its value)")
    if n < 2:
        return Interval(estimate, None, None, 1, STEPS_METHOD + " (one informative seed: no interval)")
    return Interval(estimate, low, high, int(n), STEPS_METHOD)


def grid_interval(
    censored: tuple[np.ndarray, np.ndarray], rounded: tuple[np.ndarray, np.ndarray], confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high, n) for a mean over seeds of values seen on an evaluation grid, from their bounds
    (lo, hi) [..., seeds] in two views of where in its grid cell a value lies (`log_step_bounds`): the hull of
    the two `interval_censored_t` intervals. Censored (anywhere in the cell) is right when the seeds' spread is
    below the grid's resolution, so that seeds share cells and their rounding errors; rounded (at the cell's
    middle, its width entering the seeds' scatter as noise) when the spread is above it. Each view alone misses
    the truth too often in the other's regime (docs/statistics.md); the hull covers it at about or above the
    nominal rate in every regime simulated. Values that are only bounded on one side (runs that never crossed)
    stay censored in both views, so a side can be open (-inf / +inf). Estimate: the censored view's."""
    estimate, low_c, high_c, n = interval_censored_t(*censored, confidence)
    _, low_r, high_r, n_r = interval_censored_t(*rounded, confidence)
    if not np.array_equal(n, n_r):
        raise ValueError("The two views must bound the same seeds (a seed is open on both sides in both or neither).")
    return estimate, np.fmin(low_c, low_r), np.fmax(high_c, high_r), n


def steps_interval(
    first_a: Sequence[int | None],
    first_b: Sequence[int | None],
    grid: Sequence[int],
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean over seeds of ln T_a - ln T_b, T the steps to threshold of runs a and b of one seed (paired by position;
    None: never above the threshold within the run), `grid` the evaluation steps: `steps_contrast` with
    coefficients (1, -1). Open bounds (-inf / +inf) say that censoring leaves that side unbounded."""
    if len(first_a) != len(first_b):
        raise ValueError(f"Need one first step per seed on both sides, got {len(first_a)} and {len(first_b)}.")
    return steps_contrast([first_a, first_b], [1.0, -1.0], grid, confidence)


# ----------------------------------------------------------------------------------------------------- verdicts


def outcome(interval: Interval, margin: float) -> str:
    """'better' / 'worse' / 'equivalent' / 'inconclusive' for a difference A - B, from its interval only (an open
    side counts as any bound: an interval (0.3, +inf) lies above a margin of 0.2)."""
    if not interval.defined:
        return "inconclusive"
    if interval.low > margin:
        return "better"
    if interval.high < -margin:
        return "worse"
    if -margin <= interval.low and interval.high <= margin:
        return "equivalent"
    return "inconclusive"


def verdict(interval: Interval, margin: float, claim: str) -> tuple[str, str]:
    """('supported' | 'contradicted' | 'inconclusive', why) for a claim about A - B ('equivalent', 'greater' or
    'less' than B), read from the interval and the margin; `why` is the interval's outcome ('better', 'worse',
    'equivalent', 'inconclusive'). An interval from one seed never gives a verdict: training randomness is
    unknown. Censored values (steps to threshold) are inside the interval (`steps_contrast`), not a special case."""
    expected, contrary = CLAIMS[claim]
    if interval.n < 2:
        return "inconclusive", f"{interval.n} seed pair(s): training variance unknown"
    found = outcome(interval, margin)
    if found == expected:
        return "supported", found
    if found in contrary:
        return "contradicted", found
    return "inconclusive", found


# ------------------------------------------------------------------------------ decision rules of claims as stated


RULES = ("equivalence", "directional", "noninferiority")


@dataclasses.dataclass(frozen=True)
class Rule:
    """How a claim about a contrast is read from its interval, fixed before the run (docs/study.md).

    equivalence     "A and B are comparable": supported when the interval lies inside [-margin, +margin],
                    contradicted when it lies entirely outside (beyond +margin or below -margin).
    directional     "A exceeds B" (direction +1) or "A falls short of B" (-1): supported when the interval excludes
                    zero in that direction; contradicted when it lies entirely below `margin` (the smallest effect of
                    interest) in that direction, i.e. the effect is at most trivially small or points the other way.
                    An interval inside (0, margin) supports the direction and is flagged as below the smallest
                    effect of interest.
    noninferiority  "A is at least B" for a contrast built so that 0 is the pre-registered bound (e.g. C6's share):
                    supported when the interval lies above 0, contradicted when it lies below 0."""

    kind: str
    margin: float = 0.0
    direction: int = 1

    def __post_init__(self):
        if self.kind not in RULES or self.direction not in (1, -1) or self.margin < 0:
            raise ValueError(f"A rule needs kind in {RULES}, direction +1 or -1 and margin >= 0, got {self}.")

    def boundaries(self) -> tuple[float, ...]:
        """The values where the verdict changes, on the contrast's own scale."""
        if self.kind == "equivalence":
            return (-self.margin, self.margin)
        if self.kind == "directional":
            return (0.0, self.direction * self.margin)
        return (0.0,)


@dataclasses.dataclass(frozen=True)
class Decision:
    verdict: str  # 'supported' | 'contradicted' | 'inconclusive'
    why: str
    distance: float | None  # half-widths between the nearest interval end and the nearest boundary (robustness)


def robustness(interval: Interval, boundaries: Sequence[float]) -> float | None:
    """How far the verdict is from changing: the smallest distance between a finite interval end and a decision
    boundary, in units of the interval's half-width (an open interval: of the finite end's distance to the
    estimate). None where no finite width exists. A verdict 0.1 half-widths from a boundary could flip with a small
    change of the runs (e.g. another float summation order); 2 half-widths could not."""
    if not interval.defined or interval.estimate is None:
        return None
    ends = [e for e in (interval.low, interval.high) if math.isfinite(e)]
    if math.isfinite(interval.low) and math.isfinite(interval.high):
        half = (interval.high - interval.low) / 2
    elif ends and math.isfinite(interval.estimate):
        half = abs(ends[0] - interval.estimate)
    else:
        return None
    if not ends or half <= 0:
        return None
    return min(abs(e - b) for e in ends for b in boundaries) / half


def decide(interval: Interval, rule: Rule) -> Decision:
    """The verdict of a claim from its interval alone (never a point estimate), with its distance to the nearest
    decision boundary; one seed (or none) decides nothing: training randomness is unknown."""
    if interval.n < 2 or not interval.defined:
        return Decision("inconclusive", f"{interval.n} seed(s) with an interval: training variance unknown", None)
    distance = robustness(interval, rule.boundaries())
    low, high = (interval.low, interval.high) if rule.direction > 0 else (-interval.high, -interval.low)
    if rule.kind == "equivalence":
        if -rule.margin <= interval.low and interval.high <= rule.margin:
            return Decision("supported", "interval inside ±margin", distance)
        if interval.low > rule.margin or interval.high < -rule.margin:
            return Decision("contradicted", "interval outside ±margin", distance)
        return Decision("inconclusive", "interval crosses a margin", distance)
    if rule.kind == "directional":
        if low > 0:
            small = " (entirely below the smallest effect of interest)" if high < rule.margin else ""
            return Decision("supported", "interval excludes 0 in the claimed direction" + small, distance)
        if high < rule.margin:
            return Decision("contradicted", "interval below the smallest effect of interest", distance)
        return Decision("inconclusive", "interval includes 0 and the smallest effect of interest", distance)
    if low > 0:
        return Decision("supported", "interval above the non-inferiority bound", distance)
    if high < 0:
        return Decision("contradicted", "interval below the non-inferiority bound", distance)
    return Decision("inconclusive", "interval includes the non-inferiority bound", distance)


def power(
    sd: float, effect: float, rule: Rule, seeds: int, confidence: float = CONFIDENCE, studies: int = 20_000, seed=0
) -> float:
    """Probability that a claim read by `rule` comes out "supported" when the per-seed contrast is N(effect, sd^2)
    over `seeds` seeds and its interval is the t interval: simulated (`studies` draws, vectorised), which is exact
    for that model whatever the rule. A planning number: the study's AUC and steps intervals are close to, not
    equal to, the t interval of the per-seed values (docs/statistics.md)."""
    if seeds < 2:
        return 0.0
    x = np.random.default_rng(seed).normal(effect, sd, size=(studies, seeds))
    mean, half = x.mean(axis=1), scipy_stats.t.ppf((1 + confidence) / 2, seeds - 1) * x.std(axis=1, ddof=1)
    half = half / math.sqrt(seeds)
    low, high = mean - half, mean + half
    if rule.direction < 0 and rule.kind != "equivalence":  # read in the claimed direction
        low, high = -high, -low
    if rule.kind == "equivalence":
        hit = (low >= -rule.margin) & (high <= rule.margin)
    else:
        hit = low > 0
    return float(hit.mean())


def seeds_for_power(
    sd: float, effect: float, rule: Rule, target: float = 0.8, confidence: float = CONFIDENCE, most: int = 200
) -> int | None:
    """The fewest seeds (>= 2) at which `power` reaches `target`, or None if not within `most`."""
    for n in range(2, most + 1):
        if power(sd, effect, rule, n, confidence) >= target:
            return n
    return None
