"""Layer-wise probes on frozen features: how much of the task each block's representation already holds.

For every block a model returns in its `features` dict, two classifiers are fitted on the frozen features of a
training set and scored on an evaluation set, with the AUCs of `train.metrics` (the positive class of a binary
softmax task, one-vs-rest per class of a multi-class one, per label over known labels of a sigmoid task):
  * k-NN: cosine similarity, the k nearest training examples vote with equal weight (sklearn's
    `KNeighborsClassifier(metric='cosine')`); the score of a class is the share of neighbours in it. As in
    Matsoukas et al. (CVPR 2022), who use a k-NN probe per layer to locate feature reuse; k = 20 by default (the
    common choice of k-NN evaluations of frozen features, e.g. DINO), `k` sets it.
  * linear: logistic regression (sklearn, L2, C = 1 by default) on standardised features, multinomial for softmax
    tasks, one binary model per label for sigmoid tasks (fitted on the rows where that label is known).
Conv maps [N, H, W, C] are global-average-pooled to [N, C] first: a probe per block then sees C features whatever
the input size, the representation the head itself reads at the top; spatial layout is not probed. `pooling=
'mean+max'` appends each channel's spatial maximum ([N, 2C]): a global average of a ReLU map is nearly blind to a
local pattern's polarity (a spot and its negative have the same amplitude spectrum), a maximum is not, so a probe
asking "do random features already solve this target?" must not read the average alone.

For a binary target held as plain arrays (the study's diagnostics: what frozen random features already know),
`pooled_features` + `linear_probe_auc` (held-out images) or `cross_validated_probe_auc` (out-of-fold predictions of
stratified k-fold cross-validation within one split: no validation or test image needed, every image scored once)
run the same linear probe.

A model is `(apply_fn, variables)` with `apply_fn(variables, images) -> (logits, features)` (for our models
`functools.partial(model.apply, train=False)`: frozen means eval mode, BN with its running statistics). Batches are
the data contract's dicts (image, label, label_mask, valid); rows with valid=False (eval padding, skipped images) are
dropped. Pass finite iterables, e.g. a train split built with train=False (every example once, no augmentation).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from transfusion_jax.analysis import activations
from transfusion_jax.train import metrics as metrics_lib

PROBES = ("knn", "linear")
DEFAULT_K = 20
DEFAULT_MAX_ITER = 5000  # lbfgs stops at convergence; the cap only guards against a non-converging fit


POOLINGS = ("mean", "mean+max")


def _pooled(features: dict[str, jax.Array], pooling: str = "mean") -> OrderedDict[str, jax.Array]:
    """[N, C] rows per feature ([N, 2C] for 'mean+max'), in the model's block order (a plain dict would come out of
    jit sorted by name)."""
    out = OrderedDict()
    for name, f in features.items():
        if f.ndim == 4:
            f = f.astype(jnp.float32)
            mean = jnp.mean(f, axis=(1, 2))
            out[name] = jnp.concatenate([mean, jnp.max(f, axis=(1, 2))], axis=-1) if pooling == "mean+max" else mean
        elif f.ndim == 2:
            out[name] = f.astype(jnp.float32)
        else:
            raise ValueError(f"feature {name!r} has shape {f.shape}; probes take [N, C] or [N, H, W, C]")
    return out


@functools.partial(jax.jit, static_argnames=("apply", "pooling"))
def _pooled_step(variables, images, *, apply: activations.StaticApply, pooling: str):
    """Compiled once per model, image shape and pooling, across calls (see `activations.StaticApply`)."""
    return _pooled(apply.fn(variables, images)[1], pooling)


def _pooled_rows(
    apply_fn: Callable, variables: Any, batches: Iterable, layers: Sequence[str] | None, pooling: str = "mean"
) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
    """(batch, {layer: float32 [valid rows, C]}) per batch; a batch is an image array or a data-contract dict."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    apply = activations.StaticApply(apply_fn)
    for batch in batches:
        images = batch["image"] if isinstance(batch, Mapping) else batch
        valid = np.asarray(batch["valid"]).astype(bool) if isinstance(batch, Mapping) else slice(None)
        out = jax.device_get(_pooled_step(variables, images, apply=apply, pooling=pooling))
        names = list(out) if layers is None else list(layers)
        for name in names:
            if name not in out:
                raise ValueError(f"layer {name!r} is not among the model's features {list(out)}")
        yield batch, {name: np.asarray(out[name])[valid] for name in names}


