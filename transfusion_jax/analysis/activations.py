"""From model features to similarity: reduce conv or token features to (datapoints, channels) rows, stream them into
moments.

A model here is a pair `(apply_fn, variables)` with `apply_fn(variables, images) -> (logits, features)`, where
`features` maps block names to arrays (the interface of `transfusion_jax.models`; for those pass
`functools.partial(model.apply, train=False)`). Both models of a pair see the same batch, and each pair of layers
gets its own accumulator, so memory stays proportional to channels**2 however many images stream through.

Compiled once: every collection runs a module-level jitted program whose static part is (apply functions,
reduction, layers), with variables, images and the batch index as arguments. So a second checkpoint, a second run
of the same architecture or the next analysis of a figure reuses the program of the first instead of tracing and
compiling the model again (a ResNet-50 forward costs seconds to compile on a CPU); only a new image shape (e.g. a
last, smaller batch) compiles once more.
"""

import dataclasses
import functools
import inspect
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
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
        if self.grid is not None:  # hashable: the reduction is part of a compiled program's static key
            object.__setattr__(self, "grid", tuple(self.grid))
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


def _program_key(fn: Callable) -> Hashable:
    """What `fn` computes, as a hashable value: a `functools.partial` by its function and arguments, a bound
    method by its function and its object's value (Flax modules compare by their fields), anything else itself."""
    if isinstance(fn, functools.partial):
        return (functools.partial, _program_key(fn.func), fn.args, tuple(sorted(fn.keywords.items())))
    if inspect.ismethod(fn):
        return (fn.__func__, fn.__self__)
    return fn


class StaticApply:
    """An apply function as a static argument of `jax.jit`, equal to another that computes the same thing: every
    `RunWeights` (and every notebook cell) builds its own `functools.partial(module.apply, train=False)`, which
    Python compares by identity; this compares the module instead, so equal architectures share one program.
    A function whose parts cannot be hashed is compared by identity."""

    def __init__(self, fn: Callable):
        self.fn = fn
        try:
            self.key = _program_key(fn)
            hash(self.key)
        except TypeError:
            self.key = None

    def __eq__(self, other):
        if not isinstance(other, StaticApply):
            return NotImplemented
        return self.fn is other.fn if self.key is None or other.key is None else self.key == other.key

    def __hash__(self):
        return id(self.fn) if self.key is None else hash(self.key)


def _layer_rows(model: Model, images, reduction: Reduction, key) -> dict[str, jax.Array]:
    """{layer: rows} in the model's own layer order (an OrderedDict: jit returns a plain dict sorted by name)."""
    apply_fn, variables = model
    _, features = apply_fn(variables, images)
    return OrderedDict((name, to_datapoints(f, reduction, key)) for name, f in features.items())


@functools.partial(jax.jit, static_argnames=("apply", "reduction", "layers"))
def _rows_step(variables, images, index, *, apply: StaticApply, reduction: Reduction, layers: tuple[str, ...] | None):
    """One model's rows of one batch: every layer (layers=None) or the named ones; positions drawn from the
    reduction's seed folded with the batch index, so two models' rows of one batch pair up."""
    key = jax.random.fold_in(jax.random.key(reduction.seed), index)
    rows = _layer_rows((apply.fn, variables), images, reduction, key)
    return rows if layers is None else OrderedDict((name, rows[name]) for name in layers)


@functools.partial(jax.jit, static_argnames=("pairs",), donate_argnums=0)
def _accumulate_pairs(accs, rows_a, rows_b, *, pairs):
    """Every pair's accumulator update, as one program. Separate from the forwards so that two models of one
    architecture run one compiled forward (a program holding both would compile the model twice)."""
    return [moments.accumulate_traced(acc, rows_a[la], rows_b[lb]) for acc, (la, lb) in zip(accs, pairs)]


