"""Calibration: Guo et al.'s ECE (top label, equal-width bins) and Nixon et al.'s ACE (equal-mass bins) against
closed forms and sklearn's `calibration_curve` bin by bin; AUCs ranked from logits, not saturated probabilities."""

import numpy as np
import pytest
from scipy import special
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from transfusion_jax.train import metrics


def test_ece_of_a_hand_worked_case():
    probs = np.array([0.9, 0.1, 0.6, 0.2, 0.8, 0.3])  # sorted: (0.1, 0.2) (0.3, 0.6) (0.8, 0.9)
    outcomes = np.array([1, 0, 1, 0, 0, 1])  # per bin:    0, 0     1, 1     0, 1
    bins = metrics.calibration_bins(probs, outcomes, num_bins=3, strategy="quantile")
    np.testing.assert_allclose(bins["confidence"], [0.15, 0.45, 0.85])
    np.testing.assert_allclose(bins["frequency"], [0.0, 1.0, 0.5])
    assert bins["count"] == [2, 2, 2]
    assert bins["error"] == pytest.approx((0.15 + 0.55 + 0.35) / 3)
    # Equal width (0, 1/3], (1/3, 2/3], (2/3, 1]: {0.1, 0.2, 0.3} -> 1/3; {0.6} -> 1; {0.8, 0.9} -> 1/2.
    uniform = metrics.calibration_bins(probs, outcomes, num_bins=3, strategy="uniform")
    assert uniform["count"] == [3, 1, 2]
    assert uniform["error"] == pytest.approx((3 * abs(0.2 - 1 / 3) + 0.4 + 2 * 0.35) / 6)


@pytest.mark.parametrize("strategy", metrics.STRATEGIES)
def test_calibration_error_closed_forms(strategy):
    # A constant forecast c for outcomes occurring at rate r: every bin has confidence c, frequency r overall.
    outcomes = np.r_[np.ones(30), np.zeros(70)]
    assert metrics.calibration_bins(np.full(100, 0.9), outcomes, 10, strategy)["error"] == pytest.approx(0.6)
    # Outcomes drawn with the forecast probabilities: the error is sampling noise only, about sqrt(p(1-p) / (N/B)).
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    error = metrics.calibration_bins(p, rng.uniform(size=p.size) < p, 10, strategy)["error"]
    assert error < 3 * np.sqrt(0.25 / 20_000)
    # Forecasts q = 0.5 + (p - 0.5) / 2 squashed towards 0.5 for outcomes at rate p: the gap |p - q| = |p - 0.5| / 2
    # averages 1/8 over uniform p (bins narrow enough that the gap is nearly constant inside each).
    squashed = metrics.calibration_bins(0.5 + (p - 0.5) / 2, rng.uniform(size=p.size) < p, 200, strategy)["error"]
    assert squashed == pytest.approx(0.125, abs=0.003)