def pooled_features(
    apply_fn: Callable,
    variables: Any,
    batches: Iterable,
    layers: Sequence[str] | None = None,
    pooling: str = "mean",
) -> dict[str, np.ndarray]:
    """{layer: float32 [N, C]} global-average-pooled features of every image in `batches` (image arrays [B, H, W, 3]
    normalised as the model expects, or data-contract dicts whose valid=False rows are dropped); `layers` defaults
    to every feature the model returns; `pooling='mean+max'` gives [N, 2C], the average then the maximum."""
    feats: dict[str, list] = {}
    for _, rows in _pooled_rows(apply_fn, variables, batches, layers, pooling):
        for name, value in rows.items():
            feats.setdefault(name, []).append(value)
    if not feats:
        raise ValueError("batches is empty: nothing to probe")
    return {name: np.concatenate(f) for name, f in feats.items()}


def extract_features(
    apply_fn: Callable, variables: Any, batches: Iterable[dict], layers: Sequence[str] | None = None
) -> dict[str, Any]:
    """{'features': {layer: float32 [N, C]}, 'label', 'label_mask'} over the valid rows of `batches`."""
    parts: dict[str, list] = {"label": [], "label_mask": []}
    feats: dict[str, list] = {}
    for batch, rows in _pooled_rows(apply_fn, variables, batches, layers):
        valid = np.asarray(batch["valid"]).astype(bool)
        for name, value in rows.items():
            feats.setdefault(name, []).append(value)
        for key in parts:
            parts[key].append(np.asarray(batch[key])[valid])
    if not parts["label"]:
        raise ValueError("batches is empty: nothing to probe")
    result = {key: np.concatenate(value) for key, value in parts.items()}
    if not len(result["label"]):
        raise ValueError("every row of batches has valid=False: nothing to probe")
    return {"features": {name: np.concatenate(f) for name, f in feats.items()}, **result}


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; a zero row stays zero (cosine similarity 0 to everything, as in sklearn)."""
    x = np.asarray(x, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _knn_vote(sim: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Mean of `targets` ([N_train, ...]) over the k most similar training rows of each eval row."""
    if k > sim.shape[1]:
        raise ValueError(f"k={k} exceeds the {sim.shape[1]} training examples available")
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return targets[nearest].mean(axis=1)


