"""Model checks: parameter counts against torchvision / the paper's formula, feature shapes against closed-form
size arithmetic, BatchNorm state handling, dtypes and errors. Full-size models are only traced (jax.eval_shape);
real forward passes use small inputs."""

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from transfusion_jax.models import (
    AUX_OUTPUT,
    HEAD_NAMES,
    MODEL_NAMES,
    block_names,
    feature_names,
    fits_input,
    get_model,
    layers,
    min_input_size,
)


def init_shapes(model, size, batch=1):
    x = jnp.zeros((batch, *size, 3)) if isinstance(size, tuple) else jnp.zeros((batch, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    _, features = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    return variables, {k: f.shape[1:] for k, f in features.items()}


def num_params(variables):
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


# torchvision's counts (resnet50 / inception_v3 built by torchvision 0.29 and counted).
@pytest.mark.parametrize(
    "name,num_classes,kwargs,expected",
    [
        ("resnet50", 1000, {}, 25_557_032),
        ("resnet50", 2, {}, 23_512_130),
        ("inception_v3", 1000, {"aux_logits": True}, 27_161_264),
        ("inception_v3", 1000, {}, 23_834_568),
        ("inception_v3", 2, {}, 21_789_666),
    ],
)
def test_param_counts_match_torchvision(name, num_classes, kwargs, expected):
    variables, _ = init_shapes(get_model(name, num_classes, **kwargs), 299 if "inception" in name else 224)
    assert num_params(variables) == expected


def cbr_formula(widths, k, num_classes, cin=3):
    """docs/paper.md §1.2: conv kernels (no bias) + BN gamma/beta + dense head."""
    chans = [cin, *widths]
    return (
        sum(k * k * a * b for a, b in zip(chans, chans[1:])) + 2 * sum(widths) + widths[-1] * num_classes + num_classes
    )


# The "+ FC (2 classes)" column of docs/paper.md §1.2's derived table, and its widths.
@pytest.mark.parametrize(
    "name,widths,k,paper_count",
    [
        ("cbr_larget", (32, 64, 128, 256, 512), 7, 8_537_634),
        ("cbr_largew", (64, 128, 256, 512), 7, 8_441_922),
        ("cbr_small", (32, 64, 128, 256), 7, 2_113_570),
        ("cbr_tiny", (64, 128, 256, 512), 5, 4_308_546),
        ("cbr_tiny_alt", (32, 64, 128, 256), 5, 1_079_074),
    ],
)
def test_cbr_param_counts_match_paper_formula(name, widths, k, paper_count):
    variables, feats = init_shapes(get_model(name, 2), 64)
    assert num_params(variables) == paper_count == cbr_formula(widths, k, 2)
    assert [feats[f"layer{i + 1}"][-1] for i in range(len(widths))] == list(widths)


def conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def resnet_expected(h, w, widths=(64, 128, 256, 512)):
    """torchvision arithmetic: 7x7/2 pad 3, maxpool 3/2 pad 1, then stages at stride 1, 2, 2, 2 (3x3 pad 1)."""
    h, w = (conv_out(conv_out(n, 7, 2, 3), 3, 2, 1) for n in (h, w))
    out = {"conv1": (h, w, 64)}
    for i, width in enumerate(widths):
        if i:
            h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        out[f"block{i + 1}"] = (h, w, 4 * width)
    out["pre_logits"] = (4 * widths[-1],)
    return out


@pytest.mark.parametrize("size", [224, 587, (200, 248)])
@pytest.mark.parametrize("name,widths", [("resnet50", (64, 128, 256, 512)), ("resnet50_slim", (64, 128, 128, 256))])
def test_resnet_feature_shapes(name, widths, size):
    h, w = (size, size) if isinstance(size, int) else size
    _, feats = init_shapes(get_model(name, 2), size)
    assert feats == resnet_expected(h, w, widths)
    assert tuple(feats) == feature_names(name)


def cbr_expected(n, widths, k_pool_last):
    """'SAME' stride-1 convs keep the size; each VALID 3x3/2 max-pool maps n -> (n - 3) // 2 + 1."""
    out = {}
    for i, c in enumerate(widths):
        if i + 1 < len(widths) or k_pool_last:
            n = (n - 3) // 2 + 1
        out[f"layer{i + 1}"] = (n, n, c)
    out["pre_logits"] = (widths[-1],)
    return out


@pytest.mark.parametrize("size", [224, 587])
@pytest.mark.parametrize(
    "name,widths,pool_last",
    [
        ("cbr_larget", (32, 64, 128, 256, 512), False),
        ("cbr_largew", (64, 128, 256, 512), True),
        ("cbr_small", (32, 64, 128, 256), True),
        ("cbr_tiny", (64, 128, 256, 512), True),
    ],
)
def test_cbr_feature_shapes(name, widths, pool_last, size):
    _, feats = init_shapes(get_model(name, 2), size)
    assert feats == cbr_expected(size, widths, pool_last)
    if size == 587:  # docs/paper.md §1.2: VALID pools give 587 -> 293 -> 146 -> 72 -> 35
        assert [feats[f"layer{i}"][0] for i in range(1, 5)] == [293, 146, 72, 35]


def test_inception_feature_shapes_at_299():
    _, feats = init_shapes(get_model("inception_v3", 2), 299)
    assert feats == {
        "stem": (35, 35, 192),
        "mixed_5": (35, 35, 288),
        "mixed_6": (17, 17, 768),
        "mixed_7": (8, 8, 2048),
        "pre_logits": (2048,),
    }


def test_inception_keras_variant_has_no_bn_scale_and_aux_head_is_sown():
    keras_vars, _ = init_shapes(get_model("inception_v3", 2, variant="keras"), 299)
    flat = traverse_util.flatten_dict(keras_vars["params"], sep="/")
    assert not any(k.endswith("bn/scale") for k in flat)
    assert any(k.endswith("bn/bias") for k in flat)

    model = get_model("inception_v3", 5, aux_logits=True)
    x = jnp.zeros((1, 299, 299, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    assert "aux_logits" in variables["params"]
    _, state = jax.eval_shape(
        lambda v: model.apply(v, x, train=True, mutable=["batch_stats", "intermediates"]), variables
    )
    assert state["intermediates"][AUX_OUTPUT][0].shape == (1, 5)


def test_parameter_tree_top_level_is_blocks_and_head():
    for name in MODEL_NAMES:
        kw = {"aux_logits": True} if name == "inception_v3" else {}
        variables, _ = init_shapes(get_model(name, 2, **kw), 299)
        tops = set(variables["params"])
        assert tops == set(block_names(name)) | ({"head", "aux_logits"} if kw else {"head"}), name
        assert set(variables.get("batch_stats", {})) <= set(block_names(name)) | set(HEAD_NAMES)  # ViTs: none


def test_slim_resnet_shares_lower_blocks_with_resnet50():
    full, _ = init_shapes(get_model("resnet50", 2), 64)
    slim, _ = init_shapes(get_model("resnet50_slim", 2), 64)
    for block in ("conv1", "block1", "block2"):
        chex.assert_trees_all_equal_shapes(full["params"][block], slim["params"][block])
    assert slim["params"]["block3"]["unit1"]["conv3"]["conv"]["kernel"].shape == (1, 1, 128, 512)
    assert slim["params"]["block4"]["unit1"]["conv3"]["conv"]["kernel"].shape == (1, 1, 256, 1024)


@pytest.mark.parametrize(
    "name,kwargs,size",
    [
        ("cbr_small", {"widths": (4, 8, 8)}, 32),
        ("resnet50", {"widths": (4, 4, 8, 8), "stem_features": 8}, 64),
        ("resnet50", {"widths": (4, 4, 8, 8), "stem_features": 8, "variant": "keras"}, 64),
    ],
)
def test_train_updates_batch_stats_and_eval_does_not(name, kwargs, size):
    model = get_model(name, 3, **kwargs)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, size, size, 3)) * 2.0 + 1.0
    variables = model.init(jax.random.PRNGKey(0), x, train=False)

    (_, _), eval_state = model.apply(variables, x, train=False, mutable=["batch_stats"])
    chex.assert_trees_all_equal(eval_state["batch_stats"], variables["batch_stats"])

    (logits, feats), train_state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), train_state["batch_stats"], variables["batch_stats"])
    assert all(jax.tree.leaves(changed)), "every BN layer's running statistics must move in train mode"
    # Flax's running mean is momentum * old + (1 - momentum) * batch mean; check the first BN against NumPy.
    first = block_names(name, **kwargs)[0]
    conv_out_ = np.asarray(
        jax.lax.conv_general_dilated(
            x,
            variables["params"][first]["conv"]["kernel"],
            (2, 2) if name == "resnet50" else (1, 1),
            ((3, 3), (3, 3)) if name == "resnet50" else "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision="highest",
        )
    )
    if kwargs.get("variant") == "keras":
        conv_out_ = conv_out_ + np.asarray(variables["params"][first]["conv"]["bias"])
    expected_mean = 0.1 * conv_out_.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(train_state["batch_stats"][first]["bn"]["mean"], expected_mean, rtol=1e-4, atol=1e-5)
    chex.assert_shape(logits, (4, 3))
    assert list(feats) == list(feature_names(name, **kwargs))


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = get_model("cbr_small", 2, dtype=jnp.bfloat16, widths=(4, 8))
    x = jnp.ones((2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    logits, feats = model.apply(variables, x, train=False)
    assert logits.dtype == jnp.float32
    assert feats["layer1"].dtype == jnp.bfloat16


def test_bfloat16_body_has_a_float32_head():
    """Under bf16 compute the head still runs in float32: its logits equal a float64 matmul of the (bf16) pooled
    features with the float32 kernel and a bias that bf16 cannot represent, to float32 precision."""
    model = get_model("cbr_small", 2, dtype=jnp.bfloat16, widths=(4, 8))
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    params = dict(variables["params"])
    rng = np.random.default_rng(0)
    params["head"] = {
        "kernel": jnp.asarray(rng.normal(size=(8, 2)) * 1e-3, jnp.float32),
        "bias": jnp.asarray([1.0 + 2**-12, -3.0 - 2**-11], jnp.float32),  # 8 mantissa bits cannot hold these
    }
    logits, feats = model.apply({**variables, "params": params}, x, train=False)
    features = np.asarray(feats["pre_logits"], np.float64)
    expected = features @ np.asarray(params["head"]["kernel"], np.float64) + np.asarray(params["head"]["bias"])
    np.testing.assert_allclose(np.asarray(logits, np.float64), expected, rtol=1e-6, atol=0)
    rounded = np.asarray(jnp.asarray(logits).astype(jnp.bfloat16).astype(jnp.float32))
    assert np.all(rounded != np.asarray(logits)), "logits must carry more precision than bf16"


def cbr_min_size(num_pools: int, pool_padding: str) -> int:
    """Invert n -> (n - 3) // 2 + 1 (VALID 3x3/2 pool) num_pools times from a 1x1 map; SAME pools never shrink to 0."""
    if pool_padding == "SAME":
        return 1
    n = 1
    for _ in range(num_pools):
        n = 2 * (n - 1) + 3
    return n


@pytest.mark.parametrize(
    "name,overrides,num_pools",
    [
        ("cbr_small", {}, 4),
        ("cbr_larget", {}, 4),  # 5 layers, no pool after the last
        ("cbr_tiny", {"widths": (4, 8)}, 2),
        ("cbr_small", {"widths": (4, 8, 8), "pool_padding": "SAME"}, 3),
    ],
)
def test_min_input_size_of_cbrs_matches_pool_arithmetic(name, overrides, num_pools):
    expected = cbr_min_size(num_pools, overrides.get("pool_padding", "VALID"))
    assert min_input_size(name, **overrides) == expected


@pytest.mark.parametrize("name,weights", [("inception_v3", "Inception_V3_Weights"), ("resnet50", "ResNet50_Weights")])
def test_min_input_size_matches_torchvision_metadata(name, weights):
    torchvision = pytest.importorskip("torchvision")
    smallest = getattr(torchvision.models, weights).IMAGENET1K_V1.meta["min_size"][0]  # 75 and 1
    assert fits_input(name, smallest)
    assert smallest == 1 or not fits_input(name, smallest - 1)


def test_errors_name_the_culprit():
    with pytest.raises(ValueError, match="resnet50.*cbr_small"):
        get_model("resnet5O", 2)
    with pytest.raises(TypeError, match="cbr_small"):
        get_model("cbr_small", 2, width=(4,))
    model = get_model("resnet50", 2, variant="tf")
    with pytest.raises(ValueError, match="torchvision"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)


def test_model_table_cli():
    out = subprocess.run(
        [sys.executable, "-m", "transfusion_jax.models", "--models", "cbr_small,resnet50"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| cbr_small | 587 | 2,113,570 |" in out
    assert "| resnet50 | 224 | 23,512,130 |" in out
    assert "block4 19x19x2048" in out  # resnet50 at 587


@pytest.mark.parametrize(
    "mode, distribution, dtype",
    [
        ("fan_out", "normal", jnp.float32),
        ("fan_in", "truncated_normal", jnp.float32),
        ("fan_avg", "normal", jnp.bfloat16),
    ],
)
def test_flat_variance_scaling_equals_jax_bit_for_bit(mode, distribution, dtype):
    """layers.variance_scaling draws a vector and reshapes it (faster to compile on XLA:CPU); the values must be
    jax's initializer's exactly, for conv kernels, dense kernels and odd shapes, so no init changes."""
    reference = jax.nn.initializers.variance_scaling(2.0, mode, distribution)
    ours = layers.variance_scaling(2.0, mode, distribution)
    for n, shape in enumerate([(7, 7, 3, 4), (32, 2), (5, 3, 2)]):
        key = jax.random.key(n)
        expected, got = reference(key, shape, dtype), ours(key, shape, dtype)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(expected, np.float32))


def test_whole_model_init_is_the_same_with_jax_initializers(monkeypatch):
    """A model initialised with layers' flat initializers equals the same model initialised with jax's own (He
    fan-out normal for every ConvBN, flax's lecun_normal default for the head): no random init changed."""
    net, x = get_model("cbr_small", 3, widths=(4, 8)), jnp.zeros((1, 32, 32, 3))
    ours = jax.jit(lambda k: net.init(k, x, train=False)["params"])(jax.random.key(0))
    monkeypatch.setattr(layers, "HE_FAN_OUT", jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    monkeypatch.setattr(layers, "LECUN_NORMAL", jax.nn.initializers.lecun_normal())
    theirs = jax.jit(lambda k: net.init(k, x, train=False)["params"])(jax.random.key(0))
    chex.assert_trees_all_equal(ours, theirs)
