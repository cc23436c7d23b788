"""Faster convolutions and max-pools on XLA:CPU, with the same values to float32 rounding; other platforms untouched.

Profiling the train step on XLA:CPU (jax 0.10, YNNPACK convolutions) found five costs that PyTorch's CPU kernels
do not have (figures: BENCHMARKS.md, "CPU train step"):

- Conv kernel gradients. XLA computes dW as one convolution whose window is the whole feature map and whose
  contraction runs over the batch. Its cost grows far faster than the work: for a 7x7 conv on 146 x 146 maps it
  takes 5x longer per image at batch 8 than at batch 1. Here dW is a sum of single-image convolutions over tiles
  of `TILE_ROWS` rows, which runs at PyTorch's speed. A 1x1 conv's dW is one matrix product (x^T g), 2-7x faster
  than XLA's convolution form on ResNet-50's shapes.
- Convolutions under `jax.vmap` with batched kernels (many runs in one program, train/multirun.py) become grouped
  convolutions, 5-12x slower on XLA:CPU than the same convolutions one run at a time. Here the run axis is unrolled
  (a custom vmap rule); a batch shared by every run is convolved once with all runs' kernels side by side.
- Convolutions whose input map is smaller than their kernel (CBR's 7x7 conv on the 3x3 map of a 32 px image, the
  miniature study's and the tests' size) leave XLA:CPU's fast path: forward and gradients 5-25x slower than on a map
  as large as the kernel (a 7x7 conv, 64 -> 128 channels, batch 32: 66 ms forward on 4x4 maps, 5 ms on 7x7 ones).
  There the whole convolution is one matrix product with the kernel laid out for every (input, output) position
  pair (a block-Toeplitz matrix, taps outside the kernel being zero): 3x3 maps 15x faster, and under `jax.vmap`
  a batched matrix product instead of a grouped convolution.
- Forward passes over few input channels (an RGB input layer) at stride 1: XLA:CPU's direct convolution is 2-3x
  slower over 3 channels than over the same products laid out on more (CBR-Small's first layer at 587 px, batch 8:
  1100 ms; over channels zero-padded to 4, 470 ms; PyTorch 250-300 ms). `_Conv.forward` pads them to 4 (or 8) on
  maps of at least `WIDE_MAP_ROWS` output rows, and below that folds each row of kernel taps into channels (a
  kh x 1 convolution over kw * cin channels, zero-padded to a multiple of 8: 5-6 -> 2-2.5 ms at 32 px, batch 32).
  The gradients keep the plain kernel, which is faster for them.

A fifth cost is XLA:CPU's max-pool gradient: `select_and_scatter`, expanded with four int32 index arrays of the
input's size (2.3 GiB more peak memory for CBR-Small at 587 px, batch 8; 3-5x slower than the kernel below). A first
replacement, since removed, found each window's maximum again in the backward pass by comparing the pool's input
with its output, and sent the gradient there by strided pads. It equalled XLA's gradient alone and inside small
models, but inside the jitted 4-layer CBR at 32 px (7 x 7 -> 3 x 3 pool) its gradients were 29 % off: XLA:CPU may
compute the BatchNorm-ReLU output that feeds a max-pool once for the forward pass and again, rounded differently,
for the backward one, so a window could hold no entry equal to its maximum and lose its gradient. The kernel here
cannot lose a window: the forward pass records each window's first maximum as an index (int8, the output's size)
chosen by a running comparison, so it always names an entry of the window, and the backward pass reads only that
index (per window offset, the output gradient where the index names that offset, placed by an interior-padded
`lax.pad`; the placements summed). Ties go to the first maximum in window order, as in XLA. The index is stored
(`_Pool.stored_maxima`): left to XLA:CPU's fusion, it was recomputed inside the placement for every window offset,
which cost 13 % of the miniature study's step and 4 % of CBR-Small's at 587 px.
tests/models/test_cpu_kernels.py checks whole-model gradients at those shapes and in a ResNet-50 stem.

Forward values come from the same `lax` operations (max-pools: the same maxima) except over few input channels and
on maps smaller than the kernel (the same products, and zeros, added in another order); gradients differ from XLA's
only in the order of float additions. Each replacement is chosen with `lax.platform_dependent`, so GPU and TPU
programs compile the standard operations. `ENABLED` (env `TRANSFUSION_JAX_CPU_KERNELS=0` turns it off) is read when
a function is traced.
"""

