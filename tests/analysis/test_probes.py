"""Layer-wise probes: k-NN against sklearn, AUC 1 on features that are the label, ~0.5 on random features, and a
real model's pooled features; the binary held-out and cross-validated probes against sklearn by hand."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_events import CompileEvents
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from transfusion_jax.analysis import probes
from transfusion_jax.models import get_model


def batches_of(images, labels, masks, batch_size, pad_last=True):
    """Data-contract dicts; the last batch padded with valid=False rows when the split does not divide evenly."""
    n = len(images)
    for start in range(0, n, batch_size):
        rows = np.arange(start, start + batch_size) if pad_last else np.arange(start, min(start + batch_size, n))
        clipped = np.minimum(rows, n - 1)
        yield {
            "image": jnp.asarray(images[clipped]),
            "label": labels[clipped],
            "label_mask": masks[clipped],
            "valid": rows < n,
        }


@pytest.mark.parametrize("k", [1, 7])
def test_knn_equals_sklearn_cosine_neighbours_softmax(k):
    rng = np.random.default_rng(0)
    x, xe = rng.normal(size=(120, 6)), rng.normal(size=(50, 6))
    y = rng.integers(0, 3, size=120)
    ours = probes.knn_scores(x, y, xe, kind="softmax", num_outputs=3, k=k, chunk=16)
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(x, y).predict_proba(xe)
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_knn_equals_sklearn_per_known_label_sigmoid():
    rng = np.random.default_rng(1)
    x, xe = rng.normal(size=(150, 5)), rng.normal(size=(40, 5))
    y = (rng.uniform(size=(150, 3)) < 0.4).astype(np.float32)
    mask = (rng.uniform(size=(150, 3)) < 0.7).astype(np.float32)
    ours = probes.knn_scores(x, y, xe, kind="sigmoid", num_outputs=3, k=9, train_mask=mask)
    for c in range(3):
        keep = mask[:, c] > 0
        ref = KNeighborsClassifier(n_neighbors=9, metric="cosine").fit(x[keep], y[keep, c]).predict_proba(xe)[:, 1]
        np.testing.assert_allclose(ours[:, c], ref, atol=1e-12)
    with pytest.raises(ValueError, match="exceeds"):
        probes.knn_scores(x[:5], y[:5], xe, kind="sigmoid", num_outputs=3, k=9)


def test_linear_probe_is_sklearn_logistic_regression_on_standardised_features():
    rng = np.random.default_rng(2)
    x, xe = rng.normal(size=(200, 4)), rng.normal(size=(60, 4))
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(int)
    ours = probes.linear_probe_scores(x, y, xe, kind="softmax", num_outputs=2, c=0.5)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000)).fit(x, y).predict_proba(xe)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    one_class = probes.linear_probe_scores(x, np.zeros(200, int), xe, kind="softmax", num_outputs=2)
    assert (one_class[:, 0] == 1).all() and (one_class[:, 1] == 0).all()


def label_images(labels, kind, size=2):
    """Images whose pixels are the label: +-1 per class (softmax: one-hot), as a [N, size, size, C] map."""
    code = np.eye(2)[labels] if kind == "softmax" else labels
    return np.broadcast_to((2 * code - 1)[:, None, None, :], (len(labels), size, size, code.shape[1])).astype(
        np.float32
    )


def feature_model(variables, images):
    """A 'model' whose block features are its input: a conv map (pooled by the probe) and a 2-D one."""
    return None, {"map": images, "flat": images[:, 0, 0, :] + variables["shift"]}


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_features_that_are_the_label_give_auc_one(kind):
    rng = np.random.default_rng(3)
    n_train, n_eval = 96, 61
    if kind == "softmax":
        labels = rng.integers(0, 2, size=n_train + n_eval).astype(np.int32)
        masks, names = np.ones((len(labels), 1), np.float32), ("neg", "pos")
    else:
        labels = (rng.uniform(size=(n_train + n_eval, 3)) < 0.5).astype(np.float32)
        masks, names = (rng.uniform(size=labels.shape) < 0.8).astype(np.float32), ("a", "b", "c")
    images = label_images(labels, kind)
    train = functools.partial(batches_of, images[:n_train], labels[:n_train], masks[:n_train], 32)
    evals = functools.partial(batches_of, images[n_train:], labels[n_train:], masks[n_train:], 16)
    out = probes.layerwise_probes(feature_model, {"shift": 0.0}, train(), evals(), kind=kind, label_names=names, k=5)
    assert out["layers"] == ["map", "flat"] and (out["n_train"], out["n_eval"]) == (n_train, n_eval)
    for probe in ("knn", "linear"):
        for layer in ("map", "flat"):
            assert out[probe][layer]["auc"] == 1.0, (probe, layer)


def test_random_features_give_chance_auc():
    """Features independent of the labels: AUC within 4 null standard deviations of 0.5, sqrt((n+1) / (12 n0 n1))."""
    rng = np.random.default_rng(4)
    n_train, n_eval = 400, 600
    labels = rng.permutation(np.arange(n_train + n_eval) % 2).astype(np.int32)
    images = rng.normal(size=(n_train + n_eval, 2, 2, 16)).astype(np.float32)
    masks = np.ones((len(labels), 1), np.float32)
    out = probes.layerwise_probes(
        feature_model,
        {"shift": 0.0},
        batches_of(images[:n_train], labels[:n_train], masks[:n_train], 100),
        batches_of(images[n_train:], labels[n_train:], masks[n_train:], 100),
        kind="softmax",
        label_names=("neg", "pos"),
    )
    null_sd = np.sqrt((n_eval + 1) / (12 * 300 * 300))
    for probe in ("knn", "linear"):
        for layer in ("map", "flat"):
            assert abs(out[probe][layer]["auc"] - 0.5) < 4 * null_sd, (probe, layer)


def test_a_real_models_features_are_pooled_and_padding_is_dropped():
    """A tiny CBR: the probe's features are the model's conv maps averaged over space, computed here independently."""
    model = get_model("cbr_small", 2, widths=(4, 8))
    rng = np.random.default_rng(5)
    images = rng.normal(size=(70, 16, 16, 3)).astype(np.float32)
    labels = (images[..., 0].mean(axis=(1, 2)) > 0).astype(np.int32)
    masks = np.ones((70, 1), np.float32)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
    apply_fn = functools.partial(model.apply, train=False)
    train, evals = (images[:40], labels[:40], masks[:40]), (images[40:], labels[40:], masks[40:])
    out = probes.layerwise_probes(
        apply_fn, variables, batches_of(*train, 16), batches_of(*evals, 16), kind="softmax", label_names=("n", "p")
    )
    assert out["layers"] == ["layer1", "layer2", "pre_logits"] and out["n_eval"] == 30  # 2 batches of 16, 2 padded
    _, feats_train = model.apply(variables, images[:40], train=False)
    _, feats_eval = model.apply(variables, images[40:], train=False)
    x = np.asarray(feats_train["layer1"], np.float64).mean(axis=(1, 2))
    xe = np.asarray(feats_eval["layer1"], np.float64).mean(axis=(1, 2))
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, labels[:40]).predict_proba(xe)
    assert out["linear"]["layer1"]["auc"] == pytest.approx(roc_auc_score(labels[40:], ref[:, 1]), abs=1e-6)


def test_bad_arguments_are_named():
    images, labels = np.zeros((4, 2, 2, 2), np.float32), np.zeros(4, np.int32)
    masks = np.ones((4, 1), np.float32)
    with pytest.raises(ValueError, match="probes must be"):
        probes.layerwise_probes(feature_model, {"shift": 0.0}, [], [], kind="softmax", label_names="ab", probes=["svm"])
    with pytest.raises(ValueError, match="kind"):
        probes.layerwise_probes(feature_model, {"shift": 0.0}, [], [], kind="hinge", label_names="ab")
    with pytest.raises(ValueError, match="empty"):
        probes.extract_features(feature_model, {"shift": 0.0}, [])
    with pytest.raises(ValueError, match="not among"):
        probes.extract_features(feature_model, {"shift": 0.0}, batches_of(images, labels, masks, 4), layers=["x"])


# ---------------------------------------------------------------- binary probes on arrays


def test_pooled_features_averages_space_and_concatenates_batches():
    def apply_fn(variables, x):
        return None, {"conv": x * variables, "vector": x.sum(axis=(1, 2))}

    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(4, 3, 5, 2)).astype(np.float32), rng.normal(size=(2, 3, 5, 2)).astype(np.float32)]
    pooled = probes.pooled_features(apply_fn, 2.0, batches)
    images = np.concatenate(batches)
    chex.assert_trees_all_close(pooled["conv"], 2.0 * images.mean(axis=(1, 2)), rtol=1e-5)
    chex.assert_trees_all_close(pooled["vector"], images.sum(axis=(1, 2)), rtol=1e-5)
    assert list(probes.pooled_features(apply_fn, 2.0, batches, layers=["vector"])) == ["vector"]


def test_mean_max_pooling_appends_the_spatial_maximum_and_sees_a_patterns_polarity():
    """'mean+max' gives [N, 2C]: NumPy's mean then max over space. A ReLU map of a zero-mean spot and of its
    negative have the same average far from the image's edge but not the same maximum: the average-only probe is
    blind to polarity (what G2 must not be), the maximum is not. Fails if the maximum is dropped or misplaced."""

    def apply_fn(variables, x):
        return None, {"conv": jax.nn.relu(x * variables)}

    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(3, 4, 6, 2)).astype(np.float32)]
    pooled = probes.pooled_features(apply_fn, 1.5, batches, pooling="mean+max")["conv"]
    relu = np.maximum(1.5 * batches[0], 0)
    chex.assert_trees_all_close(pooled, np.concatenate([relu.mean(axis=(1, 2)), relu.max(axis=(1, 2))], -1), rtol=1e-5)
    # A centre-surround spot (integral 0) and its negative: equal ReLU averages here, different maxima.
    spot = np.zeros((1, 9, 9, 1), np.float32)
    spot[0, 3:6, 3:6, 0] = -1.0 / 8
    spot[0, 4, 4, 0] = 1.0  # ReLU of it: mean 1/81, max 1; of its negative: mean 8/8/81, max 1/8
    both = np.concatenate([spot, -spot])
    average, maximum = np.split(probes.pooled_features(apply_fn, 1.0, [both], pooling="mean+max")["conv"], 2, -1)
    assert average[0, 0] == pytest.approx(average[1, 0]) and maximum[0, 0] > 2 * maximum[1, 0]
    with pytest.raises(ValueError, match="pooling"):
        probes.pooled_features(apply_fn, 1.0, batches, pooling="median")


def test_pooled_features_compile_once_per_model():
    """A second extraction with other weights through a new but equal model (the study builds a fresh
    `partial(net.apply)` per draw; a run's config.json gives its widths as a list) traces and compiles nothing."""
    module = get_model("cbr_small", 2, widths=(4, 4))
    images = [np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)]
    init = jax.jit(functools.partial(module.init, train=False))
    variables = [init(jax.random.key(seed), images[0]) for seed in range(2)]
    first = probes.pooled_features(functools.partial(module.apply, train=False), variables[0], images)
    with CompileEvents() as compiles:
        model = get_model("cbr_small", 2, widths=[4, 4])
        second = probes.pooled_features(functools.partial(model.apply, train=False), variables[1], images)
    assert compiles.events == []
    assert not np.allclose(first["layer2"], second["layer2"])  # the new weights were used


