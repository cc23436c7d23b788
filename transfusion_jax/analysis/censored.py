"""The mean of normal values seen only as ranges: an interval-censored profile-likelihood interval, vectorised over
independent sets of values (docs/statistics.md, "The interval-censored profile likelihood", derives it).
analysis.stats uses it for steps to threshold seen on an evaluation grid; the coverage simulations solve thousands
of studies in one call.

Every root is found by scipy.optimize.elementwise (`bracket_root`, then `find_root`: Chandrupatla's method),
which works elementwise on arrays and drops each element once it has converged. The problem's concavity supplies
what those tools need: monotone functions and, from a point known to lie inside, a side to search. Written here:
the censored normal log-likelihood with its derivatives along the lines of the concave parametrisation
(scipy.stats.CensoredData with norm.fit gives one maximum-likelihood fit at a time, by a generic optimiser,
without the profile, its derivatives or rows in batches) and `_log_mass` (below, why).
"""

import math
import warnings

import numpy as np
from scipy import special
from scipy import stats as scipy_stats
from scipy.optimize import elementwise


def interval_censored_t(
    lo: np.ndarray, hi: np.ndarray, confidence: float
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

    Estimate: the maximum-likelihood mu. Where every value's bounds share a common range of positive width the
    likelihood tends to its supremum, 1 (sigma -> 0), all over it and the estimate is its midpoint (its finite end
    if it is a half-line). Where they share one point c only (cells that touch) the supremum is lower: a seed whose
    range ends at c keeps at most probability 1/2 there, and the best is the binomial fit of how many such ranges
    lie above c and how many below, approached as mu -> c (the estimate); an exact value at c makes the
    likelihood unbounded and the interval that point, as the t interval of equal values. Ends closer than TOUCH
    (1e-12) times the row's largest finite |bound| count as one point (`_CensoredNormal._merge_touching`). Where no
    seed is bounded on both sides the maximum can lie at infinity (estimate +-inf), or the profile be flat
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
    lower tail) and for narrow ranges (midpoint rule with its second-order term). Written out because scipy's
    `stats.Normal().logcdf(x, y)` subtracts in log space and loses digits as the range narrows (3e-8 wrong at
    width 1e-8, where cells of tiny width meet a small sigma) and is about 9x slower per call."""
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


def _root(f, low, high, args, tolerance, xmin=None, xmax=None):
    """Per element, the root of f(x, *args), monotone in x: scipy's bracket search grows (low, high) (never past
    xmin / xmax) until f changes sign, then Chandrupatla's method refines it to within `tolerance`. A root that
    cannot be bracketed means the concavity these searches rest on failed numerically: an error, not a guess."""
    bracket = elementwise.bracket_root(f, low, high, xmin=xmin, xmax=xmax, args=args)
    found = elementwise.find_root(f, bracket.bracket, args=args, tolerances={"xatol": tolerance})
    if not np.all(found.success):
        failed = np.unique(found.status[~found.success]).tolist()
        raise RuntimeError(f"No root found for {np.sum(~found.success)} of {found.x.size} rows (statuses {failed}).")
    return found.x


class _CensoredNormal:
    """The computation behind `interval_censored_t` for rows of values [rows, seeds]. Each row is solved on its
    values standardised to (value - centre) / scale (centre and scale: the midpoint and spread of its finite
    bounds), so that every tolerance is absolute; the normal model and the interval are equivariant under it.

    Notation: a line in the concave parametrisation (alpha, beta) = (mu / sigma, 1 / sigma) is alpha = offset +
    mu * beta; along it, with down = lo - mu and up = hi - mu, a value seen as a range has probability
    Phi(beta up - offset) - Phi(beta down - offset) and an exact value (lo = hi) density beta phi(beta up -
    offset); the log-likelihood l is concave in beta. The profile p(mu) is the line offset = 0. The maximum over
    all (alpha, beta) is found along the lines mu = 0, offset = alpha, where h(alpha) = max_beta l(alpha, beta) is
    concave (a partial maximum of a concave function), so h' changes sign once."""

    TOLERANCE = 1e-10  # on mu, in units of the row's scale
    BETA_TOLERANCE = 1e-11  # on ln beta and on alpha: the estimate alpha / beta inherits it
    TOUCH = 1e-12  # ends closer than this times the row's largest finite |bound| are one point

    def __init__(self, lo, hi, confidence):
        ends = np.concatenate([lo, hi], axis=1)
        ends = np.where(np.isfinite(ends), ends, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows without a finite bound (n = 0)
            smallest, largest = np.nanmin(ends, axis=1), np.nanmax(ends, axis=1)
        magnitude = np.fmax(np.abs(smallest), np.abs(largest))
        self.center = np.where(np.isfinite(smallest), (smallest + largest) / 2, 0.0)
        self.scale = np.where(largest > smallest, largest - smallest, 1.0)  # NaN compares False: 1.0
        self.lo = (lo - self.center[:, None]) / self.scale[:, None]
        self.hi = (hi - self.center[:, None]) / self.scale[:, None]
        self._merge_touching(np.where(np.isfinite(magnitude), magnitude, 0.0))
        self.exact = self.lo == self.hi
        self.n = (np.isfinite(lo) | np.isfinite(hi)).sum(axis=1)
        self.finite = (np.isfinite(lo) & np.isfinite(hi)).any(axis=1)  # some seed bounded on both sides
        self.left_open = (np.isneginf(lo) & np.isfinite(hi)).sum(axis=1)
        self.right_open = (np.isfinite(lo) & np.isposinf(hi)).sum(axis=1)
        n = np.maximum(self.n, 2)
        self.t = scipy_stats.t.ppf((1 + confidence) / 2, n - 1)
        self.drop = n / 2 * np.log1p(self.t**2 / (n - 1))  # allowed fall of the profile log-likelihood

    def _merge_touching(self, magnitude):
        """Makes ends that differ only by rounding equal, in the standardised rows. The likelihood's supremum
        jumps where ranges stop overlapping (1 over a common range of any positive width, a binomial fit below 1
        where they only touch, docs/statistics.md), so one ulp must not decide it. Bounds computed from terms
        up to ~40 times their size (contrasts of log steps) are off by up to ~1e-14 of the row's largest |bound|;
        no data resolve the mean to 1e-12 of it (the ends are located to 1e-10 of the spread). A range
        narrower than that is an exact value (its middle); where the seeds' largest lower end and smallest upper
        end are that close, the ranges meet in one point (their middle) and every end that close to it is set to
        it; where a common range is wider, ends that close to either of its ends are set to that end."""
        tol = (self.TOUCH * magnitude / self.scale)[:, None]
        with np.errstate(invalid="ignore"):  # inf - inf (a side without finite ends): never near
            narrow = self.hi - self.lo <= tol
            middle = (self.lo + self.hi) / 2
            self.lo, self.hi = np.where(narrow, middle, self.lo), np.where(narrow, middle, self.hi)
            lowest, highest = self.lo.max(axis=1, keepdims=True), self.hi.min(axis=1, keepdims=True)
            point = np.abs(lowest - highest) <= tol
            low_end = np.where(point, (lowest + highest) / 2, lowest)
            high_end = np.where(point, (lowest + highest) / 2, highest)
            common = lowest <= highest + tol
            self.lo = np.where(common & (np.abs(self.lo - low_end) <= tol), low_end, self.lo)
            self.hi = np.where(common & (np.abs(self.hi - high_end) <= tol), high_end, self.hi)

    # --- the inner problem: the best beta >= 0 along a line

    def _terms(self, rows, mu, offset, beta):
        """Sums over seeds of l, dl/dbeta and dl/doffset at beta > 0."""
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
            d_offset = np.where(exact, y_, fx - fy)
        return value.sum(1), d_beta.sum(1), d_offset.sum(1)

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

    def line_max(self, rows, mu, offset):
        """(value, beta, dl/doffset) at the best beta >= 0 along each row's line (the derivative by the envelope
        theorem). beta = 0 where no seed is bounded on both sides and l already falls there; elsewhere the root of
        dl/dbeta, which falls once (l is concave in beta), sought in ln beta (beta spans many orders of magnitude).
        A root rather than `find_minimum`: the derivative locates beta to ~1e-11, a minimiser of values to ~1e-8."""
        value, slope, d_offset = self._at_zero(rows, mu, offset)
        beta = np.zeros(rows.size)
        todo = np.flatnonzero(self.finite[rows] | (slope > 0))
        if todo.size:
            args = (rows[todo], mu[todo], offset[todo])
            log_beta = _root(self._beta_slope, -np.ones(todo.size), np.ones(todo.size), args, self.BETA_TOLERANCE)
            beta[todo] = np.exp(log_beta)
            value[todo], _, d_offset[todo] = self._terms(*args, beta[todo])
        return value, beta, d_offset

    def _beta_slope(self, log_beta, rows, mu, offset):
        """dl/dbeta at beta = exp(log_beta), falling in log_beta."""
        return self._terms(rows, mu, offset, np.exp(log_beta))[1]

    def profile(self, rows, mu):
        """p(mu), the profile log-likelihood: the maximum over sigma along the line offset = 0."""
        return self.line_max(rows, mu, np.zeros(rows.size))[0]

    # --- the outer problem: the maximum, then each end

    def _limit(self, side):
        """p at mu -> side * inf: -inf if a seed is bounded on both sides; else the best binomial fit of the
        half-open seeds' sides where more of them point that way, n ln 1/2 otherwise."""
        toward, away = (self.left_open, self.right_open) if side < 0 else (self.right_open, self.left_open)
        total = np.maximum(toward + away, 1)
        fit = special.xlogy(toward, toward / total) + special.xlogy(away, away / total)
        value = np.where(toward > away, fit, total * math.log(0.5))
        return np.where(self.finite, -np.inf, value)

    def _point_supremum(self, point):
        """sup l where the ranges meet in the one point c = `point` (no exact value there, which makes l
        unbounded): with a = (mu - c) / sigma, a range [c, hi] has probability <= Phi(a), a range [lo, c] <=
        Phi(-a), one with c inside it <= 1, and all three bounds are approached as sigma -> 0 at fixed a. So the
        supremum is max_a u ln Phi(a) + d ln Phi(-a) (u ranges above c, d below), the binomial fit
        u ln(u / k) + d ln(d / k), k = u + d, approached as mu -> c from the side of the more numerous ranges."""
        c = point[:, None]
        up = ((self.lo == c) & (self.hi > c)).sum(axis=1)
        down = ((self.hi == c) & (self.lo < c)).sum(axis=1)
        k = np.maximum(up + down, 1)
        return special.xlogy(up, up / k) + special.xlogy(down, down / k)

    def _maximum(self, rows):
        """(estimate, max p, its beta) where the seeds' ranges share no point: the root of h'(alpha). At beta = 0
        (no seed bounded on both sides) the estimate alpha / beta is +-inf, unless as many seeds point each way:
        then alpha = 0 and p is n ln 1/2 everywhere (estimate: the middle of the bounds, 0 here)."""
        zeros = np.zeros(rows.size)

        def h_slope(alpha, r):
            return self.line_max(r, np.zeros(r.size), alpha)[2]

        alpha = _root(h_slope, zeros - 1, zeros + 1, (rows,), self.BETA_TOLERANCE)
        value, beta, _ = self.line_max(rows, zeros, alpha)
        balanced = self.left_open[rows] == self.right_open[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            estimate = np.where(beta > 0, alpha / beta, np.where(balanced, 0.0, np.sign(alpha) * np.inf))
        return estimate, value, beta

    def _end(self, rows, start, level, side, step):
        """The end on `side` (-1 / +1) of {p >= level}: open where p's limit there is >= level; else the root of
        p - level beyond `start`, a point with p >= level (its superlevel sets are intervals, so p falls
        monotonically away from it). At `start` p - level counts as top - level = drop: a common range's end is
        where p jumps down from its supremum (docs/statistics.md). An infinite start (the maximum lies at
        infinity on the other side) leaves the search unbounded: p - level is then monotone on the whole line."""
        end = np.full(rows.size, side * np.inf)
        todo = np.flatnonzero(self._limit(side)[rows] < level)
        if not todo.size:
            return end
        rows, start, level, step = rows[todo], start[todo], level[todo], step[todo]

        def gap(mu, r, s, lv):
            out = self.drop[r].copy()
            beyond = side * (mu - s) > 0
            out[beyond] = self.profile(r[beyond], mu[beyond]) - lv[beyond]
            return out

        known = np.isfinite(start)
        inner, outer = np.where(known, start, -side), np.where(known, start + side * step, side)
        low, high = np.minimum(inner, outer), np.maximum(inner, outer)
        limits = {"xmin": start} if side > 0 else {"xmax": start}
        end[todo] = _root(gap, low, high, (rows, start, level), self.TOLERANCE, **limits)
        return end

    def solve(self):
        """(estimate, low, high, n) per row, in the rows' own units."""
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
        # max p: 0 (sigma -> 0) on a common range of positive width; lower where the ranges meet in one point.
        top, beta = np.where(common & (lowest == highest), self._point_supremum(middle), 0.0), np.full(rows, np.nan)
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
        # First probe: the t interval's half-width for the fitted sigma = 1 / beta (1, the row's scale, where
        # sigma -> 0).
        with np.errstate(divide="ignore", invalid="ignore"):
            half = self.t[ok] / (beta[ok] * np.sqrt(self.n[ok]))
        step = np.where(np.isfinite(half) & (half > self.TOLERANCE), half, 1.0)
        for side, out in ((-1, low), (+1, high)):
            # Each side starts where p >= level: the common range's end on that side, or the maximum.
            start = np.where(common[ok], lowest[ok] if side < 0 else highest[ok], estimate[ok])
            out[ok] = self._end(ok, start, level, side, step)
        center, scale = self.center, self.scale
        return center + scale * estimate, center + scale * low, center + scale * high, self.n
