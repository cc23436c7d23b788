"""models/cpu_kernels.py: the CPU gradients of convolutions and max-pools equal XLA's, alone, under vmap (many runs)
and inside a model's train step; other platforms compile the standard operations."""

import functools
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export, lax

from transfusion_jax import models
from transfusion_jax.models import cpu_kernels, layers

NHWC = ("NHWC", "HWIO", "NHWC")
# Gradient entries are sums of thousands of O(1) products, added in another order: float32 rounding reaches ~3e-5.
TOL = dict(rtol=2e-5, atol=1e-4)

# (input shape, kernel shape, strides, padding): a map tall enough for the tiled kernel gradient, with a partial
# last tile (70 rows = 32 + 32 + 6), over 3 channels (the forward with width taps folded into channels); a map of
# WIDE_MAP_ROWS rows over 3 channels (the forward over channels padded to 4); a non-square kernel over 5 channels on
# a wide map (padded to 8) and a small one (folded: 15 channels padded to 16); a strided 7x7 conv as ResNet-50's
# first (one image at a time); a small map (XLA's own kernel gradient); 1x1 convs (the kernel gradient as one matrix
# product), one strided as ResNet's shortcuts, with odd and even map sizes; maps smaller than the kernel (the
# block-Toeplitz matrix product): a CBR's 7x7 conv on a 3x3 map, a strided 3x3 conv on a 2x2 map with uneven
# padding, a map short in one dimension only.
CONVS = {
    "tiled": ((2, 70, 20, 3), (7, 7, 3, 4), (1, 1), "SAME"),
    "few_channels_wide": ((1, 96, 10, 3), (7, 7, 3, 4), (1, 1), ((3, 3), (2, 4))),
    "five_channels_wide": ((1, 100, 6, 5), (5, 3, 5, 2), (1, 1), "SAME"),
    "five_channels": ((2, 12, 9, 5), (5, 3, 5, 2), (1, 1), "SAME"),
    "strided": ((2, 64, 18, 3), (7, 7, 3, 4), (2, 2), ((3, 3), (3, 3))),
    "small": ((3, 12, 12, 4), (3, 3, 4, 5), (1, 1), "SAME"),
    "pointwise": ((2, 60, 9, 6), (1, 1, 6, 3), (1, 1), "VALID"),
    "pointwise_strided": ((2, 9, 8, 6), (1, 1, 6, 3), (2, 2), "SAME"),
    "under_kernel": ((3, 3, 3, 5), (7, 7, 5, 6), (1, 1), "SAME"),
    "under_kernel_strided": ((2, 2, 2, 4), (3, 3, 4, 5), (2, 2), ((0, 1), (1, 1))),
    "under_kernel_rows": ((2, 5, 9, 3), (7, 7, 3, 4), (1, 1), ((3, 3), (2, 1))),
}
# Forward values over few input channels and on maps smaller than the kernel: the same products (and zeros) added in
# another order.
REORDERED = {
    "tiled",
    "few_channels_wide",
    "five_channels_wide",
    "five_channels",
    "small",
    "under_kernel",
    "under_kernel_strided",
    "under_kernel_rows",
}


def _conv_pair(strides, padding):
    def standard(x, w):
        return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)

    def ours(x, w):
        return cpu_kernels.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)

    return standard, ours


def _grads(conv):
    # A non-linear loss, so the output gradient differs everywhere. The kernels are scaled by 1 / sqrt(fan-in), as
    # an initialiser would, so outputs are O(1) and sin' does not amplify a forward pass's rounding.
    return jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), argnums=(0, 1))


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize("case", list(CONVS))
def test_conv_values_and_gradients_equal_xla(case, jit):
    x_shape, w_shape, strides, padding = CONVS[case]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=w_shape) / np.sqrt(np.prod(w_shape[:3])), jnp.float32)
    standard, ours = _conv_pair(strides, padding)
    variant = jax.jit if jit else (lambda fn: fn)
    if case in REORDERED:
        chex.assert_trees_all_close(variant(ours)(x, w), jax.jit(standard)(x, w), **TOL)
    else:
        chex.assert_trees_all_equal(variant(ours)(x, w), jax.jit(standard)(x, w))
    chex.assert_trees_all_close(variant(_grads(ours))(x, w), _grads(standard)(x, w), **TOL)