def _row_shapes(model: Model, images, reduction: Reduction) -> dict[str, jax.ShapeDtypeStruct]:
    """Every layer's row shape for `images` (traced once per program and image shape; nothing runs)."""
    apply, variables = StaticApply(model[0]), model[1]
    return jax.eval_shape(_rows_step, variables, images, 0, apply=apply, reduction=reduction, layers=None)


def _check_layers(model: Model, images, reduction: Reduction, layers: Sequence[str]) -> None:
    """Raises before any collection if a requested layer is not among the model's (shapes only, nothing runs)."""
    shapes = _row_shapes(model, images, reduction)
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
    Per batch, each model's forward and reductions run as one compiled program (one for both models when they
    share an architecture) and every accumulator update as another; the rows stay on the device.
    """
    iterator = iter(batches)
    try:
        first = _images(next(iterator))
    except StopIteration:
        raise ValueError("batches is empty: nothing to compare") from None
    shapes_a = _row_shapes(model_a, first, reduction)
    shapes_b = _row_shapes(model_b, first, reduction)
    if pairs is None:
        pairs = [(name, name) for name in shapes_a if name in shapes_b]
    pairs = tuple(tuple(p) for p in pairs)
    for la, lb in pairs:
        if la not in shapes_a or lb not in shapes_b:
            raise ValueError(f"layer pair {(la, lb)} not found: model a has {list(shapes_a)}, b has {list(shapes_b)}")
        if shapes_a[la].shape[0] != shapes_b[lb].shape[0]:
            raise ValueError(
                f"layers {la!r} and {lb!r} give {shapes_a[la].shape[0]} vs {shapes_b[lb].shape[0]} "
                f"datapoints per batch (different grids?): set Reduction(grid=...) or mode='mean'"
            )
    accs = [moments.init(shapes_a[la].shape[1], shapes_b[lb].shape[1]) for la, lb in pairs]
    static_a = {"apply": StaticApply(model_a[0]), "reduction": reduction, "layers": None}  # the shapes' trace
    static_b = {"apply": StaticApply(model_b[0]), "reduction": reduction, "layers": None}
    images, index = first, 0
    while True:
        rows_a = _rows_step(model_a[1], images, index, **static_a)
        rows_b = _rows_step(model_b[1], images, index, **static_b)
        rows_a = {name: rows_a[name] for name in dict.fromkeys(la for la, _ in pairs)}
        rows_b = {name: rows_b[name] for name in dict.fromkeys(lb for _, lb in pairs)}
        accs = _accumulate_pairs(accs, rows_a, rows_b, pairs=pairs)
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
    layers = tuple(layers)
    parts: dict[str, tuple[list, list]] = {name: ([], []) for name in layers}
    static_a = {"apply": StaticApply(model_a[0]), "reduction": reduction, "layers": layers}
    static_b = {"apply": StaticApply(model_b[0]), "reduction": reduction, "layers": layers}
    for index, batch in enumerate(batches):
        images = _images(batch)
        if index == 0:
            _check_layers(model_a, images, reduction, layers)
        rows_a = _rows_step(model_a[1], images, index, **static_a)
        rows_b = _rows_step(model_b[1], images, index, **static_b)
        for name, (ra, rb) in jax.device_get({name: (rows_a[name], rows_b[name]) for name in layers}).items():
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
    layers = tuple(layers)
    apply_fn, variables = model
    static = {"apply": StaticApply(apply_fn), "reduction": reduction, "layers": layers}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    for index, batch in enumerate(batches):
        images = _images(batch)
        if index == 0:
            _check_layers(model, images, reduction, layers)
        for name, rows in jax.device_get(_rows_step(variables, images, index, **static)).items():
            parts[name].append(np.asarray(rows, np.float32))
    if not layers or not parts[layers[0]]:
        raise ValueError("batches is empty (or no layers given): nothing to collect")
    return {name: np.concatenate(rows) for name, rows in parts.items()}
