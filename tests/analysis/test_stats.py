"""Intervals, DeLong and verdicts on constructed inputs, against independent references: scipy's t test, sklearn's
AUC, DeLong's structural components computed by brute force over every (positive, negative) pair, the AUC
contrast's variance written out from them, a profile likelihood computed with scipy.optimize, a jackknife written
out by hand. Coverage in simulated studies: here for DeLong alone, test_stats_coverage.py for the rest."""

import math

import numpy as np
import pytest
from scipy import optimize, special
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from transfusion_jax.analysis import stats


def test_t_interval_matches_scipy():
    x = [0.012, -0.003, 0.021, 0.008]
    got = stats.t_interval(x)
    want = scipy_stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert got.estimate == pytest.approx(np.mean(x))
    assert (got.low, got.high) == pytest.approx((want.low, want.high), rel=1e-12)
    assert got.n == 4 and got.defined
    # An independent variance adds inside the square root: s^2/n + v.
    wider = stats.t_interval(x, extra_variance=1e-4)
    half = scipy_stats.t.ppf(0.975, 3) * math.sqrt(np.var(x, ddof=1) / 4 + 1e-4)
    assert wider.high - wider.estimate == pytest.approx(half, rel=1e-12)
    one = stats.t_interval([0.5])
    assert one.estimate == 0.5 and not one.defined


def test_paired_keeps_keys_with_both_values():
    keys, a, b = stats.paired({0: 1.0, 1: 2.0, 2: None, 3: 4.0}, {0: 0.5, 2: 1.0, 3: 3.0, 4: 9.0})
    assert (keys, a, b) == ([0, 3], [1.0, 4.0], [0.5, 3.0])


def _brute_force_delong(labels, scores):
    """DeLong et al. (1988) by definition: psi(x, y) = 1 if x > y, 1/2 if equal, over every (positive, negative)
    pair; structural components V10 (per positive), V01 (per negative); S = S10/m + S01/n with ddof-1 covariances."""
    labels = np.asarray(labels, bool)
    aucs, v10, v01 = [], [], []
    for s in scores:
        x, y = s[labels][:, None], s[~labels][None, :]
        psi = (x > y) + 0.5 * (x == y)
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = labels.sum(), (~labels).sum()
    return np.array(aucs), np.cov(np.array(v10)) / m + np.cov(np.array(v01)) / n


def test_delong_matches_brute_force_and_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.uniform(size=120) < 0.3
    base = labels * 1.0 + rng.normal(size=120)
    scores = np.stack([base, base + rng.normal(0, 0.5, 120), np.round(rng.normal(size=120) + labels, 1)])  # ties
    aucs, cov = stats.delong(labels, scores)
    want_aucs, want_cov = _brute_force_delong(labels, scores)
    np.testing.assert_allclose(aucs, [roc_auc_score(labels, s) for s in scores], rtol=0, atol=1e-12)
    np.testing.assert_allclose(aucs, want_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, want_cov, rtol=1e-10, atol=1e-15)
    with pytest.raises(ValueError, match="at least 2 positive and 2 negative"):
        stats.delong(np.array([1, 0, 0, 0]), scores[:, :4])


def test_delong_interval_covers_the_true_difference():
    """Two correlated scorers with a known population AUC difference (binormal model, closed form): the 95% DeLong
    interval of one test set covers it in about 95% of simulated test sets."""
    rng = np.random.default_rng(1)
    # Positives ~ N(mu, 1), negatives ~ N(0, 1): AUC = Phi(mu / sqrt(2)).
    mu_a, mu_b = 1.2, 0.9
    truth = scipy_stats.norm.cdf(mu_a / math.sqrt(2)) - scipy_stats.norm.cdf(mu_b / math.sqrt(2))
    covered, trials = 0, 400
    for _ in range(trials):
        labels = np.arange(200) < 80
        shared = rng.normal(size=200)  # the two scorers share most of their noise, as two models on one image do
        a = mu_a * labels + 0.8 * shared + 0.6 * rng.normal(size=200)
        b = mu_b * labels + 0.8 * shared + 0.6 * rng.normal(size=200)
        interval = stats.averaged_auc_difference(labels, [a], [b])
        covered += interval.low <= truth <= interval.high
    assert 0.92 <= covered / trials <= 0.98, covered / trials


