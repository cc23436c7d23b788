"""Intervals, DeLong and verdicts on constructed inputs, against independent references: scipy's t test, sklearn's
AUC, DeLong's structural components computed by brute force over every (positive, negative) pair, and the
coverage of the intervals in simulation."""

import math

import numpy as np
import pytest
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


def test_averaged_difference_adds_seed_and_example_variance():
    rng = np.random.default_rng(2)
    labels = np.arange(300) < 100
    a = [labels * 1.5 + rng.normal(size=300) for _ in range(3)]
    b = [labels * 1.0 + rng.normal(size=300) for _ in range(3)]
    got = stats.averaged_auc_difference(labels, a, b)
    aucs, cov = _brute_force_delong(labels, np.stack(a + b))
    diffs = aucs[:3] - aucs[3:]
    c = np.array([1, 1, 1, -1, -1, -1]) / 3
    want = stats.t_interval(diffs, extra_variance=float(c @ cov @ c))
    assert got.estimate == pytest.approx(diffs.mean(), abs=1e-12)
    assert (got.low, got.high) == pytest.approx((want.low, want.high), rel=1e-9)
    seeds_only = stats.t_interval(diffs)
    assert got.high - got.low > seeds_only.high - seeds_only.low  # the test set's own noise is not ignored
    assert "DeLong" in got.method and got.n == 3


def test_auc_contrast_of_four_groups():
    """A difference of differences: its estimate from sklearn's AUCs, its DeLong part from the brute-force
    covariance; and a pair of identical groups with opposite signs cancels exactly, leaving A - B."""
    rng = np.random.default_rng(3)
    labels = np.arange(200) < 70
    groups = [[labels * mu + rng.normal(size=200) for _ in range(4)] for mu in (1.5, 1.0, 1.2, 1.1)]
    coefficients = [1.0, -1.0, -1.0, 1.0]
    got = stats.auc_contrast(labels, groups, coefficients)
    sk = np.array([[roc_auc_score(labels, s) for s in g] for g in groups])
    per_seed = sk[0] - sk[1] - sk[2] + sk[3]
    _, cov = _brute_force_delong(labels, np.stack([s for g in groups for s in g]))
    w = np.repeat(np.array(coefficients) / 4, 4)
    want = stats.t_interval(per_seed, extra_variance=float(w @ cov @ w))
    assert got.estimate == pytest.approx(per_seed.mean(), abs=1e-12)
    assert (got.low, got.high) == pytest.approx((want.low, want.high), rel=1e-9)
    cancelled = stats.auc_contrast(labels, [groups[0], groups[1], groups[2], groups[2]], coefficients)
    plain = stats.averaged_auc_difference(labels, groups[0], groups[1])
    assert (cancelled.estimate, cancelled.low, cancelled.high) == pytest.approx(
        (plain.estimate, plain.low, plain.high), rel=1e-9
    )
    with pytest.raises(ValueError, match="one coefficient per group"):
        stats.auc_contrast(labels, groups, [1.0, -1.0])
    with pytest.raises(ValueError, match="same number"):
        stats.auc_contrast(labels, [groups[0], groups[1][:3]], [1.0, -1.0])


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


def test_censored_differences_only_support_what_bounds_can_show():
    """Steps of runs that never reached the threshold are replaced by the run length: a lower bound on their
    true steps. If B (random) is censored, A - B is an upper bound, which can still show 'A is faster'."""
    faster = stats.Interval(-50_000, -60_000, -40_000, 5, "t")
    assert stats.verdict(faster, 1001, "less", bound="upper")[0] == "supported"
    assert stats.verdict(faster, 1001, "less", bound="lower")[0] == "inconclusive"
    same = stats.Interval(0, -500, 500, 5, "t")
    assert stats.verdict(same, 1001, "equivalent", bound="upper")[0] == "inconclusive"
    assert stats.verdict(same, 1001, "equivalent", bound="both")[0] == "inconclusive"