def test_bfloat16_kernel_gradient_is_as_accurate_as_xlas():
    """bfloat16 kernel gradient over 8 images x 3 row tiles: the 24 partial sums are added in float32, so the error
    against the float32 gradient is XLA's own (one convolution, rounded once); added in bfloat16 it is ~4x larger."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.uniform(0, 1, size=(8, 96, 24, 3)), jnp.bfloat16)  # positive: the partial sums accumulate
    w = jnp.asarray(rng.normal(size=(7, 7, 3, 4)), jnp.bfloat16)
    standard, ours = _conv_pair((1, 1), "SAME")

    def kernel_grad(conv, x, w):
        return jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w).astype(jnp.float32)), argnums=1))(x, w)

    exact = np.asarray(kernel_grad(standard, x.astype(jnp.float32), w.astype(jnp.float32)))
    xla_error, ours_error = (
        np.abs(np.asarray(kernel_grad(conv, x, w), np.float32) - exact).max() for conv in (standard, ours)
    )
    assert ours_error <= 1.5 * xla_error


@pytest.mark.parametrize("shared_input", [False, True], ids=["own_inputs", "shared_input"])
@pytest.mark.parametrize(
    "case", ["tiled", "few_channels_wide", "strided", "small", "pointwise_strided", "under_kernel"]
)
def test_conv_under_vmap_equals_vmapped_xla(case, shared_input):
    """Three runs' kernels (as train/multirun.py stacks them), with their own inputs or one input for all."""
    x_shape, w_shape, strides, padding = CONVS[case]
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=x_shape if shared_input else (3, *x_shape)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, *w_shape)) / np.sqrt(np.prod(w_shape[:3])), jnp.float32)
    axes = (None if shared_input else 0, 0)
    standard, ours = _conv_pair(strides, padding)
    # vmapped, XLA turns a 1x1 conv into a grouped one that adds in another order than the per-run convs
    reordered = case in REORDERED or case.startswith("pointwise")
    check_values = chex.assert_trees_all_close if reordered else chex.assert_trees_all_equal
    check_values(
        jax.jit(jax.vmap(ours, in_axes=axes))(x, w),
        jax.jit(jax.vmap(standard, in_axes=axes))(x, w),
        **(TOL if reordered else {}),
    )
    chex.assert_trees_all_close(
        jax.jit(jax.vmap(_grads(ours), in_axes=axes))(x, w),
        jax.jit(jax.vmap(_grads(standard), in_axes=axes))(x, w),
        **TOL,
    )


def _conv_grad(x, w):
    return jnp.sum(jnp.square(cpu_kernels.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)))


def _exported(platform: str, enabled: bool, monkeypatch) -> str:
    monkeypatch.setattr(cpu_kernels, "ENABLED", enabled)
    fn = jax.jit(jax.grad(_conv_grad, argnums=(0, 1)))
    return export.export(fn, platforms=[platform])(jnp.zeros((2, 64, 16, 3)), jnp.zeros((3, 3, 3, 4))).mlir_module()


def test_only_cpu_programs_use_the_cpu_kernels(monkeypatch):
    """The CPU program: 2 images x 2 row tiles of kernel gradient + forward + input gradient = 6 convolutions. GPU
    and TPU programs (lowered here without the hardware) and a CPU program with the kernels switched off: 3."""
    cpu = _exported("cpu", True, monkeypatch)
    assert cpu.count("stablehlo.convolution") == 6
    for platform, enabled in (("cuda", True), ("tpu", True), ("cpu", False)):
        text = _exported(platform, enabled, monkeypatch)
        assert text.count("stablehlo.convolution") == 3, (platform, enabled)


@pytest.mark.parametrize(
    "x_shape, w_shape, strides, cpu_convolutions",
    [((2, 9, 8, 4), (1, 1, 4, 5), (2, 2), 2), ((2, 3, 3, 4), (7, 7, 4, 5), (1, 1), 0)],
    ids=["strided 1x1: kernel gradient a matrix product", "7x7 on a 3x3 map: everything a matrix product"],
)
def test_matrix_product_kernels_replace_convolutions_on_cpu_only(
    monkeypatch, x_shape, w_shape, strides, cpu_convolutions
):
    """The CPU program keeps XLA's forward and input-gradient convolutions of a 1x1 conv and computes its kernel
    gradient as a matrix product; on a map smaller than the kernel, forward and both gradients are matrix products.
    Other platforms keep XLA's three convolutions."""
    monkeypatch.setattr(cpu_kernels, "ENABLED", True)

    def loss(x, w):
        return jnp.sum(jnp.square(cpu_kernels.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=NHWC)))

    fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
    x, w = jnp.zeros(x_shape), jnp.zeros(w_shape)
    for platform, convolutions in (("cpu", cpu_convolutions), ("cuda", 3)):
        text = export.export(fn, platforms=[platform])(x, w).mlir_module()
        assert text.count("stablehlo.convolution") == convolutions, platform
    assert "stablehlo.dot_general" in export.export(fn, platforms=["cpu"])(x, w).mlir_module()