def _contrast_by_hand(labels, groups, coefficients, confidence=0.95):
    """docs/statistics.md's interval written out from the brute-force DeLong covariance: s^2/n plus the mean
    cross-seed covariance of the per-seed contrasts' test errors, at least DeLong's variance of the mean (then
    normal), else t with Welch-Satterthwaite df."""
    n = len(groups[0])
    aucs, cov = _brute_force_delong(labels, np.stack([s for g in groups for s in g]))
    per_seed = np.asarray(coefficients) @ aucs.reshape(len(groups), n)
    errors = np.zeros((n, n))  # Cov(e_s, e_t) = sum_g sum_h c_g c_h Cov(AUC[g, s], AUC[h, t])
    for g, cg in enumerate(coefficients):
        for h, ch in enumerate(coefficients):
            errors += cg * ch * cov[g * n : (g + 1) * n, h * n : (h + 1) * n]
    shared = (errors.sum() - np.trace(errors)) / (n * (n - 1))
    seeds = np.var(per_seed, ddof=1) / n
    variance = max(seeds + shared, errors.sum() / n**2)
    df = variance**2 / (seeds**2 / (n - 1)) if seeds + shared > errors.sum() / n**2 else math.inf
    half = scipy_stats.t.ppf((1 + confidence) / 2, df) * math.sqrt(variance)
    return per_seed.mean(), per_seed.mean() - half, per_seed.mean() + half, shared


def test_averaged_difference_adds_the_shared_test_noise_to_the_seeds_spread():
    rng = np.random.default_rng(2)
    labels = np.arange(300) < 100
    image = rng.normal(size=300)  # every model errs on the same hard images: seeds' test errors correlate
    a = [labels * 1.5 + image + rng.normal(size=300) for _ in range(3)]
    b = [labels * 1.0 + image + rng.normal(size=300) for _ in range(3)]
    got = stats.averaged_auc_difference(labels, a, b)
    estimate, low, high, shared = _contrast_by_hand(labels, [a, b], [1.0, -1.0])
    assert got.estimate == pytest.approx(estimate, abs=1e-12)
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-9)
    assert shared > 0  # the images' shared noise is there, and not in the seeds' spread
    diffs = np.array([roc_auc_score(labels, x) - roc_auc_score(labels, y) for x, y in zip(a, b)])
    seeds_only = stats.t_interval(diffs)
    assert got.high - got.low != pytest.approx(seeds_only.high - seeds_only.low)
    assert "DeLong" in got.method and got.n == 3
    one = stats.averaged_auc_difference(labels, a[:1], b[:1])  # one seed: DeLong's part only, normal quantile
    _, cov = _brute_force_delong(labels, np.stack([a[0], b[0]]))
    half = scipy_stats.norm.ppf(0.975) * math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert one.high - one.estimate == pytest.approx(half, rel=1e-9) and one.n == 1 and "one seed" in one.method


