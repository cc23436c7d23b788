"""analysis.censored.interval_censored_t against independent references: a profile likelihood computed with
scipy.optimize (bounded Brent over log sigma for each mu, brentq for the ends) and scipy's t interval where every
value is known exactly; the cases where the profile is flat or jumps, ranges that meet in one point (exactly or
up to rounding); rows solved together equal rows solved alone; bad input. Its coverage, inside the steps
intervals: test_stats_coverage.py."""

import functools
import math

import numpy as np
import pytest
from scipy import optimize, special
from scipy import stats as scipy_stats

from transfusion_jax.analysis import censored


def _log_likelihood(lo, hi, mu, log_sigma):
    """The censored normal log-likelihood (density for exact values, up to a constant), written independently: the
    log of a range's mass from the logs of its two normal tails, taken on the side where the range lies in the
    lower tail (so that far from mu it keeps falling instead of underflowing to a flat floor that misleads the
    searches over sigma and mu)."""
    sigma = math.exp(log_sigma)
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    a, b = np.where(a > 0, -b, a), np.where(a > 0, -a, b)
    with np.errstate(divide="ignore"):
        log_mass = special.log_ndtr(b) + np.log1p(-np.exp(special.log_ndtr(a) - special.log_ndtr(b)))
    density = -0.5 * np.where(np.isfinite(b), b, 0) ** 2 - log_sigma
    return float(np.sum(np.where(lo == hi, density, log_mass)))


def _profile(lo, hi, mu, bounds=(-15, 8)):
    """max over sigma of the log-likelihood at mu, by bounded Brent over log sigma."""
    best = optimize.minimize_scalar(lambda x: -_log_likelihood(lo, hi, mu, x), bounds=bounds, method="bounded",
                                    options={"xatol": 1e-11})  # fmt: skip
    return -best.fun


def _drop(n, confidence):
    t = scipy_stats.t.ppf((1 + confidence) / 2, n - 1)
    return n / 2 * math.log1p(t * t / (n - 1))


def _profile_reference(lo, hi, confidence=0.95):
    """The profile-likelihood interval of interval_censored_t by scipy.optimize: the profile's maximum over mu from
    a grid refined by Brent, the ends by brentq."""
    keep = np.isfinite(lo) | np.isfinite(hi)
    lo, hi = lo[keep], hi[keep]
    ends = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)]])
    grid = np.linspace(ends.min() - 1, ends.max() + 1, 41)
    k = int(np.argmax([_profile(lo, hi, m) for m in grid]))
    best = optimize.minimize_scalar(
        lambda m: -_profile(lo, hi, m), bracket=(grid[k - 1], grid[k], grid[k + 1]), tol=1e-11
    )
    level = -best.fun - _drop(lo.size, confidence)
    low = optimize.brentq(lambda m: _profile(lo, hi, m) - level, ends.min() - 30, best.x, xtol=1e-12)
    high = optimize.brentq(lambda m: _profile(lo, hi, m) - level, best.x, ends.max() + 30, xtol=1e-12)
    return best.x, low, high


def test_interval_censored_t_matches_an_independent_profile_likelihood():
    """Interval-censored, one- and two-sided censored and exact values, at two confidence levels."""
    rng = np.random.default_rng(5)
    for trial in range(6):
        d = rng.normal(0, 0.4, 5)
        width, position = rng.uniform(0.05, 0.5, 5), rng.uniform(0, 1, 5)
        lo, hi = d - position * width, d + (1 - position) * width
        if trial >= 2:
            hi[0] = np.inf  # right-censored
        if trial >= 3:
            lo[1] = -np.inf  # left-censored
        if trial >= 4:
            lo[2] = hi[2] = d[2]  # exactly known
        if trial == 5:
            lo[3], hi[3] = -np.inf, np.inf  # no information: does not count
        confidence = 0.95 if trial % 2 else 0.8
        got = censored.interval_censored_t(lo, hi, confidence)
        assert [float(x) for x in got[:3]] == pytest.approx(_profile_reference(lo, hi, confidence), abs=2e-7)
        assert int(got[3]) == (4 if trial == 5 else 5)


def test_exact_values_give_the_t_interval():
    x = np.array([0.31, -0.12, 0.05, 0.22, 0.4])
    got = censored.interval_censored_t(x, x, 0.9)
    want = scipy_stats.ttest_1samp(x, 0.0).confidence_interval(0.9)
    assert [float(v) for v in got[:3]] == pytest.approx([x.mean(), want.low, want.high], rel=1e-12)