def test_probe_auc_is_one_on_the_label_and_chance_on_noise():
    rng = np.random.default_rng(0)
    n = 600
    y_train, y_eval = rng.integers(0, 2, n), rng.integers(0, 2, n)
    noise_train, noise_eval = rng.normal(size=(n, 8)), rng.normal(size=(n, 8))
    informative = probes.linear_probe_auc(
        np.c_[y_train[:, None] + 0.1 * noise_train[:, :1], noise_train[:, 1:]],
        y_train,
        np.c_[y_eval[:, None] + 0.1 * noise_eval[:, :1], noise_eval[:, 1:]],
        y_eval,
    )
    assert informative == 1.0
    chance = probes.linear_probe_auc(noise_train, y_train, noise_eval, y_eval)
    n1 = y_eval.sum()
    n0 = n - n1
    null_sd = np.sqrt((n0 + n1 + 1) / (12 * n0 * n1))  # Mann-Whitney AUC under no signal
    assert abs(chance - 0.5) < 3 * null_sd
    blocks = probes.linear_probe_auc_per_layer(
        {"a": noise_train, "b": y_train[:, None] + 0.1 * noise_train}, y_train,
        {"a": noise_eval, "b": y_eval[:, None] + 0.1 * noise_eval}, y_eval,
    )  # fmt: skip
    assert blocks["b"] == 1.0 and abs(blocks["a"] - 0.5) < 3 * null_sd
    with pytest.raises(ValueError, match="both classes"):
        probes.linear_probe_auc(noise_train, np.zeros(n), noise_eval, y_eval)
    with pytest.raises(ValueError, match="different layers"):
        probes.linear_probe_auc_per_layer({"a": noise_train}, y_train, {"b": noise_eval}, y_eval)