@pytest.mark.parametrize(
    "x_shape, padding, cpu_forward_kernel",
    [((2, 70, 20, 3), "SAME", "7x1x24x4"), ((1, 96, 10, 3), ((3, 3), (2, 4)), "7x7x4x4")],
    ids=["width taps folded into 21 + 3 channels", "wide map: channels padded to 4"],
)
def test_few_channel_forward_takes_its_cpu_form_on_cpu_only(monkeypatch, x_shape, padding, cpu_forward_kernel):
    """A 7x7 conv over 3 channels: on CPU the forward convolution runs over the folded or padded kernel; the
    gradients and other platforms keep the plain 7x7x3 kernel."""
    monkeypatch.setattr(cpu_kernels, "ENABLED", True)

    def loss(x, w):
        return jnp.sum(jnp.square(cpu_kernels.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC)))

    fn = jax.jit(jax.grad(loss, argnums=1))
    x, w = jnp.zeros(x_shape), jnp.zeros((7, 7, 3, 4))
    cpu, cuda = (export.export(fn, platforms=[p])(x, w).mlir_module() for p in ("cpu", "cuda"))
    assert f"tensor<{cpu_forward_kernel}xf32>" in cpu
    assert f"tensor<{cpu_forward_kernel}xf32>" not in cuda


def _assert_train_mode_gradients_match(monkeypatch, model, x, logits_of=lambda out: out[0]):
    """`model`'s loss gradients in train mode (BatchNorm batch statistics), jitted as a whole, with and without the
    CPU kernels: equal to float32 rounding."""
    variables = model.init(jax.random.key(0), x, train=False)
    labels = jnp.arange(x.shape[0]) % 2

    def loss(params):
        out, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.mean(jax.nn.log_softmax(logits_of(out))[jnp.arange(x.shape[0]), labels])

    grads = {}
    for enabled in (True, False):
        monkeypatch.setattr(cpu_kernels, "ENABLED", enabled)
        grads[enabled] = jax.jit(jax.value_and_grad(loss))(variables["params"])
    chex.assert_trees_all_close(grads[True], grads[False], **TOL)


@pytest.mark.parametrize(
    "widths, size",
    [((4, 8), 64), ((4, 4, 8, 8), 32)],
    ids=["2 layers at 64 px (row tiles)", "the local configs' 4 layers at 32 px (7x7 -> 3x3 pool)"],
)
def test_model_gradients_equal_with_and_without_cpu_kernels(monkeypatch, widths, size):
    """A CBR's loss gradients in train mode (BatchNorm batch statistics, max-pools, 7x7 convs), jitted as a whole:
    the second case caught a max-pool gradient that XLA:CPU miscompiled in context (29 % off) while every test of
    the op alone passed."""
    model = models.get_model("cbr_small", 2, widths=widths)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, size, size, 3)), jnp.float32)
    _assert_train_mode_gradients_match(monkeypatch, model, x)


def test_resnet_gradients_equal_with_and_without_cpu_kernels(monkeypatch):
    """A one-block-per-stage ResNet-50 at 64 px, jitted as a whole in train mode: the strided 7x7 stem, 1x1 convs
    (kernel gradients as matrix products; strided shortcuts), 3x3 convs on maps down to 2x2 (block-Toeplitz). Not
    32 px and 4 images: there BatchNorm over the last stage's 1x1 maps makes the gradients so ill-conditioned that a
    one-ulp change of the input moves them by 1e-4 with XLA alone, the tolerance's size."""
    model = models.get_model("resnet50", 2, stage_sizes=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem_features=4)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(8, 64, 64, 3)), jnp.float32)
    _assert_train_mode_gradients_match(monkeypatch, model, x)