def test_ends_beyond_a_common_range_where_the_profile_falls_slowly():
    """Seeds of one simulated study (steps contrasts on the miniature grid) whose ranges share [lowest, highest],
    two of them ending at highest up to one rounding: the likelihood's supremum (0) holds all over the range, and
    beyond highest the profile only falls gradually (to 2 ln 1/2 at first), so the upper end lies where the
    independently computed profile reaches -drop, well past highest (an earlier solver stopped at highest)."""
    lo = np.array([-0.7375989431307794, -0.7184649885442349, -0.7259370033829367, -0.5978370007556202,
                   -0.7184649885442349])  # fmt: skip
    hi = np.array([-0.4307829160924541, -0.42744401482694006, -0.43078291609245367, -0.28768207245178123,
                   -0.42744401482694006])  # fmt: skip
    estimate, low, high, n = (float(v) for v in censored.interval_censored_t(lo, hi, 0.95))
    assert estimate == pytest.approx((lo.max() + hi.min()) / 2, abs=1e-15) and n == 5
    drop = _drop(5, 0.95)
    want_high = optimize.brentq(lambda m: _profile(lo, hi, m) + drop, hi.min() + 1e-9, hi.min() + 1, xtol=1e-12)
    want_low = optimize.brentq(lambda m: _profile(lo, hi, m) + drop, lo.max() - 1, lo.max() - 1e-9, xtol=1e-12)
    assert (low, high) == pytest.approx((want_low, want_high), abs=1e-8)
    assert high > hi.min() + 1e-3


def _touching_reference(lo, hi, point, confidence=0.95):
    """The interval where the ranges meet only at `point`, by scipy.optimize: the profile's supremum as the larger
    of its bounded-Brent maxima over each side of the point (p jumps there; log sigma down to -30 lets mu come
    within ~1e-9 of it), the ends by brentq from just beside the point (an end at the point itself where p is
    already below the level there)."""
    profile = functools.partial(_profile, lo, hi, bounds=(-30, 8))
    top = max(
        -optimize.minimize_scalar(lambda m: -profile(m), bounds=bounds, method="bounded", options={"xatol": 1e-10}).fun
        for bounds in ((point - 1, point - 1e-9), (point + 1e-9, point + 1))
    )
    level = top - _drop(lo.size, confidence)
    ends = []
    for side in (-1, 1):
        near = point + side * 1e-9
        far = point + side * 3
        ends.append(optimize.brentq(lambda m: profile(m) - level, near, far, xtol=1e-12) if profile(near) > level
                    else point)  # fmt: skip
    return top, ends


def test_ranges_that_meet_in_one_point():
    """Grid cells that touch: every range holds c = 0.3, two end there from below, one from above, two hold it
    inside (one of them right-censored). As sigma -> 0 a range ending at c keeps at most probability 1/2 at c,
    so the likelihood's supremum is not 1 (as over a common range of positive width) but the binomial fit
    ln(1/3) + 2 ln(2/3) = -1.91, approached as mu -> c from below; the level max - drop is that much lower and
    the interval wider than when the supremum is taken to be 0 (an earlier solver did: [0.256, 0.319]). Ends one
    ulp apart or overlapping by one ulp (rounding, as in contrasts of log steps or of large values) give the same
    interval. With ten
    seeds, nine ending at c from below, p just above c lies below the level: the upper end is c itself."""
    c = 0.3
    lo = np.array([c - 0.146, c - 0.29, c, c - 0.2, c - 0.05])
    hi = np.array([c, c, c + 0.146, c + 0.1, np.inf])
    top, want = _touching_reference(lo, hi, c)
    assert top == pytest.approx(math.log(1 / 3) + 2 * math.log(2 / 3), abs=1e-8)  # the reference's own check
    # Touching, one ulp apart, overlapping by one ulp; and all of it moved by 1e4, where one ulp (1.8e-12) is
    # more than 1e-12 of the values' spread: what counts as rounding scales with the values' magnitude.
    for offset in (0.0, 1e4):
        for shift in (0.0, np.spacing(c + offset), -np.spacing(c + offset)):
            moved = lo + offset
            moved[2] += shift
            estimate, low, high, n = (float(x) for x in censored.interval_censored_t(moved, hi + offset, 0.95))
            assert estimate == pytest.approx(c + offset, abs=1e-15 + 1e-15 * offset) and n == 5
            assert (low, high) == pytest.approx((want[0] + offset, want[1] + offset), abs=1e-8)
    # As contrasts of log steps meet: cells (1, 2] - (3, 4] and (4, 5] - (5, 6] end at ln 2 - ln 3 and begin at
    # ln 4 - ln 6, one rounding apart; the interval is the one of ranges that touch exactly.
    log = np.log
    lo = np.array([-log(4), log(4) - log(6), -log(4), log(2) - log(4), -log(3)])
    hi = np.array([log(2) - log(3), 0.0, log(2) - log(3), 0.0, 0.0])
    assert lo[1] != hi[0]
    touching = lo.copy()
    touching[1] = hi[0]
    _, want = _touching_reference(touching, hi, hi[0])
    got = [float(x) for x in censored.interval_censored_t(lo, hi, 0.95)[1:3]]
    assert got == pytest.approx(want, abs=1e-8)
    rng = np.random.default_rng(3)
    lo = np.append(c - rng.uniform(0.1, 0.3, 9), c)
    hi = np.append(np.full(9, c), c + 0.2)
    top, want = _touching_reference(lo, hi, c)
    assert top == pytest.approx(9 * math.log(0.9) + math.log(0.1), abs=1e-8) and want[1] == c
    _, low, high, _ = (float(x) for x in censored.interval_censored_t(lo, hi, 0.95))
    assert (low, high) == pytest.approx(want, abs=1e-8)