import contextlib
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ENABLED = os.environ.get("TRANSFUSION_JAX_CPU_KERNELS", "1") != "0"

# dW is split into single-image tiles of this many output rows when the output has at least MIN_ROWS rows; below
# that XLA's batched kernel gradient is as fast or faster (measured on a 2-core Zen 4 for the CBR and ResNet-50
# layer shapes: tiles of 16-32 rows were fastest at 72-587 rows; 7 x 7 maps were slower tiled).
TILE_ROWS = 32
MIN_ROWS = 56
# The block-Toeplitz matrix of a convolution on a map smaller than its kernel is used up to this size; beyond it
# (very wide layers) XLA's convolution is kept.
DENSE_MAX_BYTES = 64 * 2**20
# A stride-1 convolution over fewer input channels than FEW_CHANNELS (an RGB input layer) runs its forward pass
# zero-padded to a multiple of 4 channels when its output has at least WIDE_MAP_ROWS rows, and with the width taps
# folded into channels below that (measured on a 2-core Zen 4: BENCHMARKS.md, "First-layer forward").
FEW_CHANNELS = 8
WIDE_MAP_ROWS = 96

_NHWC = ("NHWC", "HWIO", "NHWC")


@contextlib.contextmanager
def standard_operations():
    """Functions traced inside use XLA's standard operations on every platform: for counting a model's arithmetic
    (XLA's cost analysis), which the CPU forms above inflate with the zero taps and channels they multiply by."""
    global ENABLED
    previous, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = previous