def test_auc_contrast_of_four_groups():
    """A difference of differences: its estimate from sklearn's AUCs, its interval from the brute-force DeLong
    covariance (`_contrast_by_hand`); a pair of identical groups with opposite signs cancels exactly, leaving A - B;
    and the public function equals the batch one the coverage simulations use."""
    rng = np.random.default_rng(3)
    labels = np.arange(200) < 70
    image = rng.normal(size=200)
    groups = [[labels * mu + 0.7 * image + rng.normal(size=200) for _ in range(4)] for mu in (1.5, 1.0, 1.2, 1.1)]
    coefficients = [1.0, -1.0, -1.0, 1.0]
    got = stats.auc_contrast(labels, groups, coefficients)
    sk = np.array([[roc_auc_score(labels, s) for s in g] for g in groups])
    assert got.estimate == pytest.approx((sk[0] - sk[1] - sk[2] + sk[3]).mean(), abs=1e-12)
    _, low, high, _ = _contrast_by_hand(labels, groups, coefficients)
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-9)
    cancelled = stats.auc_contrast(labels, [groups[0], groups[1], groups[2], groups[2]], coefficients)
    plain = stats.averaged_auc_difference(labels, groups[0], groups[1])
    assert (cancelled.estimate, cancelled.low, cancelled.high) == pytest.approx(
        (plain.estimate, plain.low, plain.high), rel=1e-9
    )
    aucs, cov = stats.delong(labels, np.stack([s for g in groups for s in g]))
    batch = stats.seed_averaged_contrast(aucs.reshape(4, 4)[None], cov[None], coefficients)
    assert [float(x[0]) for x in batch[:3]] == pytest.approx([got.estimate, got.low, got.high], rel=1e-12)
    with pytest.raises(ValueError, match="one coefficient per group"):
        stats.auc_contrast(labels, groups, [1.0, -1.0])
    with pytest.raises(ValueError, match="same number"):
        stats.auc_contrast(labels, [groups[0], groups[1][:3]], [1.0, -1.0])


def test_delong_on_batches_equals_one_study_at_a_time():
    rng = np.random.default_rng(4)
    labels = rng.uniform(size=60) < 0.4
    scores = np.round(rng.normal(size=(3, 2, 4, 60)) + labels, 1)  # rounded: many ties
    aucs, cov = stats.delong(labels, scores)
    assert aucs.shape == (3, 2, 4) and cov.shape == (3, 2, 4, 4)
    for index in np.ndindex(3, 2):
        want_aucs, want_cov = _brute_force_delong(labels, scores[index])
        np.testing.assert_allclose(aucs[index], want_aucs, rtol=0, atol=1e-12)
        np.testing.assert_allclose(cov[index], want_cov, rtol=1e-10, atol=1e-15)


# ------------------------------------------------------------------------------------ steps to threshold


def test_steps_interval_is_the_t_interval_when_cells_are_tiny():
    """An evaluation at every step of a long run: cells of width ~1e-5 on the log scale, so the interval is
    scipy's paired t interval of the log steps (the threshold's construction makes it exact in the limit)."""
    rng = np.random.default_rng(6)
    grid = np.arange(1, 400_001)
    log_a = np.log(100_000) + rng.normal(0, 0.3, 5)
    log_b = np.log(80_000) + rng.normal(0, 0.3, 5)
    first_a, first_b = [int(np.ceil(np.exp(x))) for x in log_a], [int(np.ceil(np.exp(x))) for x in log_b]
    got = stats.steps_interval(first_a, first_b, grid)
    diffs = np.log(first_a) - np.log(first_b)
    want = scipy_stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert (got.low, got.high) == pytest.approx((want.low, want.high), abs=1e-4)
    assert got.estimate == pytest.approx(diffs.mean(), abs=1e-4) and got.n == 5 and np.isfinite(got.high)


GRID = np.unique(np.round(np.geomspace(1, 300, 40))).astype(int)  # the miniature study's evaluation steps


def test_steps_interval_of_seeds_in_the_same_cells_holds_the_cells():
    """Five seeds crossing in the same two cells: all that is known is that ln T_a - ln T_b lies in
    (ln 52 - ln 69, ln 60 - ln 60]; the interval holds that whole range (not width 0, as a t interval of the
    recorded steps would be)."""
    got = stats.steps_interval([60] * 5, [69] * 5, GRID)
    low_cells, high_cells = math.log(52 / 69), math.log(60 / 60)
    assert got.low <= low_cells + 1e-9 and got.high >= high_cells - 1e-9 and got.high - got.low > 0.28
    assert low_cells <= got.estimate <= high_cells and got.n == 5
    old = stats.t_interval(np.log([60] * 5) - np.log([69] * 5))
    assert old.high - old.low == 0  # the interval this replaces


