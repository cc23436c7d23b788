"""Feature-reuse decomposition: Fieller's interval against test inversion with scipy, coverage, and 'undefined'."""

import json

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from transfusion_jax.analysis import reuse, stats

WT = [0.90, 0.91, 0.895, 0.905, 0.92]
ST = [0.86, 0.88, 0.855, 0.87, 0.875]
RI = [0.80, 0.83, 0.81, 0.79, 0.82]


def test_paired_fieller_is_the_inverted_one_sample_t_test():
    """r is in the interval iff scipy's one-sample t test of (WT - ST) - r (WT - RI) per seed keeps H0 at 5%."""
    out = reuse.decompose(WT, ST, RI, paired=True)
    da, db = np.subtract(WT, ST), np.subtract(WT, RI)
    assert out["share"]["estimate"] == pytest.approx(da.mean() / db.mean())

    def p_minus_alpha(r):
        return scipy.stats.ttest_1samp(da - r * db, 0.0).pvalue - 0.05

    centre = da.mean() / db.mean()
    lo = scipy.optimize.brentq(p_minus_alpha, centre - 5, centre, xtol=1e-12)
    hi = scipy.optimize.brentq(p_minus_alpha, centre, centre + 5, xtol=1e-12)
    np.testing.assert_allclose(out["share"]["ci"], [lo, hi], rtol=1e-7)
    gain = scipy.stats.ttest_1samp(db, 0.0).confidence_interval(0.95)
    np.testing.assert_allclose(out["gain"]["ci"], [gain.low, gain.high], rtol=1e-10)
    assert out["gain"]["estimate"] == pytest.approx(db.mean()) and out["gain"]["df"] == 4
    # ... and it is the same computation as the effects' t interval over seed pairs (analysis.stats)
    same = stats.t_interval(db)
    np.testing.assert_allclose(out["gain"]["ci"], [same.low, same.high], rtol=1e-12)


def test_unpaired_fieller_endpoints_have_the_contrast_at_the_t_quantile():
    """Independent groups: at each endpoint r, the contrast WT (1 - r) - ST + r RI, whose variance is
    (1 - r)^2 s_WT^2 / n_WT + s_ST^2 / n_ST + r^2 s_RI^2 / n_RI, sits exactly at the t quantile."""
    wt, st, ri = np.array(WT), np.array(ST[:4]), np.array(RI + [0.80])
    out = reuse.decompose(wt, st, ri, paired=False)
    t = scipy.stats.t.ppf(0.975, out["share"]["df"])
    v = {name: np.var(x, ddof=1) / x.size for name, x in (("w", wt), ("s", st), ("r", ri))}
    for r in out["share"]["ci"]:
        contrast = wt.mean() * (1 - r) - st.mean() + r * ri.mean()
        sd = np.sqrt((1 - r) ** 2 * v["w"] + v["s"] + r**2 * v["r"])
        assert abs(contrast / sd) == pytest.approx(t, rel=1e-9)
    # Conservative df: the smaller Welch-Satterthwaite df of the two differences.
    welch = [(v["w"] + v[k]) ** 2 / (v["w"] ** 2 / 4 + v[k] ** 2 / (n - 1)) for k, n in (("s", 4), ("r", 6))]
    assert out["share"]["df"] == pytest.approx(min(welch))


def test_share_interval_covers_the_truth_95_percent_of_the_time():
    """Paired normal seeds (n = 5) with true share 0.4 and a clear gain: Fieller's coverage is 95% (+- 3 SE)."""
    rng = np.random.default_rng(0)
    reps, hits = 2000, 0
    for _ in range(reps):
        seed_effect = rng.normal(0, 0.02, 5)  # shared by the three inits of a seed
        ri = 0.80 + seed_effect + rng.normal(0, 0.01, 5)
        wt = 0.90 + seed_effect + rng.normal(0, 0.01, 5)
        st = 0.86 + seed_effect + rng.normal(0, 0.01, 5)  # share = (0.90 - 0.86) / (0.90 - 0.80) = 0.4
        share = reuse.decompose(wt, st, ri)["share"]
        hits += share["status"] == "defined" and share["ci"][0] <= 0.4 <= share["ci"][1]
    se = np.sqrt(0.95 * 0.05 / reps)
    assert abs(hits / reps - 0.95) < 3 * se


def test_share_is_undefined_exactly_when_the_gain_interval_includes_zero():
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(200):
        wt, st, ri = (rng.normal(m, 0.03, 4) for m in (0.85, 0.84, 0.83))
        out = reuse.decompose(wt, st, ri, paired=bool(rng.integers(2)))
        lo, hi = out["gain"]["ci"]
        excludes_zero = lo > 0 or hi < 0
        assert (out["share"]["status"] == "defined") == excludes_zero
        seen.add(excludes_zero)
        if not excludes_zero:
            assert out["share"]["ci"] is None and "includes 0" in out["share"]["reason"]
    assert seen == {True, False}  # both cases happened


def test_steps_to_threshold_gain_is_steps_saved_and_share_is_sign_free():
    wt, st, ri = [8008, 9009, 7007, 8008], [25025, 27027, 24024, 26026], [69069, 72072, 66066, 70070]
    steps = reuse.decompose(wt, st, ri, higher_is_better=False)
    assert steps["gain"]["estimate"] == pytest.approx(np.mean(ri) - np.mean(wt))
    assert steps["gain"]["ci"][0] > 0
    negated = reuse.decompose(*(np.negative(x) for x in (wt, st, ri)))
    assert steps["share"]["estimate"] == pytest.approx(negated["share"]["estimate"])
    np.testing.assert_allclose(steps["share"]["ci"], negated["share"]["ci"])
    assert json.loads(json.dumps(steps)) == steps


def test_missing_values_make_the_result_undefined_not_smaller():
    out = reuse.decompose([8008, None, 7007], [25025, 27027, 24024], [np.nan, 72072, 66066], higher_is_better=False)
    assert out["gain"] is None and out["share"]["status"] == "undefined"
    assert "WT 1 of 3" in out["share"]["reason"] and "RI 1 of 3" in out["share"]["reason"]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        reuse.decompose([0.9], [0.8, 0.8], [0.7, 0.7])
    with pytest.raises(ValueError, match="as many seeds"):
        reuse.decompose([0.9, 0.91], [0.8, 0.81, 0.8], [0.7, 0.7])
    with pytest.raises(ValueError, match="confidence"):
        reuse.decompose(WT, ST, RI, confidence=95)