@pytest.mark.parametrize("n,num_bins", [(300, 10), (1050, 15)])
def test_equal_mass_bins_equal_sklearn_quantile_calibration_curve(n, num_bins):
    """Distinct forecasts and N divisible by the bin count: sklearn's quantile edges cut exactly our equal-mass runs."""
    rng = np.random.default_rng(1)
    p = rng.beta(2, 5, size=n)
    y = (rng.uniform(size=n) < p**0.7).astype(int)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=num_bins, strategy="quantile")
    bins = metrics.calibration_bins(p, y, num_bins, "quantile")
    np.testing.assert_allclose(bins["frequency"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(bins["confidence"], prob_pred, rtol=1e-12)
    assert bins["count"] == [n // num_bins] * num_bins


@pytest.mark.parametrize("num_bins", [5, 15])
def test_equal_width_bins_equal_sklearn_uniform_calibration_curve(num_bins):
    """Forecasts on bin edges included (they belong to the lower bin in both), and empty bins dropped in both."""
    rng = np.random.default_rng(4)
    p = np.r_[rng.beta(5, 2, size=997), np.linspace(0, 1, num_bins + 1)[1:-1], 0.0, 1.0]
    y = (rng.uniform(size=p.size) < p).astype(int)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=num_bins, strategy="uniform")
    bins = metrics.calibration_bins(p, y, num_bins, "uniform")
    np.testing.assert_allclose(bins["frequency"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(bins["confidence"], prob_pred, rtol=1e-12)
    assert sum(bins["count"]) == p.size


def test_ties_never_straddle_an_equal_mass_cut_and_the_order_of_examples_does_not_matter():
    # 11 examples in 4 bins: nominal cuts after 3, 6 and 9 sorted examples; the first two fall inside the run of seven
    # 0.5s and move to its start, so the ties and the next two examples share one bin.
    probs = np.r_[np.full(7, 0.5), np.linspace(0.6, 0.9, 4)]
    outcomes = np.r_[np.ones(3), np.zeros(4), np.ones(4)]
    bins = metrics.calibration_bins(probs, outcomes, 4, "quantile")
    assert bins["count"] == [9, 2]
    np.testing.assert_allclose(bins["confidence"], [(3.5 + 0.6 + 0.7) / 9, 0.85])
    np.testing.assert_allclose(bins["frequency"], [5 / 9, 1.0])
    assert bins["error"] == pytest.approx(9 / 11 * (0.2 / 9) + 2 / 11 * 0.15)  # weighted by bin size
    reordered = np.random.default_rng(3).permutation(11)
    assert metrics.calibration_bins(probs[reordered], outcomes[reordered], 4, "quantile") == bins


def test_few_or_no_examples_and_bad_arguments():
    few = metrics.calibration_bins(np.array([0.2, 0.7]), np.array([0, 1]), 15, "quantile")
    assert few["count"] == [1, 1] and few["error"] == pytest.approx(0.25)
    assert np.isnan(metrics.calibration_bins(np.array([]), np.array([]), 5)["error"])
    with pytest.raises(ValueError, match="num_bins"):
        metrics.calibration_bins(np.array([0.5]), np.array([1]), 0)
    with pytest.raises(ValueError, match="strategy"):
        metrics.calibration_bins(np.array([0.5]), np.array([1]), 5, "equal")


def test_ece_is_guos_top_label_error_and_ace_the_class_wise_equal_mass_one():
    rng = np.random.default_rng(2)
    n = 600
    # Softmax, 3 classes: ECE from the top label's confidence vs accuracy in equal-width bins (sklearn's uniform
    # curve on the same pairs); ACE the mean over classes of each class's equal-mass error (sklearn's quantile curve).
    logits = rng.normal(scale=2.0, size=(n, 3))
    labels = rng.integers(0, 3, size=n)
    p = special.softmax(logits, axis=1)
    got, diagram = metrics.calibration_metrics("softmax", ("a", "b", "c"), logits, labels, np.ones((n, 1)), 15)
    confidence, right = p.max(axis=1), (p.argmax(axis=1) == labels).astype(int)
    prob_true, prob_pred = calibration_curve(right, confidence, n_bins=15, strategy="uniform")
    np.testing.assert_allclose(diagram["top_label"]["frequency"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(diagram["top_label"]["confidence"], prob_pred, rtol=1e-12)
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 16)[1:-1], confidence), minlength=15)
    expected_ece = np.sum(counts[counts > 0] / n * np.abs(prob_true - prob_pred))
    assert got["ece"] == pytest.approx(expected_ece, rel=1e-12)
    expected_ace = []
    for c in range(3):
        t, q = calibration_curve(labels == c, p[:, c], n_bins=15, strategy="quantile")
        expected_ace.append(np.mean(np.abs(t - q)))  # 600 distinct forecasts in 15 bins of 40: equal weights
    assert got["ace"] == pytest.approx(np.mean(expected_ace), rel=1e-12)
    assert set(got) == {"ece", "ece/top_label", "ace", "ace/a", "ace/b", "ace/c"}
    # Binary softmax: ACE of the positive class, named by the last label name; ECE of the top label.
    logits2 = rng.normal(size=(n, 2))
    labels2 = rng.integers(0, 2, size=n)
    got2, _ = metrics.calibration_metrics("softmax", ("neg", "pos"), logits2, labels2, np.ones((n, 1)), 15)
    p2 = special.softmax(logits2, axis=1)[:, 1]
    assert got2["ace/pos"] == metrics.calibration_bins(p2, labels2 == 1, 15, "quantile")["error"]
    top = metrics.calibration_bins(np.maximum(p2, 1 - p2), (p2 > 0.5) == labels2, 15)["error"]
    assert got2["ece"] == pytest.approx(top, rel=1e-12)
    # Sigmoid: each label a binary decision over the rows where it is known; the mean over labels.
    logits_s = rng.normal(size=(n, 2))
    multi = (rng.uniform(size=(n, 2)) < special.expit(logits_s)).astype(np.float32)
    mask = (rng.uniform(size=(n, 2)) < 0.7).astype(np.float32)
    got_s, diagram_s = metrics.calibration_metrics("sigmoid", ("x", "y"), logits_s, multi, mask, 15)
    for c, name in enumerate("xy"):
        keep = mask[:, c] > 0
        ps, ys = special.expit(logits_s[keep, c]), multi[keep, c]
        assert diagram_s[name] == metrics.calibration_bins(np.maximum(ps, 1 - ps), (ps > 0.5) == (ys > 0.5), 15)
        assert got_s[f"ace/{name}"] == metrics.calibration_bins(ps, ys, 15, "quantile")["error"]
    assert got_s["ece"] == pytest.approx((got_s["ece/x"] + got_s["ece/y"]) / 2)


def test_auc_ranks_logits_where_float32_probabilities_saturate():
    """Logits far from 0: float32 softmax/sigmoid round many examples to exactly 0 or 1, which ties them and moves the
    AUC; ranking the log-odds keeps their order (sklearn on the float64 logit difference is the reference)."""
    rng = np.random.default_rng(5)
    n = 400
    labels = rng.integers(0, 2, size=n)
    margin = 25.0 + rng.normal(size=n) + 3.0 * labels  # every example confidently positive, positives more so
    logits = np.stack([np.zeros(n), margin], axis=1).astype(np.float32)
    saturated = np.asarray(special.softmax(logits.astype(np.float32), axis=1), np.float32)[:, 1]
    assert np.unique(saturated).size < 10  # the float32 probabilities collapse onto a handful of values
    expected = roc_auc_score(labels, logits[:, 1].astype(np.float64) - logits[:, 0])
    assert expected > 0.95 and roc_auc_score(labels, saturated) < expected - 0.1
    got = metrics.auc_metrics("softmax", ("neg", "pos"), logits, labels, np.ones((n, 1)))
    assert got["auc"] == pytest.approx(expected, abs=1e-12)
    sig = metrics.auc_metrics("sigmoid", ("x",), logits[:, 1:], labels[:, None].astype(np.float32), np.ones((n, 1)))
    assert sig["auc"] == pytest.approx(expected, abs=1e-12)
    # C > 2 classes: each class's one-vs-rest log-odds, monotone in its probability (no saturation here).
    logits3 = rng.normal(size=(n, 3))
    labels3 = rng.integers(0, 3, size=n)
    got3 = metrics.auc_metrics("softmax", ("a", "b", "c"), logits3, labels3, np.ones((n, 1)))
    p3 = special.softmax(logits3, axis=1)
    for c, name in enumerate("abc"):
        assert got3[f"auc/{name}"] == pytest.approx(roc_auc_score(labels3 == c, p3[:, c]), abs=1e-12)