def test_steps_interval_open_where_censoring_leaves_a_side_unbounded():
    """Run a never crosses in any seed: ln T_a - ln T_b > ln 300 - ln T_b, so the difference can be arbitrarily
    large (open upper end) while the lower end is bounded by the data; the lower end is where the profile
    likelihood of right-censored values falls by the t threshold (written out with scipy)."""
    first_b = [60, 69, 52, 80, 60]
    got = stats.steps_interval([None] * 5, first_b, GRID)
    assert got.high == math.inf and math.isfinite(got.low) and got.n == 5
    lo = math.log(300) - np.log(first_b)  # each seed: difference >= lo
    assert got.estimate == pytest.approx(lo.max())

    def profile(mu):  # sup over sigma of sum log P(d >= lo) = sum log Phi((mu - lo) / sigma)
        return -optimize.minimize_scalar(
            lambda s: -np.sum(special.log_ndtr((mu - lo) / math.exp(s))), bounds=(-15, 8), method="bounded"
        ).fun

    level = -5 / 2 * math.log1p(scipy_stats.t.ppf(0.975, 4) ** 2 / 4)
    want = optimize.brentq(lambda m: profile(m) - level, lo.min() - 10, lo.max() - 1e-9, xtol=1e-10)
    assert got.low == pytest.approx(want, abs=1e-6)
    # The same runs the other way round: open below.
    flipped = stats.steps_interval(first_b, [None] * 5, GRID)
    assert flipped.low == -math.inf and flipped.high == pytest.approx(-got.low, abs=1e-9)
    # Fewer than 5 seeds bound their difference: 4 seeds cannot bound it (n ln 2 < the t threshold's drop).
    assert stats.steps_interval([None] * 4, first_b[:4], GRID).low == -math.inf
    # No seed bounded on both sides, 3 pointing down and 2 up: the best fit lies at -inf, nothing is excluded.
    mixed = stats.steps_interval([None, None, 52, 80, 60], [60, 144, None, None, None], GRID)
    assert (mixed.estimate, mixed.low, mixed.high, mixed.n) == (-math.inf, -math.inf, math.inf, 5)
    # One informative seed (both runs of the other never crossed): no interval; none: no estimate either.
    one = stats.steps_interval([None, 60], [None, 69], GRID)
    assert one.n == 1 and not one.defined and one.estimate == pytest.approx(math.log(52 / 69) / 2)
    none = stats.steps_interval([None, None], [None, None], GRID)
    assert none.n == 0 and none.estimate is None and not none.defined


def test_steps_contrast_of_three_groups_and_bad_inputs():
    """C6's (1, -2, 1): interval arithmetic per seed, then the same interval as for the per-seed bounds."""
    firsts = [[93, 108, 80, 93, 125], [39, 45, 33, 39, 52], [22, 25, 19, 22, 29]]
    got = stats.steps_contrast(firsts, [1, -2, 1], GRID)
    lows, highs = zip(*(stats.log_step_bounds(f, GRID) for f in firsts))
    lo = lows[0] - 2 * highs[1] + lows[2]
    hi = highs[0] - 2 * lows[1] + highs[2]
    assert np.allclose(stats.steps_contrast_bounds(firsts, [1, -2, 1], GRID), (lo, hi))
    mid = [(a + b) / 2 for a, b in zip(lows, highs)]
    rounded = mid[0] - 2 * mid[1] + mid[2]
    want = stats.grid_interval((lo, hi), (rounded, rounded))
    assert (got.estimate, got.low, got.high) == pytest.approx([float(x) for x in want[:3]], rel=1e-12)
    with pytest.raises(ValueError, match="not an evaluation step"):
        stats.steps_interval([61] * 5, [60] * 5, GRID)
    with pytest.raises(ValueError, match="strictly increasing"):
        stats.steps_interval([60], [60], [1, 60, 60])
    with pytest.raises(ValueError, match="one first step per seed"):
        stats.steps_interval([60, 69], [60], GRID)


def test_log_step_bounds():
    grid = [1, 2, 4, 8]
    lo, hi = stats.log_step_bounds([1, 4, None], grid)
    assert lo.tolist() == [-math.inf, math.log(2), math.log(8)] and hi.tolist() == [0.0, math.log(4), math.inf]
    lo, hi = stats.log_step_bounds([1, 4, None], grid, rounded=True)
    assert lo[1] == hi[1] == pytest.approx(math.log(8) / 2) and lo[0] == -math.inf and hi[2] == math.inf


