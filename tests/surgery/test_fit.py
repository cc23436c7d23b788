"""surgery/fit.py through `surgery.initialize`: an RGB checkpoint folded into a one-channel model computes, on a grey
image, what the RGB model computes on that image replicated to three channels (random weights, one test per model
family), exactly where no zero padding enters and with a measured difference where it does; ViT position embeddings
resampled to another image size."""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from surgery_helpers import filled_shapes, flat

from transfusion_jax.data import preprocess
from transfusion_jax.models import get_model, inception, vit
from transfusion_jax.models.layers import ConvBN
from transfusion_jax.surgery import fit, initialize

VIT_TINY = dict(patch_size=8, width=16, depth=2, num_heads=2, mlp_dim=32)
RESNET_TINY = dict(stage_sizes=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem_features=8)
CBR_TINY = dict(widths=(4, 8, 8, 8))


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def randomised(variables, seed):
    """Init variables with every BatchNorm/LayerNorm affine, bias and running statistic redrawn, so that the
    folded constant's carrier (a bias or a BatchNorm mean) is not at a special value."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in flat(variables).items():
        value = np.asarray(value)
        leaf = key.rsplit("/", 1)[-1]
        if leaf in ("bias", "mean", "cls"):
            value = rng.normal(0, 0.2, value.shape)
        elif leaf in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, value.shape)
        out[key] = jnp.asarray(value, jnp.float32)
    return traverse_util.unflatten_dict(out, sep="/")


@functools.cache
def models(name, size, **overrides):
    """(RGB model, its randomised variables, one-channel model, its fresh variables)."""
    overrides = dict(overrides)
    rgb, grey = get_model(name, 3, **overrides), get_model(name, 3, **overrides)
    rgb_vars = jax.jit(lambda k, x: rgb.init(k, x, train=False))(jax.random.key(0), jnp.zeros((1, size, size, 3)))
    rgb_vars = randomised(rgb_vars, seed=1)
    grey_vars = jax.jit(lambda k, x: grey.init(k, x, train=False))(jax.random.key(2), jnp.zeros((1, size, size, 1)))
    return rgb, rgb_vars, grey, grey_vars


def folded(name, size, preset, rgb_vars, grey_vars, **overrides):
    """The one-channel model's variables from `initialize('transfer', ...)` on the RGB checkpoint, with the RGB
    model's head copied in (transfer leaves the head at init), so whole networks can be compared."""
    metadata = {"architecture": name, "preprocessing": {"name": preset}}
    out, provenance = initialize(
        "transfer",
        name,
        grey_vars,
        pretrained="rgb.npz",
        loader=lambda _: (rgb_vars, metadata),
        model_overrides=overrides,
    )
    assert {k for k, v in provenance.items() if v != "checkpoint"} == {k for k in provenance if "/head/" in k}
    out["params"]["head"] = rgb_vars["params"]["head"]
    return out


def grey_pixels(n, size, seed=3):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1)).astype(np.float32)


def inputs(preset, pixels):
    """(the grey image replicated to RGB and normalised with `preset`, the grey image normalised with its grey form)."""
    rgb = preprocess.PRESETS[preset](np.repeat(pixels, 3, axis=-1))
    return rgb, preprocess.get_normalization(preset, channels=1)(pixels)


def run(model, variables, x, capture: str | None = None):
    """(logits, features, the output of the ConvBN unit named `capture` or None), eval mode."""
    if capture is None:
        logits, features = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
        return logits, features, None

    def fn(v, x):
        return model.apply(
            v, x, train=False, capture_intermediates=lambda m, method: method == "__call__" and m.name == capture
        )

    (logits, features), state = jax.jit(fn)(variables, x)
    return logits, features, state["intermediates"][capture]["__call__"][0]


