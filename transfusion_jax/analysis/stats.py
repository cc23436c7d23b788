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
  over seeds that treats both as censoring (with a view in which the grid's cells are rounding noise), never
  of zero width, with an open side where censoring leaves it unbounded.
- Similarity between runs of different seeds (`seed_pair_interval`): pairs share runs, so a jackknife over seeds.
- Verdicts never come from a point estimate: an interval entirely inside (-margin, +margin) means "equivalent",
  entirely above +margin "better", entirely below -margin "worse", anything else "inconclusive".
- Every interval function takes `confidence`; CONFIDENCE is only their default.
"""

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import special
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


def interval_censored_t(
    lo: np.ndarray, hi: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high, n) for the mean mu of values d_s ~ N(mu, sigma^2) seen only as lo_s <= d_s <= hi_s
    (lo_s = hi_s: seen exactly; the last axis holds the seeds, leading axes are independent sets of values, e.g.
    simulated studies).

    The interval is the set of mu whose profile log-likelihood p(mu) = max_sigma log L(mu, sigma) lies within
    n/2 ln(1 + t^2 / (n - 1)) of its maximum, t the two-sided `confidence` quantile of Student's t with n - 1
    degrees of freedom: for exactly known values 2 (max p - p(mu)) = n ln(1 + T(mu)^2 / (n - 1)), T the one-sample
    t statistic, so this is then the t interval itself; for censored values it is its likelihood generalisation.
    Seeds with lo = -inf and hi = +inf carry no information and do not count in n. Because the censored normal
    log-likelihood is concave in (mu / sigma, 1 / sigma) (the probability of a box under a log-concave density),
    the interval is one interval, the maximisation over 1/sigma along each line is a one-dimensional concave
    problem, and bracketed root finding on either side of the maximum finds the ends (docs/statistics.md). A side
    is open (-inf / +inf) where the profile's limit on it stays above the level: only possible when no seed bounds
    its value on both sides.

    Estimate: the maximum-likelihood mu. Where every value's bounds share a common range the likelihood tends to
    its supremum (sigma -> 0) all over it and the estimate is its midpoint (its finite end if it is a half-line;
    an exact value in it makes it one point and the interval that point, as the t interval of equal values). Where
    no seed is bounded on both sides the maximum can lie at infinity (estimate +-inf), or the profile be flat
    (estimate: the middle of the finite bounds). Rows with n < 2 get NaN ends, rows with n = 0 a NaN estimate."""
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    if lo.shape != hi.shape or lo.ndim == 0:
        raise ValueError(f"lo and hi need one shape with a seeds axis, got {lo.shape} and {hi.shape}.")
    if np.isnan(lo).any() or np.isnan(hi).any() or np.any(lo > hi) or np.isposinf(lo).any() or np.isneginf(hi).any():
        raise ValueError("Every value needs bounds lo <= hi with lo < +inf and hi > -inf (no NaN).")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    shape = lo.shape[:-1]
    lo, hi = lo.reshape(-1, lo.shape[-1]), hi.reshape(-1, hi.shape[-1])
    estimate, low, high, n = _CensoredNormal(lo, hi, confidence).solve()
    return estimate.reshape(shape), low.reshape(shape), high.reshape(shape), n.reshape(shape)


def _log_mass(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log(Phi(y) - Phi(x)) for x <= y, accurate in both tails (computed on the side of 0 where the mass is in the
    lower tail) and for narrow ranges (midpoint rule with its second-order term)."""
    flip = x > 0
    a, b = np.where(flip, -y, x), np.where(flip, -x, y)
    log_a, log_b = special.log_ndtr(a), special.log_ndtr(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = log_b + np.log(-np.expm1(log_a - log_b))
        width, mid = b - a, (a + b) / 2
        narrow = np.isfinite(width) & (width * (1 + np.abs(mid)) < 1e-3)
        taylor = np.log(width) + _log_phi(mid) + np.log1p(width**2 * (mid**2 - 1) / 24)
    return np.where(narrow, taylor, out)


def _log_phi(x: np.ndarray) -> np.ndarray:
    return -0.5 * x**2 - 0.5 * math.log(2 * math.pi)


class _CensoredNormal:
    """The computation behind `interval_censored_t` for rows of values [rows, seeds], every step vectorised over
    the rows still being solved (the coverage simulations solve thousands of studies at once).

    Notation: a line in the concave parametrisation (alpha, beta) = (mu / sigma, 1 / sigma) is alpha = offset +
    mu * beta; along it, with down = lo - mu and up = hi - mu, a value seen as a range has probability
    Phi(beta up - offset) - Phi(beta down - offset) and an exact value (lo = hi) density beta phi(beta up -
    offset); the log-likelihood l is concave in beta. The profile p(mu) is the line offset = 0. The maximum over
    all (alpha, beta) is found along the lines mu = 0, offset = alpha, where h(alpha) = max_beta l(alpha, beta) is
    concave (a partial maximum of a concave function), so h' changes sign once."""

    ITERATIONS = 200  # every loop ends far earlier; this only bounds a pathological row
    TOLERANCE = 1e-10  # relative to the row's scale (the spread of its finite bounds)

    def __init__(self, lo, hi, confidence):
        self.lo, self.hi = lo, hi
        self.exact = lo == hi
        self.n = (np.isfinite(lo) | np.isfinite(hi)).sum(axis=1)
        self.finite = (np.isfinite(lo) & np.isfinite(hi)).any(axis=1)  # some seed bounded on both sides
        self.left_open = (np.isneginf(lo) & np.isfinite(hi)).sum(axis=1)
        self.right_open = (np.isfinite(lo) & np.isposinf(hi)).sum(axis=1)
        ends = np.concatenate([lo, hi], axis=1)
        ends = np.where(np.isfinite(ends), ends, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows without a finite bound (n = 0)
            smallest, largest = np.nanmin(ends, axis=1), np.nanmax(ends, axis=1)
        self.center = np.where(np.isfinite(smallest), (smallest + largest) / 2, 0.0)
        self.scale = np.where(largest > smallest, largest - smallest, 1.0)  # NaN compares False: 1.0
        n = np.maximum(self.n, 2)
        self.t = scipy_stats.t.ppf((1 + confidence) / 2, n - 1)
        self.drop = n / 2 * np.log1p(self.t**2 / (n - 1))  # allowed fall of the profile log-likelihood

    # --- the inner problem: the best beta >= 0 along a line

    def _terms(self, rows, mu, offset, beta):
        """Sums over seeds of l and of its derivatives d/dbeta, d2/dbeta2, d/doffset, d/dmu at beta > 0 (the second
        derivative loses precision far in a tail, where it only steers Newton steps that a bracket guards)."""
        down, up = self.lo[rows] - mu[:, None], self.hi[rows] - mu[:, None]
        b, o, exact = beta[:, None], offset[:, None], self.exact[rows]
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            x = np.where(np.isfinite(down), b * down - o, -np.inf)
            y = np.where(np.isfinite(up), b * up - o, np.inf)
            log_p = _log_mass(x, y)
            x_, y_ = np.where(np.isfinite(x), x, 0.0), np.where(np.isfinite(y), y, 0.0)
            fx = np.where(np.isfinite(x), np.exp(_log_phi(x_) - log_p), 0.0)  # phi(x) / P
            fy = np.where(np.isfinite(y), np.exp(_log_phi(y_) - log_p), 0.0)
            down_, up_ = np.where(np.isfinite(down), down, 0.0), np.where(np.isfinite(up), up, 0.0)
            value = np.where(exact, _log_phi(y_) + np.log(b), log_p)
            d_beta = np.where(exact, 1 / b - y_ * up_, up_ * fy - down_ * fx)
            d2_beta = np.where(exact, -1 / b**2 - up_**2, -(up_**2 * y_ * fy - down_**2 * x_ * fx) - d_beta**2)
            d_offset = np.where(exact, y_, fx - fy)
        return value.sum(1), d_beta.sum(1), d2_beta.sum(1), d_offset.sum(1), (b * d_offset).sum(1)

    def _at_zero(self, rows, mu, offset):
        """l, dl/dbeta and dl/doffset at beta = 0 (l finite only where no seed is bounded on both sides: each
        half-open seed then has probability Phi(-offset) or Phi(offset))."""
        down, up, o = self.lo[rows] - mu[:, None], self.hi[rows] - mu[:, None], offset[:, None]
        left, right = np.isneginf(down) & np.isfinite(up), np.isfinite(down) & np.isposinf(up)
        log_left, log_right = special.log_ndtr(-o), special.log_ndtr(o)
        ratio_left, ratio_right = np.exp(_log_phi(o) - log_left), np.exp(_log_phi(o) - log_right)
        value = np.where(left, log_left, 0.0) + np.where(right, log_right, 0.0)
        slope = np.where(left, np.where(left, up, 0.0) * ratio_left, 0.0)
        slope -= np.where(right, np.where(right, down, 0.0) * ratio_right, 0.0)
        d_offset = np.where(right, ratio_right, 0.0) - np.where(left, ratio_left, 0.0)
        return value.sum(1), slope.sum(1), d_offset.sum(1)

    def line_max(self, rows, mu, offset, guess=None):
        """(value, beta, d/doffset, d/dmu) at the best beta >= 0 along each row's line (envelope derivatives);
        `guess`: a starting beta per row (e.g. the last one found nearby)."""
        m = rows.size
        value, beta, d_offset, d_mu = np.full(m, -np.inf), np.zeros(m), np.zeros(m), np.zeros(m)
        zero_value, zero_slope, zero_d_offset = self._at_zero(rows, mu, offset)
        at_zero = ~self.finite[rows] & (zero_slope <= 0)
        value[at_zero], d_offset[at_zero] = zero_value[at_zero], zero_d_offset[at_zero]
        todo = np.flatnonzero(~at_zero)
        if todo.size:
            found = self._best_beta(rows[todo], mu[todo], offset[todo], None if guess is None else guess[todo])
            value[todo], beta[todo], d_offset[todo], d_mu[todo] = found
        return value, beta, d_offset, d_mu

    def _best_beta(self, rows, mu, offset, guess):
        """The root of dl/dbeta (decreasing in beta) per row, on ln beta: a bracket around a guess (a nearby line's
        beta, else the inverse of a typical distance), widened until the slope changes sign, then Newton steps
        inside it (`_root`)."""
        m = rows.size
        distance = np.abs(np.concatenate([self.lo[rows] - mu[:, None], self.hi[rows] - mu[:, None]], axis=1))
        distance = np.where(np.isfinite(distance) & (distance > 0), distance, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            typical = np.nanmedian(distance, axis=1)
        t = -np.log(np.where(np.isfinite(typical), typical, 1.0))
        step = np.full(m, 2.0)
        if guess is not None:  # a nearby line's beta: start from a narrow bracket around it
            warm = np.isfinite(guess) & (guess > 0)
            t = np.where(warm, np.log(np.where(warm, guess, 1.0)), t)
            step = np.where(warm, 0.05, step)

        def slope(index, t_, derivative=False):
            _, d_beta, d2_beta, _, _ = self._terms(rows[index], mu[index], offset[index], np.exp(t_))
            return (d_beta, d2_beta * np.exp(t_)) if derivative else d_beta

        f = slope(np.arange(m), t)
        rising = f > 0  # NaN (underflow far out) counts as past the maximum
        inner, f_inner = np.where(rising, t, t - step), np.where(rising, f, np.nan)
        outer, f_outer = np.where(rising, t + step, t), np.where(rising, np.nan, f)
        active = np.arange(m)
        for _ in range(self.ITERATIONS):  # widen (steps x 4) until the slope changes sign
            a = active
            need_in = ~(f_inner[a] > 0)
            probe = np.where(need_in, inner[a], outer[a])
            f_probe = slope(a, probe)
            rises = f_probe > 0
            step[a] *= 4
            # A probe below that does not rise becomes the new outer end; one above that rises the new inner end.
            new_outer = need_in & ~rises
            new_inner = ~need_in & rises
            outer[a] = np.where(new_outer, probe, np.where(new_inner, probe + step[a], outer[a]))
            f_outer[a] = np.where(
                new_outer, f_probe, np.where(new_inner, np.nan, np.where(need_in, f_outer[a], f_probe))
            )
            inner[a] = np.where(new_inner, probe, np.where(new_outer, probe - step[a], inner[a]))
            f_inner[a] = np.where(
                new_inner, f_probe, np.where(new_outer, np.nan, np.where(need_in, f_probe, f_inner[a]))
            )
            active = a[~((f_inner[a] > 0) & (f_outer[a] <= 0))]
            if not active.size:
                break
        t = self._root(lambda i, t_: slope(i, t_, True), inner, f_inner, outer, f_outer, np.full(m, 1e-9), True)
        value, _, _, d_offset, d_mu = self._terms(rows, mu, offset, np.exp(t))
        return value, np.exp(t), d_offset, d_mu

    def profile(self, rows, mu, guess=None):
        """(p(mu), the best beta, p'(mu)): the profile log-likelihood, max over sigma."""
        value, beta, _, d_mu = self.line_max(rows, mu, np.zeros(rows.size), guess)
        return value, beta, d_mu

    # --- the outer problem: the maximum, then each end

    def _limit(self, side):
        """p at mu -> side * inf: -inf if a seed is bounded on both sides; else the best binomial fit of the
        half-open seeds' sides where more of them point that way, n ln 1/2 otherwise."""
        toward, away = (self.left_open, self.right_open) if side < 0 else (self.right_open, self.left_open)
        total = np.maximum(toward + away, 1)
        fit = special.xlogy(toward, toward / total) + special.xlogy(away, away / total)
        value = np.where(toward > away, fit, total * math.log(0.5))
        return np.where(self.finite, -np.inf, value)

    def _root(self, f, inside, f_inside, outside, f_outside, tolerance, newton=False):
        """Per row, where f changes sign between `inside` (f >= 0) and `outside` (f < 0), to within `tolerance`.
        f(index, x) evaluates rows `index` at x; with `newton`, it returns (f, f') and Newton steps from the latest
        point are taken where they stay inside the bracket. Otherwise false position with the Illinois halving.
        Every third step bisects, so the bracket at least halves; a row stops when f vanishes, its bracket is
        narrower than `tolerance` or (Newton) its last step was."""
        a, fa, b, fb = inside.copy(), f_inside.copy(), outside.copy(), f_outside.copy()
        kept = np.zeros(a.size)  # +1: the inside end was kept last time, -1: the outside end
        found = (a + b) / 2  # the answer where the bracket is already narrow; else each row's latest point
        last, f_last, d_last = np.full(a.size, np.nan), np.full(a.size, np.nan), np.full(a.size, np.nan)
        active = np.flatnonzero(np.abs(b - a) >= tolerance)
        for step in range(self.ITERATIONS):
            if not active.size:
                break
            r = active
            low, high = np.minimum(a[r], b[r]), np.maximum(a[r], b[r])
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                secant = b[r] - fb[r] * (b[r] - a[r]) / (fb[r] - fa[r])
                tangent = last[r] - f_last[r] / d_last[r]
            x = np.where(np.isfinite(secant) & (low < secant) & (secant < high), secant, (a[r] + b[r]) / 2)
            x = np.where(np.isfinite(tangent) & (low < tangent) & (tangent < high), tangent, x)
            x = np.where(step % 3 == 2, (a[r] + b[r]) / 2, x)
            fx = f(r, x)
            previous = last.copy()
            if newton:
                fx, d_last[r] = fx
                last[r], f_last[r] = x, fx
            into = fx >= 0
            fb[r] = np.where(into & (kept[r] > 0), fb[r] / 2, fb[r])  # the outside end stays twice: halve it
            fa[r] = np.where(~into & (kept[r] < 0), fa[r] / 2, fa[r])
            a[r], fa[r] = np.where(into, x, a[r]), np.where(into, fx, fa[r])
            b[r], fb[r] = np.where(into, b[r], x), np.where(into, fb[r], fx)
            kept[r] = np.where(into, 1.0, -1.0)
            narrow = np.abs(b[r] - a[r]) < tolerance[r]
            done = (fx == 0) | narrow | (np.abs(x - previous[r]) < tolerance[r])  # previous: NaN but for Newton
            found[r] = np.where(narrow, (a[r] + b[r]) / 2, x)
            active = r[~done]
        return found

    def _maximum(self, rows):
        """(estimate, max p, its beta) where the seeds' ranges share no point: the root of h'(alpha)."""
        m = rows.size
        zeros = np.zeros(m)
        beta = np.full(m, np.nan)

        def slope(index, alpha):
            _, b, d_offset, _ = self.line_max(rows[index], zeros[index], alpha, beta[index])
            beta[index] = np.where(b > 0, b, beta[index])
            return d_offset * direction[index]

        direction = np.ones(m)
        s0 = slope(np.arange(m), zeros)
        direction = np.where(s0 > 0, 1.0, -1.0)
        inner, f_inner = zeros.copy(), np.abs(s0)
        outer, f_outer = direction.copy(), np.full(m, np.nan)
        active = np.arange(m)
        for _ in range(self.ITERATIONS):  # double until h' changes sign
            a = active
            f = slope(a, outer[a])
            more = f > 0
            inner[a], f_inner[a] = np.where(more, outer[a], inner[a]), np.where(more, f, f_inner[a])
            f_outer[a] = f
            outer[a] = np.where(more, outer[a] * 2, outer[a])
            active = a[more]
            if not active.size:
                break
        alpha = self._root(slope, inner, f_inner, outer, f_outer, 1e-11 * np.maximum(1.0, np.abs(outer)))
        value, beta_best, _, _ = self.line_max(rows, zeros, alpha, beta)
        with np.errstate(divide="ignore", invalid="ignore"):
            estimate = np.where(beta_best > 0, alpha / beta_best, np.sign(alpha) * np.inf)
        # Both kinds of half-open seed in balance (beta = 0, alpha = 0): p is n ln 1/2 everywhere.
        estimate = np.where((beta_best == 0) & (alpha == 0), self.center[rows], estimate)
        return estimate, value, beta_best

    def _end(self, rows, start, level, side, first_step, guess):
        """The end on `side` (-1 / +1) of {p >= level}, from `start` where p >= level: probe outwards by
        `first_step`, doubling until p < level (unless p's limit on that side is >= level: open), then refine."""
        end = np.full(rows.size, side * np.inf)
        todo = np.flatnonzero(self._limit(side)[rows] < level)
        if not todo.size:
            return end
        r, level, scale = rows[todo], level[todo], self.scale[rows[todo]]
        beta = guess[todo].copy()

        def f(index, mu, derivative=False):
            value, b, d_mu = self.profile(r[index], mu, beta[index])
            beta[index] = np.where(b > 0, b, beta[index])
            return (value - level[index], d_mu * side) if derivative else value - level[index]

        inner, f_inner = start[todo].copy(), np.zeros(todo.size)
        inner_start = inner.copy()
        step = np.maximum(first_step[todo], self.TOLERANCE * scale)
        outer, f_outer = inner + side * step, np.full(todo.size, np.nan)
        active = np.arange(todo.size)
        for _ in range(self.ITERATIONS):
            a = active
            fa = f(a, outer[a])
            more = fa >= 0
            inner[a], f_inner[a] = np.where(more, outer[a], inner[a]), np.where(more, fa, f_inner[a])
            f_outer[a] = fa
            step[a] = np.where(more, step[a] * 2, step[a])
            outer[a] = np.where(more, outer[a] + side * step[a], outer[a])
            active = a[more]
            if not active.size:
                break
        # In the distance from start (so that p - level falls along it) Newton steps use p's slope.
        distance = self._root(
            lambda index, x: f(index, inner_start[index] + side * x, True),
            (inner - inner_start) * side,
            f_inner,
            (outer - inner_start) * side,
            f_outer,
            self.TOLERANCE * scale,
            newton=True,
        )
        end[todo] = inner_start + side * distance
        return end

    def _far(self, rows, level, direction):
        """A finite point towards `direction` where p >= level (p's limit there is above level)."""
        step = self.scale[rows].copy()
        point = self.center[rows] + direction * step
        active = np.arange(rows.size)
        for _ in range(self.ITERATIONS):
            a = active
            below = self.profile(rows[a], point[a])[0] < level[a]
            step[a] = np.where(below, step[a] * 2, step[a])
            point[a] = np.where(below, point[a] + direction[a] * step[a], point[a])
            active = a[below]
            if not active.size:
                break
        return point

    def solve(self):
        rows = self.lo.shape[0]
        estimate, low, high = np.full(rows, np.nan), np.full(rows, np.nan), np.full(rows, np.nan)
        lowest, highest = self.lo.max(axis=1), self.hi.min(axis=1)  # the common range, where lowest <= highest
        common = (lowest <= highest) & (self.n > 0)
        with np.errstate(invalid="ignore"):
            middle = (lowest + highest) / 2
        middle = np.where(np.isfinite(lowest), np.where(np.isfinite(highest), middle, lowest), highest)
        estimate[common] = middle[common]
        # An exact value in a common range (then a single point) makes the likelihood unbounded there: the
        # interval is that point, as the t interval of equal values.
        point = common & self.exact.any(axis=1) & (self.n >= 2)
        low[point], high[point] = estimate[point], estimate[point]
        top, beta = np.zeros(rows), np.full(rows, np.nan)  # max p: 0 (sigma -> 0) on a common range
        known = (self.n >= 2) & np.all(self.exact | ~(np.isfinite(self.lo) | np.isfinite(self.hi)), axis=1) & ~point
        separate = np.flatnonzero(~common & (self.n > 0) & ~known)
        if separate.size:
            estimate[separate], top[separate], beta[separate] = self._maximum(separate)
        # Exactly known values only: the interval is the t interval itself (the threshold's construction), in
        # closed form.
        if known.any():
            values = np.where(self.exact[known], self.lo[known], np.nan)
            mean = np.nanmean(values, axis=1)
            half = self.t[known] * np.nanstd(values, axis=1, ddof=1) / np.sqrt(self.n[known])
            estimate[known], low[known], high[known] = mean, mean - half, mean + half
        ok = np.flatnonzero((self.n >= 2) & ~point & ~known)
        level = top[ok] - self.drop[ok]
        # First probe: the t interval's half-width for the fitted sigma = 1 / beta (the scale where sigma -> 0).
        with np.errstate(divide="ignore", invalid="ignore"):
            half = self.t[ok] / (beta[ok] * np.sqrt(self.n[ok]))
        first_step = np.where(np.isfinite(half) & (half > 0), half, self.scale[ok])
        for side, out in ((-1, low), (+1, high)):
            # Each side starts where p >= level: the common range's end on that side, or the maximum. An infinite
            # start (no seed bounded on both sides) is open on its own side; for the other side, a finite point
            # with p >= level is found far out towards it.
            start = np.where(common[ok], lowest[ok] if side < 0 else highest[ok], estimate[ok])
            need = ~np.isfinite(start) & (self._limit(side)[ok] < level)
            if need.any():
                start[need] = self._far(ok[need], level[need], np.sign(start[need]))
            out[ok] = self._end(ok, start, level, side, first_step, beta[ok])
        return estimate, low, high, self.n


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
