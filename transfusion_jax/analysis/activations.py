"""From model features to similarity: reduce conv or token features to (datapoints, channels) rows, stream them into
moments.

A model here is a pair `(apply_fn, variables)` with `apply_fn(variables, images) -> (logits, features)`, where
`features` maps block names to arrays (the interface of `transfusion_jax.models`; for those pass
`functools.partial(model.apply, train=False)`). Both models of a pair see the same batch, and each pair of layers
gets its own accumulator, so memory stays proportional to channels**2 however many images stream through.
"""

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from transfusion_jax.analysis import moments, similarity
from transfusion_jax.models.layers import global_avg_pool

Model = tuple[Callable[..., Any], Any]  # (apply_fn, variables)
MODES = ("positions", "mean", "class_token")
# Token features [N, T, D] (a ViT's, transfusion_jax.models.vit) hold this many tokens (the class token) before the
# patch grid.
PREFIX_TOKENS = 1


@dataclasses.dataclass(frozen=True)
class Reduction:
    """How [N, H, W, C] features become rows; recorded next to every result (`describe`).

    mode="positions": every spatial position of every image is a datapoint, [N*P, C], as in the SVCCA conv
      tutorial; `positions` (if set) keeps at most that many positions per image, drawn without replacement from
      `seed` (and the batch index), identically for both layers of a pair when their grids match.
    mode="mean": spatial mean-pooling, [N, C].
    mode="class_token": token features only (below): the class token, [N, D].
    grid=(h, w): first resize with `jax.image.resize(method=resize_method)`; needed to pair positions of layers
      whose grids differ. 2-D features [N, C] pass through unchanged.
    Token features [N, 1 + P, D] (a ViT's) are a class token then P patch tokens: "positions" makes each patch token
    a datapoint and "mean" averages the patch tokens (timm's average pooling), both over the patch grid laid out as
    an image (square when P is a square, else one row), so `positions` and `grid` act on it as on a conv map; the
    class token enters neither.
    """

    mode: str = "positions"
    positions: int | None = None
    grid: tuple[int, int] | None = None
    resize_method: str = "linear"
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Reduction mode must be one of {MODES}, got {self.mode!r}")
        if self.positions is not None and (self.mode != "positions" or self.positions < 1):
            raise ValueError(f"positions={self.positions} needs mode='positions' and a value >= 1")

    def describe(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["grid"] = list(self.grid) if self.grid else None
        return out


def resize(features: jax.Array, grid: tuple[int, int], method: str = "linear") -> jax.Array:
    """Resize [N, H, W, C] features to [N, h, w, C]."""
    n, _, _, c = features.shape
    return jax.image.resize(features, (n, *grid, c), method=method)


def positions_as_datapoints(features: jax.Array, positions: int | None = None, key: jax.Array | None = None):
    """[N, H, W, C] -> [N * P, C]: spatial positions as datapoints, P = H*W or `positions` sampled per image.

    Grids with at most `positions` positions are used whole (one setting serves every layer of a network).

    Each image gets its own random subset (keys split from `key`), so the same key and grid give the same
    subset for both layers of a pair.
    """
    n, h, w, c = features.shape
    flat = features.reshape(n, h * w, c)
    if positions is None or positions >= h * w:
        return flat.reshape(n * h * w, c)
    keys = jax.random.split(key, n)
    idx = jax.vmap(lambda k: jax.random.choice(k, h * w, (positions,), replace=False))(keys)
    return jnp.take_along_axis(flat, idx[:, :, None], axis=1).reshape(n * positions, c)


def patch_grid(tokens: jax.Array) -> jax.Array:
    """Token features [N, 1 + P, D] -> the patch tokens as a map [N, g, g, D] (P = g * g), else [N, 1, P, D]."""
    n, t, d = tokens.shape
    patches = t - PREFIX_TOKENS
    side = int(round(patches**0.5))
    h, w = (side, side) if side * side == patches else (1, patches)
    return tokens[:, PREFIX_TOKENS:].reshape(n, h, w, d)


def to_datapoints(features: jax.Array, reduction: Reduction, key: jax.Array) -> jax.Array:
    """Apply `reduction` to one layer's features ([N, C] passes through)."""
    if features.ndim == 2:
        return features
    if features.ndim == 3 and reduction.mode == "class_token":
        return features[:, 0]
    if features.ndim == 3:
        features = patch_grid(features)
    elif reduction.mode == "class_token":
        raise ValueError(f"mode 'class_token' needs token features [N, T, D], got shape {features.shape}")
    if features.ndim != 4:
        raise ValueError(f"features must be [N, C], [N, T, D] or [N, H, W, C], got shape {features.shape}")
    if reduction.grid is not None:
        features = resize(features, reduction.grid, reduction.resize_method)
    if reduction.mode == "mean":
        return global_avg_pool(features)
    return positions_as_datapoints(features, reduction.positions, key)


def _images(batch):
    return batch["image"] if isinstance(batch, Mapping) else batch


def _layer_rows(model: Model, images, reduction: Reduction, key) -> dict[str, jax.Array]:
    apply_fn, variables = model
    _, features = apply_fn(variables, images)
    return {name: to_datapoints(f, reduction, key) for name, f in features.items()}


def _check_layers(model: Model, images, reduction: Reduction, layers: Sequence[str]) -> None:
    """Raises before any collection if a requested layer is not among the model's (shapes only, nothing runs)."""
    shapes = jax.eval_shape(lambda im: _layer_rows(model, im, reduction, jax.random.key(reduction.seed)), images)
    missing = [name for name in layers if name not in shapes]
    if missing:
        raise ValueError(f"layers {missing} not found: the model has {list(shapes)}")


def collect_pair_moments(
    model_a: Model,
    model_b: Model,
    batches: Iterable,
    pairs: Sequence[tuple[str, str]] | None = None,
    reduction: Reduction = Reduction(),
) -> dict[tuple[str, str], moments.Accumulator]:
    """Run both models over `batches` (arrays [N, H, W, C] or dicts with 'image') and stream layer pairs.

    pairs: (layer of a, layer of b) to compare; default every block name the two models share, in a's order.
    Returns one accumulator per pair; finish with `moments.finalize` and `similarity.measure`.
    The whole step (both forwards, reductions, every accumulator update) is one jitted function.
    """
    iterator = iter(batches)
    try:
        first = _images(next(iterator))
    except StopIteration:
        raise ValueError("batches is empty: nothing to compare") from None
    key0 = jax.random.key(reduction.seed)
    shapes_a = jax.eval_shape(lambda im: _layer_rows(model_a, im, reduction, key0), first)
    shapes_b = jax.eval_shape(lambda im: _layer_rows(model_b, im, reduction, key0), first)
    if pairs is None:
        pairs = [(name, name) for name in shapes_a if name in shapes_b]
    pairs = [tuple(p) for p in pairs]
    for la, lb in pairs:
        if la not in shapes_a or lb not in shapes_b:
            raise ValueError(f"layer pair {(la, lb)} not found: model a has {list(shapes_a)}, b has {list(shapes_b)}")
        if shapes_a[la].shape[0] != shapes_b[lb].shape[0]:
            raise ValueError(
                f"layers {la!r} and {lb!r} give {shapes_a[la].shape[0]} vs {shapes_b[lb].shape[0]} "
                f"datapoints per batch (different grids?): set Reduction(grid=...) or mode='mean'"
            )
    accs = [moments.init(shapes_a[la].shape[1], shapes_b[lb].shape[1]) for la, lb in pairs]

    @jax.jit
    def step(accs, variables_a, variables_b, images, index):
        key = jax.random.fold_in(key0, index)
        rows_a = _layer_rows((model_a[0], variables_a), images, reduction, key)
        rows_b = _layer_rows((model_b[0], variables_b), images, reduction, key)
        return [moments.accumulate_traced(acc, rows_a[la], rows_b[lb]) for acc, (la, lb) in zip(accs, pairs)]

    images, index = first, 0
    while True:
        accs = step(accs, model_a[1], model_b[1], images, index)
        batch = next(iterator, None)
        if batch is None:
            return dict(zip(pairs, accs))
        images, index = _images(batch), index + 1


def collect_pair_rows(
    model_a: Model,
    model_b: Model,
    batches: Iterable,
    layers: Sequence[str],
    reduction: Reduction = Reduction(),
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer: (rows of a, rows of b)} as float32 host arrays: the same datapoints `collect_pair_moments` streams
    (same reduction, same positions for both models), kept whole for measures that need the arrays themselves (the
    sanity checks remove principal components). Memory grows with the images: use it on a bounded set."""
    key0 = jax.random.key(reduction.seed)

    @jax.jit
    def step(variables_a, variables_b, images, index):
        key = jax.random.fold_in(key0, index)
        rows_a = _layer_rows((model_a[0], variables_a), images, reduction, key)
        rows_b = _layer_rows((model_b[0], variables_b), images, reduction, key)
        return {name: (rows_a[name], rows_b[name]) for name in layers}

    parts: dict[str, tuple[list, list]] = {name: ([], []) for name in layers}
    for index, batch in enumerate(batches):
        images = _images(batch)
        if index == 0:
            _check_layers(model_a, images, reduction, layers)
        for name, (ra, rb) in jax.device_get(step(model_a[1], model_b[1], images, index)).items():
            parts[name][0].append(np.asarray(ra, np.float32))
            parts[name][1].append(np.asarray(rb, np.float32))
    if not layers or not parts[layers[0]][0]:
        raise ValueError("batches is empty (or no layers given): nothing to collect")
    return {name: (np.concatenate(a), np.concatenate(b)) for name, (a, b) in parts.items()}


def compare_models(
    model_a: Model,
    model_b: Model,
    batches: Iterable,
    method: str = "svcca",
    pairs: Sequence[tuple[str, str]] | None = None,
    reduction: Reduction = Reduction(),
    **options,
) -> dict[str, dict[str, Any]]:
    """Similarity of each layer pair, as JSON-ready dicts keyed 'layer_a/layer_b', with the reduction recorded."""
    accs = collect_pair_moments(model_a, model_b, batches, pairs, reduction)
    out = {}
    for (la, lb), acc in accs.items():
        result = similarity.measure(moments.finalize(acc), method, **options).as_dict()
        out[f"{la}/{lb}"] = {**result, "layer_a": la, "layer_b": lb, "reduction": reduction.describe()}
    return out


def collect_rows(
    model: Model, batches: Iterable, layers: Sequence[str], reduction: Reduction = Reduction()
) -> dict[str, np.ndarray]:
    """{layer: float32 host rows [N * P, C]} of one model: the datapoints `collect_pair_moments` streams (same
    reduction; positions drawn from the same key for the same batch index, so two models' rows of the same batches
    pair up row by row), kept whole for measures that need the arrays, e.g. a null from shuffled images. Rows of
    one image are contiguous, images in batch order. Memory grows with the images: use it on a bounded set."""
    key0 = jax.random.key(reduction.seed)
    apply_fn, variables = model

    @jax.jit
    def step(variables, images, index):
        rows = _layer_rows((apply_fn, variables), images, reduction, jax.random.fold_in(key0, index))
        return {name: rows[name] for name in layers}

    parts: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    for index, batch in enumerate(batches):
        images = _images(batch)
        if index == 0:
            _check_layers(model, images, reduction, layers)
        for name, rows in jax.device_get(step(variables, images, index)).items():
            parts[name].append(np.asarray(rows, np.float32))
    if not layers or not parts[layers[0]]:
        raise ValueError("batches is empty (or no layers given): nothing to collect")
    return {name: np.concatenate(rows) for name, rows in parts.items()}