@dataclasses.dataclass(frozen=True)
class _Conv:
    """A 2-D NHWC/HWIO convolution without dilation or groups: what the CPU path handles."""

    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]

    def __call__(self, x, w):
        return lax.conv_general_dilated(x, w, self.strides, self.padding, dimension_numbers=_NHWC)

    def forward(self, x, w):
        """The convolution's output. Over few input channels at stride 1, XLA:CPU's direct convolution is 2-3x slower
        than the same products laid out over more channels: on wide maps the channels are zero-padded to a multiple
        of 4; on smaller ones each row of kernel taps becomes channels (a kh x 1 convolution over kw * cin channels,
        zero-padded to a multiple of 8). The same products and zeros, added in another order."""
        kh, kw, cin, cout = w.shape
        if cin >= FEW_CHANNELS or self.strides != (1, 1) or kw == 1:
            return self(x, w)
        rows, cols = _out_hw(x.shape[1:3], (kh, kw), self.strides, self.padding)
        if rows >= WIDE_MAP_ROWS:
            channels = -(-cin // 4) * 4
            return self(_pad_channels(x, channels, axis=3), _pad_channels(w, channels, axis=2))
        left, right = self.padding[1]
        x = jnp.pad(x, ((0, 0), (0, 0), (left, right), (0, 0)))
        folded = jnp.concatenate([x[:, :, j : j + cols] for j in range(kw)], axis=3)  # channel j * cin + c
        channels = -(-kw * cin // 8) * 8
        rows_only = _Conv((1, 1), (self.padding[0], (0, 0)))
        return rows_only(
            _pad_channels(folded, channels, axis=3), _pad_channels(w.reshape(kh, 1, kw * cin, cout), channels, axis=2)
        )

    def input_grad(self, x, w, g):
        return jax.vjp(lambda x: self(x, w), x)[1](g)[0]

    def kernel_grad(self, x, w, g):
        """dW as XLA computes it for this batch (one convolution contracting over the batch)."""
        return jax.vjp(lambda w: self(x, w), w)[1](g)[0]

    def tiled_kernel_grad(self, x, w, g):
        """dW as a sum over images and row tiles of single-image kernel gradients (see the module docstring); for a
        1x1 kernel, one matrix product."""
        if w.shape[:2] == (1, 1) and self.padding == ((0, 0), (0, 0)):
            return self.pointwise_kernel_grad(x, w, g)
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

    def pointwise_kernel_grad(self, x, w, g):
        """dW of a 1x1 convolution: x^T g over every image and position (every stride-th one), one matrix product
        accumulated in float32."""
        sh, sw = self.strides
        rows, cols = g.shape[1], g.shape[2]
        x = x[:, : (rows - 1) * sh + 1 : sh, : (cols - 1) * sw + 1 : sw]
        dw = jnp.einsum("bhwi,bhwo->io", x, g, preferred_element_type=jnp.float32)
        return dw.astype(w.dtype).reshape(w.shape)


def _pad_channels(a, channels: int, axis: int):
    """`a` zero-padded at the end of `axis` to `channels` entries."""
    pads = [(0, 0)] * a.ndim
    pads[axis] = (0, channels - a.shape[axis])
    return jnp.pad(a, pads)


def _out_hw(in_hw, window_hw, strides, padding) -> tuple[int, ...]:
    """Output height and width of a windowed op (convolution or pool) with explicit padding."""
    return tuple((n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(in_hw, window_hw, strides, padding))


def _toeplitz_taps(in_hw, kernel_hw, strides, padding):
    """([H*W, Ho*Wo] index of the kernel tap joining each input position to each output position, kh*kw where
    none does), (Ho, Wo)) of a convolution; NumPy, so it is a constant of the program."""
    rows = []
    outs = _out_hw(in_hw, kernel_hw, strides, padding)
    for size, k, stride, (low, _), out in zip(in_hw, kernel_hw, strides, padding, outs):
        tap = np.arange(size)[:, None] - np.arange(out)[None, :] * stride + low  # [in, out]
        rows.append((tap, (tap >= 0) & (tap < k), out))
    (ti, vi, ho), (tj, vj, wo) = rows
    valid = vi[:, None, :, None] & vj[None, :, None, :]
    index = np.where(valid, ti[:, None, :, None] * kernel_hw[1] + tj[None, :, None, :], kernel_hw[0] * kernel_hw[1])
    return index.reshape(in_hw[0] * in_hw[1], ho * wo), (ho, wo)


def _uses_dense(conv: _Conv, x_shape, w_shape, itemsize: int) -> bool:
    """A map smaller than the kernel, a non-empty output and a Toeplitz matrix within DENSE_MAX_BYTES."""
    (_, h, w, cin), (kh, kw, _, cout) = x_shape, w_shape
    if h >= kh and w >= kw:
        return False
    outs = _out_hw((h, w), (kh, kw), conv.strides, conv.padding)
    return min(outs) > 0 and h * w * cin * outs[0] * outs[1] * cout * itemsize <= DENSE_MAX_BYTES


def _dense_conv(conv: _Conv, x, w):
    """The convolution as x [N, H*W*cin] @ T [H*W*cin, Ho*Wo*cout], T gathered from the kernel's taps; its
    gradients (a matrix product for x, a scatter-add of x^T g for the kernel) and its vmap come from JAX."""
    n, h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    index, (ho, wo) = _toeplitz_taps((h, wd), (kh, kw), conv.strides, conv.padding)
    taps = jnp.concatenate([w.reshape(kh * kw, cin, cout), jnp.zeros((1, cin, cout), w.dtype)])
    toeplitz = jnp.swapaxes(taps[index], 1, 2).reshape(h * wd * cin, ho * wo * cout)
    y = jnp.dot(x.reshape(n, h * wd * cin), toeplitz, preferred_element_type=jnp.float32)
    return y.astype(jnp.result_type(x, w)).reshape(n, ho, wo, cout)


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
        return _one_run_at_a_time(conv.forward, lambda n, x, w: _split_runs(conv.forward(x, _concat_runs(w)), n))(x, w)

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
    cpu = _dense_conv if _uses_dense(conv, lhs.shape, rhs.shape, lhs.dtype.itemsize) else _cpu_conv
    return lax.platform_dependent(lhs, rhs, cpu=functools.partial(cpu, conv), default=standard)


@dataclasses.dataclass(frozen=True)
class _Pool:
    """A 2-D NHWC max-pool with explicit padding (padded entries are -inf, as in `lax.reduce_window`)."""

    window: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]

    def standard(self, x):
        pads = ((0, 0), *self.padding, (0, 0))
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, *self.window, 1), (1, *self.strides, 1), pads)

    def _out_hw(self, x_shape):
        return _out_hw(x_shape[1:3], self.window, self.strides, self.padding)

    def stored_maxima(self, x):
        """`maxima`, computed inside a loop XLA cannot remove, for the backward pass to read.

        XLA:CPU fuses cheap elementwise producers into every consumer and removes optimization barriers before
        fusion, so the index, if simply returned, is never stored: the backward's placement fusion recomputes the
        9-way comparison for each window offset it reads (13 % of the miniature study's 25-run step). Fusion does
        not cross a loop boundary; a trip count of 1, or 2 for a NaN first entry (XLA cannot prove it is 1), keeps
        the loop, and the body's result does not depend on it."""
        first = x.reshape(-1)[0]
        trips = 1 + (first != first).astype(jnp.int32)
        init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(self.maxima, x))
        return lax.fori_loop(0, trips, lambda _, carry: self.maxima(x), init)

    def maxima(self, x):
        """(y, index of each window's first maximum in window order, int8): the index is carried as a running
        choice among the window's entries, so it names an entry whatever XLA recomputes; the backward reads only it."""
        (n, _, _, c), (ho, wo), (sh, sw) = x.shape, self._out_hw(x.shape), self.strides
        padded = jnp.pad(x, ((0, 0), *self.padding, (0, 0)), constant_values=-jnp.inf)
        best, index = None, None
        for k in range(self.window[0] * self.window[1]):
            i, j = divmod(k, self.window[1])
            tap = lax.slice(padded, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
            if best is None:
                best, index = tap, jnp.zeros(tap.shape, jnp.int8)
            else:
                # strict: ties keep the first maximum, as XLA's select_and_scatter does; a NaN wins and then stays,
                # so the output is NaN wherever XLA's maximum is
                better = (tap > best) | jnp.isnan(tap)
                best, index = jnp.where(better, tap, best), jnp.where(better, jnp.int8(k), index)
        return best, index

    def backward(self, x_shape, index, g):
        """Each window's gradient placed at its chosen entry: per window offset, a strided placement (an interior-
        padded `lax.pad`), summed; no float comparison."""
        (_, h, w, _), (ho, wo), (sh, sw) = x_shape, self._out_hw(x_shape), self.strides
        (top, bottom), (left, right) = self.padding
        hp, wp = h + top + bottom, w + left + right
        zero = jnp.zeros((), g.dtype)
        total = None
        for k in range(self.window[0] * self.window[1]):
            i, j = divmod(k, self.window[1])
            part = jnp.where(index == k, g, zero)
            config = (
                (0, 0, 0),
                (i, hp - i - (ho - 1) * sh - 1, sh - 1),
                (j, wp - j - (wo - 1) * sw - 1, sw - 1),
                (0, 0, 0),
            )
            part = lax.pad(part, zero, config)
            total = part if total is None else total + part
        return total[:, top : top + h, left : left + w]


def _cpu_max_pool(pool: _Pool, x):
    @jax.custom_vjp
    def f(x):
        return pool.maxima(x)[0]

    def f_fwd(x):
        return pool.stored_maxima(x)

    def f_bwd(index, g):
        return (pool.backward(x.shape, index, g),)

    f.defvjp(f_fwd, f_bwd)
    return f(x)


def max_pool(x, window: tuple[int, int], strides: tuple[int, int], padding):
    """NHWC max-pool (`padding` 'VALID', 'SAME' or explicit pairs); on CPU its gradient reads the argmax that the
    forward pass recorded (see the module docstring)."""
    if x.ndim != 4:
        raise ValueError(f"max_pool: expected an NHWC batch, got shape {x.shape}")
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
    pool = _Pool(tuple(window), tuple(strides), tuple(tuple(p) for p in padding))
    if not ENABLED or pool.window[0] * pool.window[1] > 128:  # int8 indices 0..127
        return pool.standard(x)
    if min(pool._out_hw(x.shape)) <= 0 or x.size == 0:  # an empty output (a map smaller than the window): XLA's
        return pool.standard(x)
    return lax.platform_dependent(x, cpu=functools.partial(_cpu_max_pool, pool), default=pool.standard)