def test_an_exact_value_where_ranges_meet_makes_the_interval_that_point():
    """An exact value at the point where two ranges touch (up to rounding): the density term grows without bound
    as sigma -> 0 while the ranges keep 1/2 each, so the likelihood is unbounded there and the interval is the
    point (as for equal exact values)."""
    c = 0.3
    for shift in (0.0, np.spacing(c), -np.spacing(c)):
        lo, hi = np.array([c - 0.2, c + shift, c]), np.array([c, c + 0.1, c])
        estimate, low, high, n = (float(x) for x in censored.interval_censored_t(lo, hi, 0.95))
        assert estimate == low == high == pytest.approx(c, abs=1e-15) and n == 3


def test_seeds_pointing_both_ways_in_balance_give_a_flat_profile():
    """No seed bounded on both sides and as many open upwards as downwards, with no common range: every normal
    gives the pairs at most 1/4 each, approached as sigma -> inf for any mu, so the profile is flat at n ln 1/2.
    Nothing is excluded and the estimate is the middle of the finite bounds (not +-inf: that is for an
    unbalanced count, where the best fit lies at infinity)."""
    inf = math.inf
    lo = np.array([[0.4, 0.0, -inf, -inf], [0.0, -inf, -inf, -inf], [0.4, 0.0, 0.2, -inf]])
    hi = np.array([[inf, inf, -0.1, -0.3], [inf, -0.5, inf, inf], [inf, inf, inf, -0.3]])
    estimate, low, high, n = censored.interval_censored_t(lo, hi, 0.95)
    assert estimate[:2].tolist() == pytest.approx([0.05, -0.25], abs=1e-12) and estimate[2] == inf
    assert np.all(low == -inf) and np.all(high == inf) and n.tolist() == [4, 2, 4]
    for mu in (-3.0, 0.05, 5.0):  # the reference stops at sigma = e^8: n ln 1/2 to within 1e-3
        assert _profile(lo[0], hi[0], mu) == pytest.approx(4 * math.log(0.5), abs=1e-3)


def test_rows_solved_together_equal_rows_solved_alone():
    """The leading axes are independent sets of values: one call on [2, 3, seeds] equals one call per row."""
    rng = np.random.default_rng(9)
    d = rng.normal(0, 0.3, (2, 3, 4))
    lo, hi = d - rng.uniform(0, 0.2, d.shape), d + rng.uniform(0, 0.2, d.shape)
    hi[0, 1, 0], lo[1, 2, 3] = np.inf, -np.inf
    lo[1, 0, :2], hi[1, 0, :2] = -np.inf, np.inf  # two seeds with no information: n = 2
    together = censored.interval_censored_t(lo, hi, 0.95)
    assert all(x.shape == (2, 3) for x in together)
    for index in np.ndindex(2, 3):
        alone = censored.interval_censored_t(lo[index][None], hi[index][None], 0.95)
        assert [float(x[index]) for x in together] == pytest.approx([float(x[0]) for x in alone], abs=1e-9)
    assert together[3][1, 0] == 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one shape with a seeds axis"):
        censored.interval_censored_t(np.zeros(3), np.zeros(4), 0.95)
    with pytest.raises(ValueError, match="lo <= hi"):
        censored.interval_censored_t(np.array([0.0, 1.0]), np.array([0.5, 0.5]), 0.95)
    with pytest.raises(ValueError, match="lo <= hi"):
        censored.interval_censored_t(np.array([0.0, np.nan]), np.array([1.0, 1.0]), 0.95)
    with pytest.raises(ValueError, match="confidence"):
        censored.interval_censored_t(np.zeros(3), np.ones(3), 95)