@pytest.mark.parametrize("seed", [1, 2])
def test_model_gradients_equal_in_a_data_parallel_train_step(monkeypatch, seed):
    """The train step's gradients (`steps.loss_and_grads`) of a CBR on 8 px images, whose last max-pool window
    covers a whole 3 x 3 map, with the batch split over 8 devices. XLA may compute a BatchNorm-ReLU output that
    feeds a max-pool once for the forward pass and again, rounded differently, for the backward one; a gradient
    that found each window's maximum by comparing the two lost whole windows (gradients off by up to 0.4)."""
    from transfusion_jax.train import partition, steps  # noqa: PLC0415
    from transfusion_jax.train.state import TrainState  # noqa: PLC0415

    mesh = partition.make_data_mesh()
    model = models.get_model("cbr_small", 2, widths=(4, 8))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=16)
    batch = {
        "image": (rng.normal(size=(16, 8, 8, 3)) + 1.5 * labels[:, None, None, None] * [1, 0, 0]).astype(np.float32),
        "label": labels.astype(np.int32),
        "label_mask": np.ones((16, 1), np.float32),
        "valid": np.ones(16, bool),
    }
    variables = model.init(jax.random.key(seed), batch["image"][:1], train=False)
    state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"], ())
    rep, data = partition.replicated(mesh), partition.data_sharded(mesh)
    grads = {}
    for enabled in (True, False):
        monkeypatch.setattr(cpu_kernels, "ENABLED", enabled)
        step = jax.jit(
            functools.partial(steps.loss_and_grads, model, "softmax", 0.0, ()), in_shardings=(rep, data, rep)
        )
        grads[enabled] = jax.device_get(step(state, batch, steps.step_rng(0, 0))[2])
    chex.assert_trees_all_close(grads[True], grads[False], **TOL)


# (input shape, pool padding) of 3x3 stride-2 max-pools as the models use them: a CBR's 7x7 -> 3x3 'VALID' pool,
# odd and even maps with 'SAME' (uneven padding), ResNet-50's stem pool (explicit 1-pixel padding).
POOLS = {
    "cbr_valid": ((3, 7, 7, 4), "VALID"),
    "same_odd": ((2, 9, 11, 3), "SAME"),
    "same_even": ((2, 8, 10, 3), "SAME"),
    "resnet_stem": ((2, 12, 12, 3), ((1, 1), (1, 1))),
}


def _pool_pair(padding):
    def standard(x):
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=padding)

    def ours(x):
        return cpu_kernels.max_pool(x, (3, 3), (2, 2), padding)

    return standard, ours


def _pool_grad(pool):
    return jax.grad(lambda x: jnp.sum(jnp.sin(pool(x)) * jnp.arange(1.0, 1.0 + pool(x).shape[-1])))


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize("case", list(POOLS))
def test_max_pool_values_and_gradients_equal_xla(case, jit):
    shape, padding = POOLS[case]
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    standard, ours = _pool_pair(padding)
    variant = jax.jit if jit else (lambda fn: fn)
    chex.assert_trees_all_equal(variant(ours)(x), jax.jit(standard)(x))
    chex.assert_trees_all_equal(variant(_pool_grad(ours))(x), jax.jit(_pool_grad(standard))(x))


def _first_max_gradient(x, g, padding):
    """NumPy reference: each window's output gradient goes to its first maximum in row-major window order."""
    (top, bottom), (left, right) = lax.padtype_to_pads(x.shape[1:3], (3, 3), (2, 2), padding)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    dx = np.zeros_like(padded)
    for b, r, c, ch in np.ndindex(*g.shape):
        window = padded[b, 2 * r : 2 * r + 3, 2 * c : 2 * c + 3, ch]
        i, j = np.unravel_index(np.argmax(window), (3, 3))  # np.argmax: the first maximum
        dx[b, 2 * r + i, 2 * c + j, ch] += g[b, r, c, ch]
    return dx[:, top : top + x.shape[1], left : left + x.shape[2]]


@pytest.mark.parametrize("case", ["cbr_valid", "same_even"])
def test_max_pool_ties_go_to_the_first_maximum_as_in_xla(case):
    """Values on a coarse grid (many ties) and a constant map (every window tied): the gradient goes to each
    window's first maximum, as in the NumPy reference and XLA's select_and_scatter."""
    shape, padding = POOLS[case]
    rng = np.random.default_rng(3)
    standard, ours = _pool_pair(padding)
    for x in (np.round(rng.normal(size=shape)), np.ones(shape)):
        x = jnp.asarray(x, jnp.float32)
        y, pullback = jax.vjp(jax.jit(ours), x)
        g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
        # An entry that is the first maximum of two windows sums their gradients, in another order: 1-ulp rounding.
        reference = _first_max_gradient(np.asarray(x), np.asarray(g), padding)
        np.testing.assert_allclose(pullback(g)[0], reference, rtol=1e-6, atol=0)
        np.testing.assert_allclose(pullback(g)[0], jax.vjp(standard, x)[1](g)[0], rtol=1e-6, atol=0)