def interior(n: int, k: int, stride: int, pad: int) -> slice:
    """Output positions whose window lies inside an n-pixel input (no padded tap)."""
    first = -(-pad // stride)
    last = (n - 1 + pad - (k - 1)) // stride
    return slice(first, last + 1)


# ------------------------------------------------------------------ exact everywhere: no padding in the first layer


@pytest.mark.parametrize("preset", ["torchvision", "keras_resnet50"])
def test_vit_folded_patch_embedding_gives_the_same_logits(preset):
    rgb, rgb_vars, grey, grey_vars = models("vit_ti16", 32, **VIT_TINY)
    variables = folded("vit_ti16", 32, preset, rgb_vars, grey_vars, **VIT_TINY)
    assert variables["params"]["embedding"]["conv"]["kernel"].shape == (8, 8, 1, 16)
    x_rgb, x_grey = inputs(preset, grey_pixels(4, 32))
    want_logits, want_features, _ = run(rgb, rgb_vars, x_rgb)
    logits, features, _ = run(grey, variables, x_grey)
    assert rel(logits, want_logits) < 1e-5
    for name in want_features:
        assert rel(features[name], want_features[name]) < 1e-5, name


def random_fill(key, shape):
    """Distinct N(0, 0.2) values per leaf (running variances 0.5 + |N(0, 1)|), without compiling an init."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return np.abs(rng.normal(size=shape)) + 0.5 if key.endswith("/var") else rng.normal(0, 0.2, size=shape)


def test_inception_unpadded_first_conv_is_exact_everywhere():
    """Inception-v3's Conv2d_1a_3x3 has no padding; its folded constant is carried by the BatchNorm's mean. The full
    model's variables are traced and filled (no init to compile); its stem, which holds every padded layer the
    image meets first, runs on both inputs: equal outputs there mean equal logits."""
    rgb_vars = filled_shapes("inception_v3", 75, random_fill, num_classes=3)
    grey_vars = jax.tree.map(np.asarray, filled_shapes("inception_v3", 75, random_fill, num_classes=3))
    grey_vars["params"]["stem"]["Conv2d_1a_3x3"]["conv"]["kernel"] = np.zeros((3, 3, 1, 32), np.float32)
    variables = folded("inception_v3", 75, "inception", rgb_vars, grey_vars)
    assert variables["params"]["stem"]["Conv2d_1a_3x3"]["conv"]["kernel"].shape == (3, 3, 1, 32)
    stem = inception.Stem(conv=functools.partial(ConvBN, bn_epsilon=1e-3), count_include_pad=True)

    def run_stem(v, x):
        return jax.jit(lambda v, x: stem.apply({c: v[c]["stem"] for c in v}, x, False))(v, x)

    x_rgb, x_grey = inputs("inception", grey_pixels(2, 75))
    assert rel(run_stem(variables, x_grey), run_stem(rgb_vars, x_rgb)) < 1e-5


# ------------------------------------------------------- padded first layers: exact inside, measured at the border


@pytest.mark.parametrize(
    "name,overrides,unit,kernel,stride,pad,preset",
    [
        ("resnet50", RESNET_TINY, "conv1", 7, 2, 3, "torchvision"),  # no conv bias: the BN mean carries the constant
        ("resnet50", {**RESNET_TINY, "variant": "keras"}, "conv1", 7, 2, 3, "keras_resnet50"),  # conv bias carries it
        ("cbr_small", CBR_TINY, "layer1", 7, 1, 3, "torchvision"),
    ],
)
def test_padded_first_layer_is_exact_where_no_padding_enters(name, overrides, unit, kernel, stride, pad, preset):
    size = 40
    rgb, rgb_vars, grey, grey_vars = models(name, size, **overrides)
    variables = folded(name, size, preset, rgb_vars, grey_vars, **overrides)
    x_rgb, x_grey = inputs(preset, grey_pixels(2, size))
    want_logits, _, want = run(rgb, rgb_vars, x_rgb, capture=unit)
    logits, _, got = run(grey, variables, x_grey, capture=unit)
    inside = interior(size, kernel, stride, pad)
    assert rel(got[:, inside, inside], want[:, inside, inside]) < 1e-5
    border = np.ones(want.shape[1:3], bool)
    border[inside, inside] = False
    difference = np.abs(np.asarray(got) - np.asarray(want))[:, border]
    assert difference.max() / np.abs(np.asarray(want)).max() > 1e-3  # the border effect is real: it is documented
    assert rel(logits, want_logits) > 1e-6  # and it reaches the logits


def test_filters_that_weigh_the_channels_alike_are_exact_at_the_border_too():
    """grey()'s mean m makes the padded-tap difference sum_c W_c (m - mean_c) / std_c vanish when W_R = W_G = W_B."""
    size = 40
    rgb, rgb_vars, grey, grey_vars = models("cbr_small", size, **CBR_TINY)
    rgb_vars = jax.tree.map(lambda x: x, rgb_vars)
    k = rgb_vars["params"]["layer1"]["conv"]["kernel"]
    rgb_vars["params"]["layer1"]["conv"]["kernel"] = jnp.repeat(k[:, :, :1], 3, axis=2)
    variables = folded("cbr_small", size, "torchvision", rgb_vars, grey_vars, **CBR_TINY)
    x_rgb, x_grey = inputs("torchvision", grey_pixels(2, size))
    want_logits, _, want = run(rgb, rgb_vars, x_rgb, capture="layer1")
    logits, _, got = run(grey, variables, x_grey, capture="layer1")
    assert rel(got, want) < 1e-5 and rel(logits, want_logits) < 1e-5


def test_fold_carrier_and_errors():
    w = np.random.default_rng(0).normal(size=(3, 3, 3, 4))
    tv = preprocess.PRESETS["torchvision"]
    kernel, constant = fit.fold_rgb_kernel(w, tv)
    g = preprocess.grey(tv)
    np.testing.assert_allclose(kernel[:, :, 0], g.std[0] * sum(w[:, :, c] / tv.std[c] for c in range(3)))
    np.testing.assert_allclose(
        constant, sum(w[:, :, c].sum((0, 1)) * (g.mean[0] - tv.mean[c]) / tv.std[c] for c in range(3))
    )
    with pytest.raises(ValueError, match="RGB conv kernel"):
        fit.fold_rgb_kernel(np.zeros((3, 3, 1, 4)), tv)
    source = {"params": {"layer1": {"conv": {"kernel": w}}}}
    target = {"params": {"layer1": {"conv": {"kernel": np.zeros((3, 3, 1, 4))}}}}
    with pytest.raises(ValueError, match="no bias and feeds no BatchNorm"):
        fit.fit_checkpoint(source, target, "params/layer1/conv/kernel", {"name": "torchvision"})
    with pytest.raises(ValueError, match="records no preprocessing"):
        fit.fit_checkpoint(source, target, "params/layer1/conv/kernel", None)
    same, notes = fit.fit_checkpoint(source, source, "params/layer1/conv/kernel", None)  # nothing to fit
    assert notes == [] and np.array_equal(same["params"]["layer1"]["conv"]["kernel"], w)


# ------------------------------------------------------------------ ViT position embeddings for another image size


def test_vit_checkpoint_of_another_size_has_its_position_embeddings_resampled():
    _, rgb_vars, _, _ = models("vit_ti16", 32, **VIT_TINY)  # a 4 x 4 grid
    model = get_model("vit_ti16", 3, **VIT_TINY)
    fresh = jax.jit(lambda k: model.init(k, jnp.zeros((1, 48, 48, 3)), train=False))(jax.random.key(5))  # 6 x 6
    metadata = {"architecture": "vit_ti16", "preprocessing": {"name": "torchvision"}}
    out, _ = initialize(
        "transfer",
        "vit_ti16",
        fresh,
        pretrained="ckpt",
        loader=lambda _: (rgb_vars, metadata),
        model_overrides=VIT_TINY,
    )
    got = out["params"]["embedding"]["pos_embedding"]
    assert got.shape == (1, 37, 16)
    np.testing.assert_allclose(got, vit.resample_posemb(rgb_vars["params"]["embedding"]["pos_embedding"], 37))
    np.testing.assert_array_equal(out["params"]["embedding"]["cls"], rgb_vars["params"]["embedding"]["cls"])
    mean_var, _ = initialize(
        "mean_var", "vit_ti16", fresh, rng=jax.random.key(0), pretrained="ckpt", loader=lambda _: (rgb_vars, metadata),
        model_overrides=VIT_TINY,
    )  # fmt: skip
    assert mean_var["params"]["embedding"]["pos_embedding"].shape == (1, 37, 16)
