"""Expected calibration error and reliability diagrams (equal-mass bins) against closed forms and sklearn."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from transfusion_jax.train import metrics


def test_ece_of_a_hand_worked_case():
    probs = np.array([0.9, 0.1, 0.6, 0.2, 0.8, 0.3])  # sorted: (0.1, 0.2) (0.3, 0.6) (0.8, 0.9)
    outcomes = np.array([1, 0, 1, 0, 0, 1])  # per bin:    0, 0     1, 1     0, 1
    bins = metrics.reliability_bins(probs, outcomes, num_bins=3)
    np.testing.assert_allclose(bins["confidence"], [0.15, 0.45, 0.85])
    np.testing.assert_allclose(bins["frequency"], [0.0, 1.0, 0.5])
    assert bins["count"] == [2, 2, 2]
    assert bins["ece"] == pytest.approx((0.15 + 0.55 + 0.35) / 3)


def test_ece_closed_forms():
    # A constant forecast c for outcomes occurring at rate r: every bin has confidence c, frequency r overall.
    outcomes = np.r_[np.ones(30), np.zeros(70)]
    assert metrics.reliability_bins(np.full(100, 0.9), outcomes, 10)["ece"] == pytest.approx(0.6)
    # Outcomes drawn with the forecast probabilities: ECE is sampling noise only, about sqrt(p(1-p) / (N/B)).
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    ece = metrics.reliability_bins(p, rng.uniform(size=p.size) < p, 10)["ece"]
    assert ece < 3 * np.sqrt(0.25 / 20_000)
    # Forecasts q = 0.5 + (p - 0.5) / 2 squashed towards 0.5 for outcomes at rate p: the gap |p - q| = |p - 0.5| / 2
    # averages 1/8 over uniform p (fine bins of 1000 examples: noise adds < 1e-3).
    ece_squashed = metrics.reliability_bins(0.5 + (p - 0.5) / 2, rng.uniform(size=p.size) < p, 200)["ece"]
    assert ece_squashed == pytest.approx(0.125, abs=0.003)


@pytest.mark.parametrize("n,num_bins", [(300, 10), (1050, 15)])
def test_reliability_bins_equal_sklearn_quantile_calibration_curve(n, num_bins):
    """Distinct forecasts and N divisible by the bin count: sklearn's quantile edges cut exactly our equal-mass runs."""
    rng = np.random.default_rng(1)
    p = rng.beta(2, 5, size=n)
    y = (rng.uniform(size=n) < p**0.7).astype(int)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=num_bins, strategy="quantile")
    bins = metrics.reliability_bins(p, y, num_bins)
    np.testing.assert_allclose(bins["frequency"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(bins["confidence"], prob_pred, rtol=1e-12)
    assert bins["count"] == [n // num_bins] * num_bins


def test_ties_never_straddle_a_cut_and_the_order_of_examples_does_not_matter():
    # 11 examples in 4 bins: nominal cuts after 3, 6 and 9 sorted examples; the first two fall inside the run of seven
    # 0.5s and move to its start, so the ties and the next two examples share one bin.
    probs = np.r_[np.full(7, 0.5), np.linspace(0.6, 0.9, 4)]
    outcomes = np.r_[np.ones(3), np.zeros(4), np.ones(4)]
    bins = metrics.reliability_bins(probs, outcomes, 4)
    assert bins["count"] == [9, 2]
    np.testing.assert_allclose(bins["confidence"], [(3.5 + 0.6 + 0.7) / 9, 0.85])
    np.testing.assert_allclose(bins["frequency"], [5 / 9, 1.0])
    assert bins["ece"] == pytest.approx(9 / 11 * (0.2 / 9) + 2 / 11 * 0.15)  # weighted by bin size
    reordered = np.random.default_rng(3).permutation(11)
    assert metrics.reliability_bins(probs[reordered], outcomes[reordered], 4) == bins


def test_few_or_no_examples():
    few = metrics.reliability_bins(np.array([0.2, 0.7]), np.array([0, 1]), 15)
    assert few["count"] == [1, 1] and few["ece"] == pytest.approx(0.25)
    assert np.isnan(metrics.reliability_bins(np.array([]), np.array([]), 5)["ece"])
    with pytest.raises(ValueError, match="num_bins"):
        metrics.reliability_bins(np.array([0.5]), np.array([1]), 0)


def test_diagram_per_output_follows_the_auc_convention():
    rng = np.random.default_rng(2)
    # Binary softmax: the positive class only, named by the last label name.
    scores = rng.dirichlet([1, 1], size=60)
    labels = rng.integers(0, 2, size=60)
    diagram = metrics.reliability_diagram("softmax", ("neg", "pos"), scores, labels, np.ones((60, 1)), 5)
    assert list(diagram) == ["pos"]
    assert diagram["pos"] == metrics.reliability_bins(scores[:, 1], labels == 1, 5)
    # Softmax with 3 classes: one-vs-rest per class.
    scores3 = rng.dirichlet([1, 1, 1], size=60)
    labels3 = rng.integers(0, 3, size=60)
    diagram3 = metrics.reliability_diagram("softmax", ("a", "b", "c"), scores3, labels3, np.ones((60, 1)), 5)
    for c, name in enumerate("abc"):
        assert diagram3[name] == metrics.reliability_bins(scores3[:, c], labels3 == c, 5)
    # Sigmoid: per label, over the rows where it is known.
    probs = rng.uniform(size=(60, 2))
    multi = (rng.uniform(size=(60, 2)) < probs).astype(np.float32)
    mask = (rng.uniform(size=(60, 2)) < 0.7).astype(np.float32)
    diagram_s = metrics.reliability_diagram("sigmoid", ("x", "y"), probs, multi, mask, 5)
    for c, name in enumerate("xy"):
        keep = mask[:, c] > 0
        assert diagram_s[name] == metrics.reliability_bins(probs[keep, c], multi[keep, c], 5)
    ece = metrics.ece_metrics(diagram_s)
    assert ece["ece"] == pytest.approx((ece["ece/x"] + ece["ece/y"]) / 2)