def knn_scores(
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: np.ndarray,
    *,
    kind: str,
    num_outputs: int,
    k: int = DEFAULT_K,
    train_mask: np.ndarray | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """k-NN class scores [N_eval, num_outputs]: the share of the k cosine-nearest training rows in each class
    (softmax), or per label the share of positives among the k nearest rows where that label is known (sigmoid)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    train_u, eval_u = _unit_rows(train_x), _unit_rows(eval_x)
    out = np.zeros((len(eval_u), num_outputs))
    if kind == "softmax":
        onehot = np.eye(num_outputs)[np.asarray(train_y, int)]
    elif kind == "sigmoid":
        known = np.ones_like(train_y, bool) if train_mask is None else np.asarray(train_mask) > 0
    else:
        raise ValueError(f"Unknown loss kind {kind!r}")
    for start in range(0, len(eval_u), chunk):
        sim = eval_u[start : start + chunk] @ train_u.T
        if kind == "softmax":
            out[start : start + chunk] = _knn_vote(sim, onehot, k)
        else:
            for c in range(num_outputs):
                rows = known[:, c]
                out[start : start + chunk, c] = _knn_vote(sim[:, rows], np.asarray(train_y)[rows, c], k)
    return out


def _logistic(c: float, max_iter: int):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))


def linear_probe_scores(
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: np.ndarray,
    *,
    kind: str,
    num_outputs: int,
    train_mask: np.ndarray | None = None,
    c: float = 1.0,
    max_iter: int = DEFAULT_MAX_ITER,
) -> np.ndarray:
    """Logistic-regression class probabilities [N_eval, num_outputs] (see the module docstring). A class or label
    absent from the training rows gets the constant score of its training frequency (no model can rank it)."""
    out = np.zeros((len(eval_x), num_outputs))
    if kind == "softmax":
        train_y = np.asarray(train_y, int)
        present = np.unique(train_y)
        if present.size == 1:
            out[:, present[0]] = 1.0
            return out
        model = _logistic(c, max_iter).fit(train_x, train_y)
        out[:, model.classes_] = model.predict_proba(eval_x)
        return out
    if kind != "sigmoid":
        raise ValueError(f"Unknown loss kind {kind!r}")
    known = np.ones_like(train_y, bool) if train_mask is None else np.asarray(train_mask) > 0
    for col in range(num_outputs):
        x, y = np.asarray(train_x)[known[:, col]], np.asarray(train_y)[known[:, col], col]
        if np.unique(y).size < 2:
            out[:, col] = float(y.mean()) if y.size else 0.0
        else:
            out[:, col] = _logistic(c, max_iter).fit(x, y).predict_proba(eval_x)[:, 1]
    return out


def layerwise_probes(
    apply_fn: Callable,
    variables: Any,
    train_batches: Iterable[dict],
    eval_batches: Iterable[dict],
    *,
    kind: str,
    label_names: Sequence[str],
    layers: Sequence[str] | None = None,
    probes: Sequence[str] = PROBES,
    k: int = DEFAULT_K,
    c: float = 1.0,
    max_iter: int = DEFAULT_MAX_ITER,
) -> dict[str, Any]:
    """AUC per block of each probe, fitted on `train_batches` and scored on `eval_batches`; JSON-ready.

    kind: the task's loss ('softmax' | 'sigmoid'); label_names: the task's (their count is the number of outputs).
    Returns {'layers', 'n_train', 'n_eval', 'settings', '<probe>': {layer: {'auc', 'auc/<name>', ...}}}.
    """
    unknown = [p for p in probes if p not in PROBES]
    if unknown or not probes:
        raise ValueError(f"probes must be a non-empty subset of {PROBES}, got {list(probes)}")
    if kind not in ("softmax", "sigmoid"):
        raise ValueError(f"kind must be the task's loss, 'softmax' or 'sigmoid', got {kind!r}")
    train = extract_features(apply_fn, variables, train_batches, layers)
    evals = extract_features(apply_fn, variables, eval_batches, layers)
    num_outputs = len(label_names)
    result: dict[str, Any] = {
        "layers": list(train["features"]),
        "n_train": int(len(train["label"])),
        "n_eval": int(len(evals["label"])),
        "settings": {"kind": kind, "k": k, "c": c, "max_iter": max_iter, "pooling": "global average"},
    }
    train_mask = train["label_mask"] if kind == "sigmoid" else None  # softmax rows are all labelled
    for probe in probes:
        per_layer = {}
        for name in result["layers"]:
            x_train, x_eval = train["features"][name], evals["features"][name]
            if probe == "knn":
                scores = knn_scores(
                    x_train, train["label"], x_eval, kind=kind, num_outputs=num_outputs, k=k, train_mask=train_mask
                )
            else:
                scores = linear_probe_scores(
                    x_train,
                    train["label"],
                    x_eval,
                    kind=kind,
                    num_outputs=num_outputs,
                    train_mask=train_mask,
                    c=c,
                    max_iter=max_iter,
                )
            per_layer[name] = metrics_lib.auc_metrics(kind, label_names, scores, evals["label"], evals["label_mask"])
        result[probe] = per_layer
    return result


# ---------------------------------------------------------------- binary probes on arrays (the study's diagnostics)


def _check_binary(labels: np.ndarray, name: str) -> None:
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError(f"The probe needs both classes (0 and 1) in the {name} labels, got {np.unique(labels)}.")


def linear_probe_auc(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    c: float = 1.0,
    max_iter: int = DEFAULT_MAX_ITER,
) -> float:
    """AUC on the eval set of the linear probe (standardise with the train features' statistics, L2 logistic
    regression with C = `c`) fitted on the train set; binary 0/1 labels. Scored by the decision function, which
    ranks like the probability without saturating to ties."""
    eval_labels = np.asarray(eval_labels)
    _check_binary(eval_labels, "eval")
    scores = linear_probe_decision(train_features, train_labels, eval_features, c, max_iter)
    return float(roc_auc_score(eval_labels, scores))


def linear_probe_decision(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    c: float = 1.0,
    max_iter: int = DEFAULT_MAX_ITER,
) -> np.ndarray:
    """The eval set's decision values (float64 log-odds of class 1) of the probe of `linear_probe_auc`: what an AUC
    ranks, for intervals that need every example's score (e.g. DeLong's, `analysis.stats.auc_contrast`)."""
    train_labels = np.asarray(train_labels)
    _check_binary(train_labels, "train")
    probe = _logistic(c, max_iter).fit(train_features, train_labels)
    return np.asarray(probe.decision_function(eval_features), np.float64)


def cross_validated_probe_auc(
    features: np.ndarray,
    labels: np.ndarray,
    folds: int = 5,
    c: float = 1.0,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
) -> float:
    """AUC of out-of-fold decision values of the same probe (refitted on each training fold) under stratified
    `folds`-fold cross-validation, shuffled with `seed`."""
    labels = np.asarray(labels)
    _check_binary(labels, "given")
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(_logistic(c, max_iter), features, labels, cv=split, method="decision_function")
    return float(roc_auc_score(labels, scores))


def linear_probe_auc_per_layer(
    train: Mapping[str, np.ndarray],
    train_labels: np.ndarray,
    evaluation: Mapping[str, np.ndarray],
    eval_labels: np.ndarray,
    c: float = 1.0,
) -> dict[str, float]:
    """`linear_probe_auc` for every layer of two `pooled_features` results (train and held-out images)."""
    if train.keys() != evaluation.keys():
        raise ValueError(f"Train and eval features have different layers: {sorted(train)} vs {sorted(evaluation)}.")
    return {name: linear_probe_auc(train[name], train_labels, evaluation[name], eval_labels, c) for name in train}
