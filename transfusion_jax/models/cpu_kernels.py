"""Faster gradients of convolutions and max-pools on XLA:CPU, with the same values; other platforms are untouched.

Profiling the train step on XLA:CPU (jax 0.10, YNNPACK convolutions) found three costs that PyTorch's CPU kernels
do not have (figures: BENCHMARKS.md, "CPU train step"):

- Conv kernel gradients. XLA computes dW as one convolution whose window is the whole feature map and whose
  contraction runs over the batch. Its cost grows far faster than the work: for a 7x7 conv on 146 x 146 maps it
  takes 5x longer per image at batch 8 than at batch 1. Here dW is a sum of single-image convolutions over tiles
  of `TILE_ROWS` rows, which runs at PyTorch's speed.
- Max-pool gradients. XLA:CPU expands `select_and_scatter` into a reduce-window that carries four int32 index
  arrays of the input's size, and a scatter. Here the gradient goes to the first maximum of each window (the
  element `select_and_scatter` chooses) through one strided pad per window offset.
- Convolutions under `jax.vmap` with batched kernels (many runs in one program, train/multirun.py) become grouped
  convolutions, 5-12x slower on XLA:CPU than the same convolutions one run at a time. Here the run axis is unrolled
  (a custom vmap rule); a batch shared by every run is convolved once with all runs' kernels side by side.

Forward values come from the same `lax` operations; gradients differ from XLA's only in the order of float
additions. Each replacement is chosen with `lax.platform_dependent`, so GPU and TPU programs compile the standard
operations. `ENABLED` (env `TRANSFUSION_JAX_CPU_KERNELS=0` turns it off) is read when a function is traced.
"""

import dataclasses
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

ENABLED = os.environ.get("TRANSFUSION_JAX_CPU_KERNELS", "1") != "0"

# dW is split into single-image tiles of this many output rows when the output has at least MIN_ROWS rows; below
# that XLA's batched kernel gradient is as fast or faster (measured on a 2-core Zen 4 for the CBR and ResNet-50
# layer shapes: tiles of 16-32 rows were fastest at 72-587 rows; 7 x 7 maps were slower tiled).
TILE_ROWS = 32
MIN_ROWS = 56

_NHWC = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class _Conv:
    """A 2-D NHWC/HWIO convolution without dilation or groups: what the CPU path handles."""

    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]

    def __call__(self, x, w):
        return lax.conv_general_dilated(x, w, self.strides, self.padding, dimension_numbers=_NHWC)

    def input_grad(self, x, w, g):
        return jax.vjp(lambda x: self(x, w), x)[1](g)[0]

    def kernel_grad(self, x, w, g):
        """dW as XLA computes it for this batch (one convolution contracting over the batch)."""
        return jax.vjp(lambda w: self(x, w), w)[1](g)[0]

    def tiled_kernel_grad(self, x, w, g):
        """dW as a sum over images and row tiles of single-image kernel gradients (see the module docstring)."""
        rows = g.shape[1]
        if rows < MIN_ROWS:
            return self.kernel_grad(x, w, g)
        if self.strides != (1, 1):  # tiles of a strided conv would need their own padding: split images only
            parts = [self.kernel_grad(x[b : b + 1], w, g[b : b + 1]) for b in range(x.shape[0])]
        else:
            (top, bottom), (left, right) = self.padding
            padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
            valid = _Conv((1, 1), ((0, 0), (0, 0)))
            halo = w.shape[0] - 1
            parts = [
                valid.kernel_grad(padded[b : b + 1, r : r + n + halo], w, g[b : b + 1, r : r + n])
                for b in range(x.shape[0])
                for r, n in ((r, min(TILE_ROWS, rows - r)) for r in range(0, rows, TILE_ROWS))
            ]
        total = parts[0].astype(jnp.float32)  # bfloat16 partial sums would each round: add them in float32
        for part in parts[1:]:
            total = total + part.astype(jnp.float32)
        return total.astype(w.dtype)


def _concat_runs(w):
    """[N, kh, kw, cin, cout] -> [kh, kw, cin, N * cout]: every run's kernels as one convolution's outputs."""
    return jnp.moveaxis(w, 0, 3).reshape(*w.shape[1:4], -1)


def _split_runs(y, runs: int):
    """[..., N * c] -> [N, ..., c]."""
    return jnp.moveaxis(y.reshape(*y.shape[:-1], runs, -1), -2, 0)


def _one_run_at_a_time(fun, shared_input_rule=None):
    """`fun(*arrays)` whose vmap calls it once per element of the mapped axis instead of batching its
    convolutions into grouped ones. `shared_input_rule(axis_size, *args)`, if given, handles the case where only
    the first argument (the input) is unbatched."""
    mapped = jax.custom_batching.custom_vmap(fun)

    @mapped.def_vmap
    def rule(axis_size, in_batched, *args):
        if shared_input_rule is not None and not in_batched[0] and all(in_batched[1:]):
            return shared_input_rule(axis_size, *args), True
        outs = [mapped(*(a[i] if b else a for a, b in zip(args, in_batched))) for i in range(axis_size)]
        return jnp.stack(outs), True

    return mapped