# --------------------------------------------------------------------------------- similarity between runs


def test_seed_pair_interval_is_the_jackknife_over_seeds():
    """Estimate: mean over same pairs - mean over cross pairs; variance: (n-1)/n sum (theta_-j - mean)^2 over the
    estimates without seed j (all its pairs), written out here for 4 seeds in the all-pairs design."""
    rng = np.random.default_rng(7)
    n = 4
    same = {(i, j): float(rng.normal(0.6, 0.05)) for i in range(n) for j in range(i + 1, n)}
    cross = {(i, j): float(rng.normal(0.55, 0.05)) for i in range(n) for j in range(n) if i != j}
    got = stats.seed_pair_interval(same, cross)
    estimate = np.mean(list(same.values())) - np.mean(list(cross.values()))

    def without(j):
        return np.mean([v for k, v in same.items() if j not in k]) - np.mean(
            [v for k, v in cross.items() if j not in k]
        )

    loo = np.array([without(j) for j in range(n)])
    half = scipy_stats.t.ppf(0.975, n - 1) * math.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
    assert (got.estimate, got.low, got.high) == pytest.approx((estimate, estimate - half, estimate + half), rel=1e-12)
    assert got.n == n
    two = stats.seed_pair_interval({(0, 1): 0.5}, {(0, 1): 0.4, (1, 0): 0.45})
    assert two.estimate == pytest.approx(0.075) and not two.defined  # 2 seeds: every pair holds both
    with pytest.raises(ValueError, match="i != j"):
        stats.seed_pair_interval({(0, 0): 0.5}, cross)
    with pytest.raises(ValueError, match="at least one cross pair"):
        stats.seed_pair_interval(same, {})


# ------------------------------------------------------------------------------------------- confidence


def test_every_interval_honours_its_confidence():
    """At 0.8 each interval function gives what its construction gives at 0.8 (scipy's quantiles), not its 0.95."""
    rng = np.random.default_rng(8)
    x = rng.normal(0.1, 0.2, 5)
    want = scipy_stats.ttest_1samp(x, 0.0).confidence_interval(0.8)
    got = stats.t_interval(x, confidence=0.8)
    assert (got.low, got.high) == pytest.approx((want.low, want.high), rel=1e-12)

    labels = np.arange(200) < 70
    image = rng.normal(size=200)
    a = [labels * 1.3 + image + rng.normal(size=200) for _ in range(4)]
    b = [labels * 1.0 + image + rng.normal(size=200) for _ in range(4)]
    for confidence in (0.8, 0.95):
        got = stats.averaged_auc_difference(labels, a, b, confidence)
        _, low, high, _ = _contrast_by_hand(labels, [a, b], [1.0, -1.0], confidence)
        assert (got.low, got.high) == pytest.approx((low, high), rel=1e-9)
    assert got.high - got.low > (g := stats.auc_contrast(labels, [a, b], [1, -1], 0.8)).high - g.low

    grid = np.arange(1, 400_001)
    first_a = [int(np.ceil(np.exp(v))) for v in np.log(100_000) + rng.normal(0, 0.3, 5)]
    first_b = [int(np.ceil(np.exp(v))) for v in np.log(80_000) + rng.normal(0, 0.3, 5)]
    got = stats.steps_interval(first_a, first_b, grid, confidence=0.8)
    want = scipy_stats.ttest_1samp(np.log(first_a) - np.log(first_b), 0.0).confidence_interval(0.8)
    assert (got.low, got.high) == pytest.approx((want.low, want.high), abs=1e-4)

    same = {(i, j): float(rng.normal(0.6, 0.05)) for i in range(5) for j in range(i + 1, 5)}
    cross = {(i, j): float(rng.normal(0.55, 0.05)) for i in range(5) for j in range(5) if i != j}
    wide, narrow = stats.seed_pair_interval(same, cross, 0.95), stats.seed_pair_interval(same, cross, 0.8)
    ratio = scipy_stats.t.ppf(0.9, 4) / scipy_stats.t.ppf(0.975, 4)
    assert narrow.high - narrow.low == pytest.approx(ratio * (wide.high - wide.low), rel=1e-12)