def test_probe_decision_values_are_the_log_odds_and_keep_their_ranks():
    """The decision values `stats.auc_contrast` ranks: the log-odds of class 1 of the probe (standardised by the
    training features' mean and sd, L2 logistic regression, C = 1), checked against a probe built by hand from its
    coefficients and against the log of its odds."""
    rng = np.random.default_rng(2)
    n = 400
    y_train, y_eval = rng.integers(0, 2, n), rng.integers(0, 2, n)
    x_train = np.c_[8 * y_train + rng.normal(size=n), rng.normal(size=(n, 3))]
    x_eval = np.c_[8 * y_eval + rng.normal(size=n), rng.normal(size=(n, 3))]
    scores = probes.linear_probe_decision(x_train, y_train, x_eval)
    mean, sd = x_train.mean(0), x_train.std(0)
    by_hand = LogisticRegression(C=1.0, max_iter=5000).fit((x_train - mean) / sd, y_train)
    p = by_hand.predict_proba((x_eval - mean) / sd)[:, 1]
    odds = (x_eval - mean) / sd @ by_hand.coef_[0] + by_hand.intercept_[0]
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, odds, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scores, np.log(p / (1 - p)), rtol=1e-6, atol=1e-6)
    assert roc_auc_score(y_eval, scores) == probes.linear_probe_auc(x_train, y_train, x_eval, y_eval)


def test_cross_validated_probe_scores_every_example_out_of_fold():
    rng = np.random.default_rng(1)
    n = 400
    labels = rng.integers(0, 2, n)
    features = np.c_[labels + rng.normal(0, 1.5, n), rng.normal(size=(n, 5))]
    scores = np.empty(n)  # the same probe, fold by fold, by hand
    for train, held_out in StratifiedKFold(5, shuffle=True, random_state=3).split(features, labels):
        scaler = StandardScaler().fit(features[train])
        probe = LogisticRegression(max_iter=5000).fit(scaler.transform(features[train]), labels[train])
        scores[held_out] = probe.decision_function(scaler.transform(features[held_out]))
    got = probes.cross_validated_probe_auc(features, labels, folds=5, seed=3)
    assert got == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # one informative feature at d' = 1 / 1.5: AUC = Phi(0.667 / sqrt 2) = 0.68, standard error ~0.026 at n = 400
    assert abs(got - 0.68) < 0.08
    assert probes.cross_validated_probe_auc(np.c_[labels + 0.01 * rng.normal(size=n)], labels) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        probes.cross_validated_probe_auc(features, np.ones(n, int))