def _cpu_conv(conv: _Conv, x, w):
    def forward(x, w):
        return _one_run_at_a_time(conv, lambda n, x, w: _split_runs(conv(x, _concat_runs(w)), n))(x, w)

    def kernel_grad(x, w, g):
        def shared(n, x, w, g):  # one input, every run's output gradient: one dW with N * cout outputs
            dw = conv.tiled_kernel_grad(x, _concat_runs(w), jnp.moveaxis(g, 0, -2).reshape(*g.shape[1:-1], -1))
            return _split_runs(dw, n)

        return _one_run_at_a_time(conv.tiled_kernel_grad, shared)(x, w, g)

    @jax.custom_vjp
    def f(x, w):
        return forward(x, w)

    def f_fwd(x, w):
        return forward(x, w), (x, w)

    def f_bwd(residuals, g):
        x, w = residuals
        return _one_run_at_a_time(conv.input_grad)(x, w, g), kernel_grad(x, w, g)

    f.defvjp(f_fwd, f_bwd)
    return f(x, w)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """`lax.conv_general_dilated` (the signature flax's `nn.Conv` calls), with the CPU gradients above."""
    standard = functools.partial(
        lax.conv_general_dilated,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    supported = (
        ENABLED
        and lhs.ndim == 4
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        and all(d == 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
        and feature_group_count == 1
        and batch_group_count == 1
        and precision is None
        and preferred_element_type is None
    )
    if not supported:
        return standard(lhs, rhs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    conv = _Conv(tuple(window_strides), tuple(tuple(p) for p in padding))
    return lax.platform_dependent(lhs, rhs, cpu=functools.partial(_cpu_conv, conv), default=standard)


def _max_pool_valid(x, window: int, stride: int):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), "VALID")


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _cpu_max_pool_valid(x, window: int, stride: int):
    return _max_pool_valid(x, window, stride)


def _window_views(x, window: int, stride: int, out_shape):
    """For each window offset in row-major order, the element at that offset of every output position's window
    (a strided slice of `x`)."""
    (batch, _, _, channels), (_, out_h, out_w, _) = x.shape, out_shape
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    for i in range(window):
        for j in range(window):
            yield lax.slice(x, (0, i, j, 0), (batch, i + span_h, j + span_w, channels), (1, stride, stride, 1))


def _cpu_max_pool_fwd(x, window, stride):
    """The max and, as the residual, which window offset holds each window's first maximum (row-major order, the
    element `select_and_scatter` chooses), both from one pass over the same values. The backward pass must not
    find the maximum again by comparing the input with the output: XLA may compute the input (e.g. a fused
    BatchNorm-ReLU) once for the forward pass and again, rounded differently, for the backward one, and then
    `input == max` fails and a window's gradient is lost. The maxima equal `reduce_window`'s; the index is int8
    (window**2 <= 127 offsets) to keep the residual small."""
    if window * window > 127:
        raise ValueError(f"max-pool windows of more than 127 elements are not supported here, got {window}x{window}.")
    y = index = None
    for k, seen in enumerate(_window_views(x, window, stride, _pooled_shape(x.shape, window, stride))):
        if y is None:
            y, index = seen, jnp.zeros(seen.shape, jnp.int8)
        else:
            index = jnp.where(seen > y, jnp.int8(k), index)
            y = lax.max(y, seen)  # as reduce_window's max: exact in any order, NaN-propagating
    return y, (x, index)


def _pooled_shape(shape, window: int, stride: int):
    batch, height, width, channels = shape
    return batch, (height - window) // stride + 1, (width - window) // stride + 1, channels


def _cpu_max_pool_bwd(window, stride, residuals, g):
    return (_runs_as_images(functools.partial(_max_pool_grad, window, stride))(*residuals, g),)


def _runs_as_images(fun):
    """`fun(*arrays)` on NHWC arrays of independent images, whose vmap folds the mapped axis into the images'
    (XLA:CPU runs the 5-D version of these elementwise chains several times slower)."""
    mapped = jax.custom_batching.custom_vmap(fun)

    @mapped.def_vmap
    def rule(axis_size, in_batched, *args):
        args = [a if b else jnp.broadcast_to(a, (axis_size, *a.shape)) for a, b in zip(args, in_batched)]
        out = mapped(*(a.reshape(-1, *a.shape[2:]) for a in args))
        return out.reshape(axis_size, -1, *out.shape[1:]), True

    return mapped


def _max_pool_grad(window, stride, x, index, g):
    """Each output's gradient to its window's first maximum (`index`, from the forward pass; `x` gives only the
    shape), one window offset at a time: a strided pad places the outputs whose maximum sits at that offset."""
    (_, height, width, _), (_, out_h, out_w, _) = x.shape, g.shape
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    zero = jnp.zeros((), g.dtype)
    dx = None
    for k in range(window * window):
        i, j = divmod(k, window)
        placed = ((0, 0, 0), (i, height - i - span_h, stride - 1), (j, width - j - span_w, stride - 1), (0, 0, 0))
        part = lax.pad(jnp.where(index == jnp.int8(k), g, zero), zero, placed)
        dx = part if dx is None else dx + part
    return dx


_cpu_max_pool_valid.defvjp(_cpu_max_pool_fwd, _cpu_max_pool_bwd)


def max_pool(x, window: int, stride: int, padding):
    """`nn.max_pool` with a square window and stride over NHWC input, with the CPU gradient above."""

    def standard(x):
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding=padding)

    if not ENABLED or x.ndim != 4:
        return standard(x)

    def cpu(x):
        if isinstance(padding, str):
            pads = lax.padtype_to_pads(x.shape[1:3], (window, window), (stride, stride), padding)
        else:
            pads = padding
        x = jnp.pad(x, ((0, 0), *[tuple(p) for p in pads], (0, 0)), constant_values=-jnp.inf)
        return _cpu_max_pool_valid(x, window, stride)

    return lax.platform_dependent(x, cpu=cpu, default=standard)