def test_max_pool_of_a_map_smaller_than_the_window_is_empty_as_in_xla():
    """A deep CBR on small images shrinks its map below the 3x3 window: the pool's output is empty, not an error."""
    x = jnp.ones((2, 1, 1, 4))
    standard, ours = _pool_pair("VALID")
    assert jax.jit(ours)(x).shape == standard(x).shape == (2, 0, 0, 4)
    assert jax.grad(lambda x: jnp.sum(ours(x)))(x).shape == x.shape


def test_max_pool_propagates_nan_as_xla_does():
    """A NaN in a window makes that window's maximum NaN, as in XLA's reduce_window: a diverged activation must not
    be hidden by the pool."""
    x = np.random.default_rng(5).normal(size=(1, 7, 7, 2)).astype(np.float32)
    x[0, 3, 4, 1] = np.nan
    x[0, 0, 0, 0] = np.nan  # the first entry of the first window
    standard, ours = _pool_pair("VALID")
    chex.assert_trees_all_equal(np.isnan(jax.jit(ours)(x)), np.isnan(standard(x)))
    assert np.isnan(standard(x)).sum() == 3  # (0, 0) in one window, (3, 4) in two


@pytest.mark.parametrize("case", ["cbr_valid", "resnet_stem"])
def test_max_pool_under_vmap_equals_vmapped_xla(case):
    """Three runs' feature maps (as train/multirun.py stacks them)."""
    shape, padding = POOLS[case]
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, *shape)), jnp.float32)
    standard, ours = _pool_pair(padding)
    chex.assert_trees_all_equal(jax.jit(jax.vmap(ours))(x), jax.vmap(standard)(x))
    chex.assert_trees_all_equal(jax.jit(jax.vmap(_pool_grad(ours)))(x), jax.vmap(_pool_grad(standard))(x))


def test_only_cpu_programs_use_the_max_pool_kernel(monkeypatch):
    """XLA's max-pool gradient is a select_and_scatter: gone from the CPU program, kept on GPU and with the kernels
    switched off."""

    def exported(platform, enabled):
        monkeypatch.setattr(cpu_kernels, "ENABLED", enabled)
        fn = jax.jit(jax.grad(lambda x: jnp.sum(jnp.square(cpu_kernels.max_pool(x, (3, 3), (2, 2), "SAME")))))
        return export.export(fn, platforms=[platform])(jnp.zeros((2, 16, 16, 3))).mlir_module()

    assert "select_and_scatter" not in exported("cpu", True)
    for platform, enabled in (("cuda", True), ("cpu", False)):
        assert "select_and_scatter" in exported(platform, enabled), (platform, enabled)


class _Stem(nn.Module):
    """ResNet-50's stem (7x7/2 conv, BatchNorm, ReLU, 3x3/2 max-pool) and a linear head."""

    pool_padding: object

    @nn.compact
    def __call__(self, x, train: bool):
        x = layers.ConvBN(4, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)))(x, train)
        x = layers.max_pool(x, 3, 2, padding=self.pool_padding)
        return layers.dense_head(2)(layers.global_avg_pool(x))


@pytest.mark.parametrize("pool_padding", ["SAME", ((1, 1), (1, 1))], ids=["SAME", "resnet_explicit"])
def test_resnet_stem_gradients_equal_with_and_without_cpu_kernels(monkeypatch, pool_padding):
    """The pool's input is a BatchNorm-ReLU output that XLA may recompute for the backward pass: jitted as a whole,
    the stem's gradients must still equal XLA's."""
    model = _Stem(pool_padding)
    x = jnp.asarray(np.random.default_rng(5).normal(size=(8, 32, 32, 3)), jnp.float32)
    _assert_train_mode_gradients_match(monkeypatch, model, x, logits_of=lambda out: out)