@pytest.mark.parametrize(
    "low,high,outcome",
    [
        (0.012, 0.03, "better"),
        (-0.03, -0.011, "worse"),
        (-0.004, 0.009, "equivalent"),
        (-0.004, 0.02, "inconclusive"),  # could be equivalent or better
        (0.002, 0.02, "inconclusive"),  # positive, but not surely beyond the margin
        (-0.02, 0.02, "inconclusive"),
    ],
)
def test_outcome_zones(low, high, outcome):
    interval = stats.Interval((low + high) / 2, low, high, 3, "t")
    assert stats.outcome(interval, margin=0.01) == outcome


def test_verdicts_come_from_intervals_never_from_point_estimates():
    equal = stats.Interval(0.001, -0.004, 0.006, 3, "t")
    helps = stats.Interval(0.024, 0.015, 0.033, 3, "t")
    vague = stats.Interval(0.024, -0.1, 0.15, 3, "t")  # a large point estimate that decides nothing
    assert stats.verdict(equal, 0.01, "equivalent") == ("supported", "equivalent")
    assert stats.verdict(helps, 0.01, "equivalent")[0] == "contradicted"
    assert stats.verdict(helps, 0.01, "greater")[0] == "supported"
    assert stats.verdict(equal, 0.01, "greater")[0] == "contradicted"
    assert stats.verdict(vague, 0.01, "greater")[0] == "inconclusive"
    faster = stats.Interval(-50_000, -60_000, -40_000, 5, "t")
    assert stats.verdict(faster, 1001, "less")[0] == "supported"
    one_seed = stats.Interval(0.02, 0.015, 0.025, 1, "DeLong only")
    assert stats.verdict(one_seed, 0.01, "greater") == ("inconclusive", "1 seed pair(s): training variance unknown")


def test_open_bounds_in_outcomes_and_verdicts():
    """An open side (-inf / +inf) is read as any bound: a lower end above the margin is 'better' whatever the
    upper end; an open side can never be 'equivalent'; open on both sides is 'inconclusive'."""
    inf = math.inf
    above = stats.Interval(0.5, 0.3, inf, 5, "steps")
    below = stats.Interval(-0.5, -inf, -0.3, 5, "steps")
    straddles = stats.Interval(0.05, -inf, 0.1, 5, "steps")
    nothing = stats.Interval(0.0, -inf, inf, 5, "steps")
    assert above.defined and nothing.defined
    assert [stats.outcome(i, 0.2) for i in (above, below, straddles, nothing)] == [
        "better",
        "worse",
        "inconclusive",
        "inconclusive",
    ]
    assert stats.verdict(above, 0.2, "greater") == ("supported", "better")
    assert stats.verdict(below, 0.2, "less") == ("supported", "worse")
    assert stats.verdict(below, 0.2, "equivalent") == ("contradicted", "worse")
    assert stats.verdict(straddles, 0.2, "equivalent") == ("inconclusive", "inconclusive")
    assert stats.verdict(nothing, 0.2, "greater") == ("inconclusive", "inconclusive")


def _iv(low, high, estimate=None, n=5):
    return stats.Interval((low + high) / 2 if estimate is None else estimate, low, high, n, "t")


