"""The ViT (models/vit.py): parameter counts against torchvision, the forward pass against a float64 NumPy
transformer written from the paper's equations (jit and no-jit), token shapes, the patch embedding against XLA's
strided convolution, position-embedding resampling against PIL's bicubic, and its errors."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from PIL import Image

from transfusion_jax.models import block_names, feature_names, fits_input, get_model, min_input_size, vit

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

TINY = dict(patch_size=8, width=16, depth=3, num_heads=2, mlp_dim=32)  # 3 blocks: fast, still a stack


def count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def traced_params(name, num_classes, size=224, **kw):
    model = get_model(name, num_classes, **kw)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))


@pytest.mark.parametrize(
    "name,num_classes,reference",
    [
        ("vit_b16", 1000, lambda: torchvision.models.vit_b_16(weights=None)),
        ("vit_b16", 2, lambda: torchvision.models.vit_b_16(weights=None, num_classes=2)),
        (
            "vit_ti16",
            1000,
            lambda: torchvision.models.vision_transformer.VisionTransformer(
                image_size=224, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768
            ),
        ),
    ],
)
def test_param_counts_match_torchvision(name, num_classes, reference):
    expected = sum(p.numel() for p in reference().parameters())
    assert count(traced_params(name, num_classes)) == expected
    if (name, num_classes) == ("vit_b16", 1000):
        assert expected == 86_567_656  # the and ENGINEERING.md's figure


def test_blocks_and_token_features():
    variables = traced_params("vit_b16", 2, size=384)
    assert set(variables) == {"params"}  # no BatchNorm statistics
    assert set(variables["params"]) == set(block_names("vit_b16")) | {"head"}
    assert block_names("vit_b16")[0] == "embedding" and block_names("vit_b16")[-1] == "encoder_norm"
    assert block_names("vit_b16")[1:-1] == tuple(f"encoderblock_{i}" for i in range(12))
    assert variables["params"]["embedding"]["pos_embedding"].shape == (1, 1 + 24 * 24, 768)
    model = get_model("vit_b16", 2)
    _, features = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 384, 384, 3)), train=False), variables)
    assert tuple(features) == feature_names("vit_b16")
    assert all(f.shape == (2, 577, 768) for k, f in features.items() if k != "pre_logits")
    assert features["pre_logits"].shape == (2, 768)
    assert block_names("vit_ti16", depth=2) == ("embedding", "encoderblock_0", "encoderblock_1", "encoder_norm")


def test_sides_not_multiple_of_the_patch_drop_the_remainder_and_too_small_inputs_are_refused():
    model = get_model("vit_ti16", 2, **TINY)
    x = np.random.default_rng(0).normal(size=(1, 21, 21, 3)).astype(np.float32)
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
    assert variables["params"]["embedding"]["pos_embedding"].shape == (1, 1 + 4, 16)  # 21 px: a 2 x 2 grid
    cropped = x.copy()
    cropped[:, 16:] = 99.0  # the last 5 rows and columns are never seen, as with a VALID convolution
    cropped[:, :, 16:] = -99.0
    forward = jax.jit(functools.partial(model.apply, train=False))
    chex.assert_trees_all_close(forward(variables, x), forward(variables, cropped))
    with pytest.raises(ValueError, match="smaller than one 8x8 patch"):
        model.init(jax.random.key(0), jnp.zeros((1, 7, 7, 3)), train=False)
    assert fits_input("vit_ti16", 8, **TINY) and not fits_input("vit_ti16", 7, **TINY)
    assert min_input_size("vit_ti16", **TINY) == 8


def test_patch_embedding_is_the_strided_convolution():
    """The patches x kernel product equals XLA's VALID convolution with stride = kernel = patch (kernel HWIO)."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 24, 32, 3)), jnp.float32)
    conv = vit.PatchConv(5, 8)
    variables = conv.init(jax.random.key(0), x)
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"] + 0.3
    ours = conv.apply({"params": {"kernel": kernel, "bias": bias}}, x)
    reference = jax.lax.conv_general_dilated(x, kernel, (8, 8), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(ours, reference.reshape(2, 3 * 4, 5) + bias, rtol=1e-5, atol=1e-5)


def _layer_norm(x, p):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def numpy_vit(params, images, patch):
    """The ViT forward pass in float64 NumPy from the equations: patch embedding by explicit patch loops, pre-LN
    blocks with scaled dot-product attention over heads and an erf-GELU MLP, the final LN, the class token's head."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(images, np.float64)
    n, h, w, _ = x.shape
    emb = p["embedding"]
    patches = [
        np.einsum("nhwc,hwcd->nd", x[:, i : i + patch, j : j + patch], emb["conv"]["kernel"]) + emb["conv"]["bias"]
        for i in range(0, h - patch + 1, patch)
        for j in range(0, w - patch + 1, patch)
    ]
    cls = np.broadcast_to(emb["cls"], (n, 1, emb["cls"].shape[-1]))
    tokens = np.concatenate([cls, np.stack(patches, axis=1)], axis=1) + emb["pos_embedding"]
    features = {"embedding": tokens}
    for name in [b for b in p if b.startswith("encoderblock_")]:
        blk = p[name]
        att = blk["MultiHeadDotProductAttention_0"]
        y = _layer_norm(tokens, blk["LayerNorm_0"])
        q, k, v = (np.einsum("ntd,dhk->nthk", y, att[a]["kernel"]) + att[a]["bias"] for a in ("query", "key", "value"))
        logits = np.einsum("nthk,nshk->nhts", q, k) / np.sqrt(q.shape[-1])
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        heads = np.einsum("nhts,nshk->nthk", weights, v)
        tokens = tokens + np.einsum("nthk,hkd->ntd", heads, att["out"]["kernel"]) + att["out"]["bias"]
        mlp = blk["MlpBlock_0"]
        y = _layer_norm(tokens, blk["LayerNorm_1"]) @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"]
        y = 0.5 * y * (1 + scipy.special.erf(y / np.sqrt(2)))
        tokens = tokens + y @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
        features[name] = tokens
    tokens = _layer_norm(tokens, p["encoder_norm"])
    features["encoder_norm"] = tokens
    features["pre_logits"] = tokens[:, 0]
    return tokens[:, 0] @ p["head"]["kernel"] + p["head"]["bias"], features


@functools.cache
def tiny_vit(size=24):
    """A tiny ViT with every parameter random (LayerNorm affines, biases, class token and head included)."""
    model = get_model("vit_ti16", 3, **TINY)
    variables = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))()
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [leaf + 0.3 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return model, jax.tree.unflatten(treedef, leaves)


class ForwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_matches_numpy_reference(self):
        model, variables = tiny_vit()
        x = np.random.default_rng(2).normal(size=(2, 24, 24, 3)).astype(np.float32)
        logits, features = self.variant(functools.partial(model.apply, train=False))(variables, x)
        want_logits, want_features = numpy_vit(variables["params"], x, TINY["patch_size"])
        chex.assert_shape(logits, (2, 3))
        assert list(features) == list(want_features)
        chex.assert_trees_all_close(
            {k: np.asarray(v, np.float64) for k, v in features.items()}, want_features, rtol=1e-4, atol=1e-4
        )
        np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_bfloat16_compute_keeps_float32_logits_close(self):
        model, variables = tiny_vit()
        x = np.random.default_rng(3).normal(size=(2, 24, 24, 3)).astype(np.float32)
        bf16 = get_model("vit_ti16", 3, dtype=jnp.bfloat16, **TINY)
        logits, features = self.variant(functools.partial(bf16.apply, train=False))(variables, x)
        assert logits.dtype == jnp.float32 and features["encoderblock_0"].dtype == jnp.bfloat16
        want, _ = model.apply(variables, x, train=False)
        assert float(jnp.max(jnp.abs(logits - want)) / jnp.max(jnp.abs(want))) < 0.05


def pil_bicubic(grid: np.ndarray, side: int) -> np.ndarray:
    """Each channel of a (g, g, D) grid resized by PIL's BICUBIC on a float ('F') image."""
    return np.stack(
        [
            np.asarray(Image.fromarray(grid[..., d], mode="F").resize((side, side), Image.BICUBIC))
            for d in range(grid.shape[-1])
        ],
        axis=-1,
    )


@pytest.mark.parametrize("old,new", [(14, 24), (14, 7), (4, 5)])
def test_resample_posemb_is_pil_bicubic_on_the_grid_and_keeps_the_class_token(old, new):
    posemb = np.random.default_rng(4).normal(size=(1, 1 + old * old, 6)).astype(np.float32)
    out = vit.resample_posemb(posemb, 1 + new * new)
    assert out.shape == (1, 1 + new * new, 6)
    np.testing.assert_array_equal(out[:, 0], posemb[:, 0])
    want = pil_bicubic(posemb[0, 1:].reshape(old, old, 6), new).reshape(new * new, 6)
    np.testing.assert_allclose(out[0, 1:], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(vit.resample_posemb(posemb, 1 + old * old), posemb)


def test_resample_posemb_refuses_non_square_grids():
    with pytest.raises(ValueError, match="square grid"):
        vit.resample_posemb(np.zeros((1, 1 + 12, 4)), 1 + 16)
    with pytest.raises(ValueError, match="square grid"):
        vit.resample_posemb(np.zeros((1, 1 + 16, 4)), 1 + 15)


def test_models_table_collapses_a_vits_blocks():
    from transfusion_jax.models.__main__ import feature_list

    shapes = {"embedding": (197, 768), **{f"encoderblock_{i}": (197, 768) for i in range(12)}}
    shapes.update({"encoder_norm": (197, 768), "pre_logits": (768,)})
    assert feature_list(shapes) == "embedding .. encoder_norm 197x768, pre_logits 768"
    cnn = {"conv1": (56, 56, 64), "block1": (56, 56, 256), "pre_logits": (2048,)}
    assert feature_list(cnn) == "conv1 56x56x64, block1 56x56x256, pre_logits 2048"