def test_max_pool_backward_reads_only_the_recorded_argmax():
    """What makes the kernel robust: the backward pass keeps no float array of the forward one (only the int8 index
    of each window's maximum), so an input that XLA recomputes with other rounding for the backward pass cannot
    change which entry gets a window's gradient. A backward that compares the input with the output again (the
    removed kernel) keeps both as residuals."""
    pool = cpu_kernels._Pool((3, 3), (2, 2), ((0, 0), (0, 0)))
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 7, 7, 3)), jnp.float32)
    _, pullback = jax.vjp(functools.partial(cpu_kernels._cpu_max_pool, pool), x)
    residuals = jax.tree_util.tree_leaves(pullback)
    assert residuals and all(r.dtype == jnp.int8 and r.shape == (2, 3, 3, 3) for r in residuals), residuals


def _entry_instructions(hlo: str) -> dict:
    """{name: (shape, operand names)} of the ENTRY computation of XLA's optimized HLO text."""
    entry = hlo[hlo.index("\nENTRY ") :]
    entry = entry[: entry.index("\n}")]
    found = {}
    for line in entry.splitlines()[1:]:
        name, _, rest = line.strip().removeprefix("ROOT ").partition(" = ")
        shape, _, call = rest.partition(" ")
        found[name.lstrip("%")] = (shape.split("{")[0], re.findall(r"%([\w.-]+)", call.split("), ")[0]))
    return found


def test_max_pool_backward_reads_a_stored_argmax_not_the_input():
    """The compiled CPU program stores the forward pass's int8 argmax and places the gradient from it; XLA:CPU would
    otherwise fuse the 9-way comparison into the placement and redo it from the pool's input for every window
    offset (the placement then reads the input, not the index: 13 % of the miniature study's step)."""
    pool = cpu_kernels._Pool((3, 3), (2, 2), ((0, 0), (0, 0)))

    def forward_backward(x, g):
        y, pullback = jax.vjp(functools.partial(cpu_kernels._cpu_max_pool, pool), x)
        return y, pullback(g)[0]

    x, g = jnp.zeros((2, 15, 15, 8)), jnp.zeros((2, 7, 7, 8))
    entry = _entry_instructions(jax.jit(forward_backward).lower(x, g).compile().as_text())
    gradient = [shape_operands for shape_operands in entry.values() if shape_operands[0] == "f32[2,15,15,8]"]
    gradient = [operands for shape, operands in gradient if operands]  # the placement (the parameter has none)
    assert len(gradient) == 1, gradient
    operand_shapes = {entry[name][0] for name in gradient[0] if name in entry}
    assert "s8[2,7,7,8]" in operand_shapes and "f32[2,15,15,8]" not in operand_shapes, operand_shapes


@pytest.mark.parametrize("nan_first", [False, True], ids=["finite", "nan_first"])
def test_stored_maxima_equal_maxima(nan_first):
    """The loop that stores the argmax runs once, or twice when the input's first entry is NaN (the trip count XLA
    cannot fold): either way, alone and under vmap with runs of both kinds, it returns what `maxima` returns."""
    pool = cpu_kernels._Pool((3, 3), (2, 2), ((0, 0), (0, 0)))
    x = np.random.default_rng(7).normal(size=(2, 2, 9, 9, 3)).astype(np.float32)
    if nan_first:
        x[0, 0, 0, 0, 0] = np.nan
    chex.assert_trees_all_equal(jax.jit(pool.stored_maxima)(x[0]), jax.jit(pool.maxima)(x[0]))
    chex.assert_trees_all_equal(jax.jit(jax.vmap(pool.stored_maxima))(x), jax.vmap(pool.maxima)(x))


def test_the_models_table_counts_the_standard_operations(monkeypatch):
    """`python -m transfusion_jax.models` counts a model's arithmetic, not the CPU kernels' zero taps and channels:
    CBR-Small at 224 px against its four 7x7 SAME convolutions counted by hand (a multiply and an add per kernel tap
    inside the image: 7 n - 12 taps along an axis of n), BatchNorm, pools and head adding under 1 %. Counted on the
    CPU kernels' programs it is 2.4 % more (the first layer's channels padded to 4)."""
    from transfusion_jax.models import __main__ as table

    monkeypatch.setattr(cpu_kernels, "ENABLED", True)
    convs = sum(
        2 * (7 * n - 12) ** 2 * cin * cout
        for n, cin, cout in ((224, 3, 32), (111, 32, 64), (55, 64, 128), (27, 128, 256))
    )
    gflops = table.describe("cbr_small", 2, 224)[3]
    assert convs <= gflops * 1e9 <= 1.01 * convs
    assert cpu_kernels.ENABLED  # restored
