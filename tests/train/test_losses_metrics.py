"""Losses and metrics against float64 NumPy formulas and direct sklearn calls."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from transfusion_jax.train import losses, metrics


def _log_softmax64(z):
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_softmax_loss_ignores_padding_rows():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=6).astype(np.int32)
    valid = np.array([1, 1, 0, 1, 0, 1], bool)
    batch = {"label": labels, "valid": valid, "label_mask": np.ones((6, 1), np.float32)}
    total, count = losses.loss_terms("softmax", logits, batch)
    expected = -_log_softmax64(logits)[np.arange(6), labels][valid]
    assert float(count) == 4
    np.testing.assert_allclose(float(total), expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(losses.mean_loss("softmax", logits, batch)), expected.mean(), rtol=1e-5)


def test_sigmoid_loss_honours_label_mask_and_valid():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 5)).astype(np.float32) * 3
    labels = (rng.uniform(size=(4, 5)) < 0.5).astype(np.float32)
    mask = (rng.uniform(size=(4, 5)) < 0.6).astype(np.float32)
    valid = np.array([1, 0, 1, 1], bool)
    batch = {"label": labels, "label_mask": mask, "valid": valid}
    z = logits.astype(np.float64)
    bce = -(labels * np.log(1 / (1 + np.exp(-z))) + (1 - labels) * np.log(1 - 1 / (1 + np.exp(-z))))
    weight = mask * valid[:, None]
    total, count = losses.loss_terms("sigmoid", logits, batch)
    assert float(count) == weight.sum()
    np.testing.assert_allclose(float(total), (bce * weight).sum(), rtol=1e-5)


def test_unknown_loss_kind_is_named():
    with pytest.raises(ValueError, match="'hinge'"):
        losses.loss_terms("hinge", np.zeros((1, 2)), {"valid": np.ones(1, bool)})


def test_binary_softmax_auc_is_positive_class_auc():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=50)
    scores = rng.uniform(size=(50, 2))
    scores /= scores.sum(1, keepdims=True)
    out = metrics.auc_metrics("softmax", ("neg", "pos"), scores, labels, np.ones((50, 1)))
    assert out["auc"] == pytest.approx(roc_auc_score(labels, scores[:, 1]))
    assert set(out) == {"auc", "auc/pos"}


def test_multiclass_softmax_auc_is_one_vs_rest_mean():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=200)
    scores = rng.dirichlet(np.ones(5), size=200)
    out = metrics.auc_metrics("softmax", tuple("abcde"), np.log(scores), labels, np.ones((200, 1)))  # logits
    expected = roc_auc_score(labels, scores, multi_class="ovr", average="macro")
    assert out["auc"] == pytest.approx(expected)


def test_sigmoid_auc_uses_only_labelled_entries():
    rng = np.random.default_rng(4)
    labels = (rng.uniform(size=(80, 3)) < 0.4).astype(np.float32)
    scores = np.clip(labels * 0.3 + rng.uniform(size=(80, 3)), 0, 1)
    mask = (rng.uniform(size=(80, 3)) < 0.7).astype(np.float32)
    # Corrupt the unlabelled entries: they must not change the AUC.
    labels_corrupt = np.where(mask > 0, labels, 1 - labels)
    out = metrics.auc_metrics("sigmoid", ("x", "y", "z"), scores, labels_corrupt, mask)
    for c, name in enumerate("xyz"):
        keep = mask[:, c] > 0
        assert out[f"auc/{name}"] == pytest.approx(roc_auc_score(labels[keep, c], scores[keep, c]))
    assert out["auc"] == pytest.approx(np.mean([out[f"auc/{n}"] for n in "xyz"]))


def test_auc_of_single_class_is_nan_and_mean_skips_it():
    labels = np.array([[0, 1], [0, 0], [0, 1], [0, 0]], np.float32)
    scores = np.array([[0.1, 0.9], [0.2, 0.1], [0.3, 0.8], [0.4, 0.3]])
    out = metrics.auc_metrics("sigmoid", ("a", "b"), scores, labels, np.ones_like(labels))
    assert np.isnan(out["auc/a"]) and out["auc/b"] == 1.0 and out["auc"] == 1.0


def test_accuracy_and_top5():
    scores = np.eye(7)[[0, 1, 2, 3]] + np.linspace(0, 0.5, 7)  # argmax = row's class except where ramp wins
    labels = np.array([0, 1, 6, 2])
    out = metrics.accuracy_metrics(scores, labels)
    assert out["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == labels))
    ranks = (-scores).argsort(1)[:, :5]
    assert out["top5_accuracy"] == pytest.approx(np.mean([labels[i] in ranks[i] for i in range(4)]))


def test_first_step_above_threshold_is_strict():
    records = [
        {"step": 4004, "auc": 0.95},
        {"step": 1001, "auc": 0.5},
        {"step": 3003, "auc": 0.9100001},
        {"step": 2002, "auc": 0.91},  # equal is not above: the paper counts "AUC > 0.91"
        {"step": 500, "auc": None},  # strict JSON writes a NaN AUC as null
        {"step": 400, "auc": "nan"},  # what older metrics.jsonl files hold
    ]
    assert metrics.first_step_above(records, "auc", 0.91) == 3003
    assert metrics.first_step_above(records, "auc", 0.4) == 1001
    assert metrics.first_step_above(records, "auc", 0.99) is None