@pytest.mark.parametrize(
    "interval,rule,want",
    [
        (_iv(-0.01, 0.015), stats.Rule("equivalence", 0.02), "supported"),
        (_iv(0.025, 0.05), stats.Rule("equivalence", 0.02), "contradicted"),
        (_iv(-0.05, -0.021), stats.Rule("equivalence", 0.02), "contradicted"),
        (_iv(0.01, 0.03), stats.Rule("equivalence", 0.02), "inconclusive"),
        (_iv(0.001, 0.05), stats.Rule("directional", 0.01), "supported"),  # excludes 0 in the claimed direction
        (_iv(0.001, 0.005), stats.Rule("directional", 0.01), "supported"),  # ... though below the SESOI: flagged
        (_iv(-0.02, 0.009), stats.Rule("directional", 0.01), "contradicted"),  # entirely below the SESOI
        (_iv(-0.02, 0.02), stats.Rule("directional", 0.01), "inconclusive"),
        (_iv(-0.5, -0.1), stats.Rule("directional", 0.22, -1), "supported"),  # "A needs fewer steps"
        (_iv(-0.1, 0.3), stats.Rule("directional", 0.22, -1), "contradicted"),  # -0.3..0.1 < 0.22 once flipped
        (_iv(0.05, math.inf, 0.3), stats.Rule("directional", 0.22), "supported"),  # an open side is any bound
        (_iv(-math.inf, 0.1, -1.0), stats.Rule("directional", 0.22), "contradicted"),
        (_iv(0.02, 0.4), stats.Rule("noninferiority"), "supported"),
        (_iv(-0.3, -0.01), stats.Rule("noninferiority"), "contradicted"),
        (_iv(-0.1, 0.2), stats.Rule("noninferiority"), "inconclusive"),
    ],
)
def test_decision_rules_of_claims_as_stated(interval, rule, want):
    decision = stats.decide(interval, rule)
    assert decision.verdict == want, decision
    if interval.low > 0 and interval.high < rule.margin and rule.kind == "directional":
        assert "smallest effect of interest" in decision.why


def test_robustness_is_the_nearest_end_to_boundary_distance_in_half_widths():
    # [0.03, 0.07] against ±0.02 (contradicted): nearest end 0.03 is 0.01 from +0.02; half-width 0.02: 0.5.
    assert stats.decide(_iv(0.03, 0.07), stats.Rule("equivalence", 0.02)).distance == pytest.approx(0.5)
    # Directional, [0.05, 0.45] with SESOI 0.1: ends to {0, 0.1}: 0.05 from both; half-width 0.2: 0.25.
    assert stats.decide(_iv(0.05, 0.45), stats.Rule("directional", 0.1)).distance == pytest.approx(0.25)
    # An open side: the finite end's distance to the estimate is the half-width.
    assert stats.decide(_iv(0.3, math.inf, 0.5), stats.Rule("noninferiority")).distance == pytest.approx(1.5)
    one_seed = stats.decide(_iv(0.1, 0.2, n=1), stats.Rule("noninferiority"))
    assert one_seed.verdict == "inconclusive" and one_seed.distance is None
    with pytest.raises(ValueError, match="kind in"):
        stats.Rule("bigger")


def test_power_against_the_normal_approximation_and_seeds_for_power():
    """Directional claim, true effect 2 sd-of-the-mean units at many seeds: power -> Phi(delta sqrt(n) / sd - z);
    with few seeds the t quantile costs power (below the normal value). Equivalence at effect 0 gains power with
    seeds. The fewest seeds for 80 % power is where power crosses 0.8."""
    rule = stats.Rule("directional", 0.01)
    sd, effect = 1.0, 0.25
    n = 200
    want = scipy_stats.norm.cdf(effect * math.sqrt(n) / sd - scipy_stats.norm.ppf(0.975))
    assert stats.power(sd, effect, rule, n) == pytest.approx(want, abs=0.015)
    assert stats.power(sd, effect, rule, 5) < scipy_stats.norm.cdf(effect * math.sqrt(5) - 1.96)
    flipped = stats.Rule("directional", 0.01, -1)
    assert stats.power(sd, -effect, flipped, n) == pytest.approx(stats.power(sd, effect, rule, n), abs=0.015)
    eq = stats.Rule("equivalence", 0.5)
    assert stats.power(1.0, 0.0, eq, 5) < stats.power(1.0, 0.0, eq, 40) < stats.power(1.0, 0.0, eq, 80)
    needed = stats.seeds_for_power(sd, 0.8, rule)
    assert stats.power(sd, 0.8, rule, needed) >= 0.8 > stats.power(sd, 0.8, rule, needed - 1)
    assert stats.seeds_for_power(sd, 0.0, rule, most=20) is None  # no effect: never powered
