"""The init schemes and freezing on a ViT: transfusion of the first k encoder blocks, freezing them under real optimizer
steps, Mean-Var with LayerNorms treated as normalisation layers, Gabor in the patch embedding, Slim refused."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from surgery_helpers import filled_shapes, flat

from transfusion_jax import surgery
from transfusion_jax.models import block_names, get_model

TINY = dict(patch_size=8, width=16, depth=4, num_heads=2, mlp_dim=32)
BLOCKS = block_names("vit_ti16", **TINY)


def vit_variables(seed):
    rng = np.random.default_rng(seed)
    return filled_shapes("vit_ti16", 32, lambda k, s: rng.normal(0.5, 1.0, size=s).astype(np.float32), **TINY)


def initialize(spec, init, source, **kw):
    return surgery.initialize(
        spec, "vit_ti16", init, pretrained="ckpt", loader=lambda _: (source, {}), model_overrides=TINY, **kw
    )


def test_blocks_are_embedding_encoder_blocks_and_final_norm():
    assert BLOCKS == (
        "embedding",
        "encoderblock_0",
        "encoderblock_1",
        "encoderblock_2",
        "encoderblock_3",
        "encoder_norm",
    )
    assert surgery.first_conv_key(flat(vit_variables(0)), BLOCKS) == "params/embedding/conv/kernel"


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_transfusion_of_the_first_blocks(k):
    init, source = vit_variables(0), vit_variables(1)
    upto = BLOCKS[k]
    out, provenance = initialize(f"transfusion:{upto}", init, source)
    copied = set(BLOCKS[: k + 1])
    for key, value in flat(out).items():
        block = key.split("/")[1]
        want = flat(source if block in copied else init)[key]
        np.testing.assert_array_equal(value, want, err_msg=key)
        assert provenance[key] == ("checkpoint" if block in copied else "init"), key
    if upto == "encoder_norm":  # every block: transfer
        transferred, _ = initialize("transfer", init, source)
        jax.tree.map(np.testing.assert_array_equal, transferred, out)


def test_freezing_the_first_k_blocks_keeps_them_through_training():
    """Real AdamW steps on a tiny ViT with the embedding and the first two encoder blocks frozen: those leaves stay
    bit for bit, every other leaf moves; a ViT has no running statistics for freezing to fix."""
    model = get_model("vit_ti16", 2, **TINY)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)), jnp.float32)
    y = jnp.array([0, 1, 1, 0])
    params = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)["params"]
    frozen = ["embedding", "encoderblock_0", "encoderblock_1"]
    tx = surgery.freeze(optax.adamw(1e-2, weight_decay=0.1), params, frozen)
    assert surgery.frozen_statistics(params, {}, frozen) == {}

    @jax.jit
    def step(params, opt_state):
        def loss(p):
            logits, _ = model.apply({"params": p}, x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    trained, opt_state = params, tx.init(params)
    for _ in range(3):
        trained, opt_state = step(trained, opt_state)
    for key, before in flat(params).items():
        moved = not np.array_equal(np.asarray(before), np.asarray(flat(trained)[key]))
        assert moved == (key.split("/")[0] not in frozen), key


@pytest.mark.parametrize("bn", ["mean_var", "default", "copy"])
def test_mean_var_treats_layer_norms_as_normalisation_layers(bn):
    init, source = vit_variables(0), vit_variables(1)
    out, provenance = initialize("mean_var", init, source, rng=jax.random.key(0), mean_var_bn=bn)
    layer_norms = [k for k in flat(out) if "/LayerNorm_" in k or "/encoder_norm/" in k]
    assert len(layer_norms) == 2 * (2 * TINY["depth"] + 1)
    for key in layer_norms:
        got, src, ini = flat(out)[key], flat(source)[key], flat(init)[key]
        want = {"default": ("init", ini), "copy": ("checkpoint", src)}.get(bn)
        if want is None:  # drawn like every other weight
            assert provenance[key] == "mean_var" and not np.array_equal(got, src) and not np.array_equal(got, ini)
        else:
            assert provenance[key] == want[0]
            np.testing.assert_array_equal(got, want[1])
    for key in ("params/embedding/pos_embedding", "params/encoderblock_3/MlpBlock_0/Dense_0/kernel"):
        got, src = np.asarray(flat(out)[key]), np.asarray(flat(source)[key])
        assert provenance[key] == "mean_var" and got.shape == src.shape and not np.array_equal(got, src)
        assert abs(got.mean() - src.mean()) < 0.15 and abs(got.std() - src.std()) < 0.15
    assert provenance["params/head/kernel"] == "init"


def test_gabor_fills_the_patch_embedding():
    init = vit_variables(0)
    out, provenance = surgery.initialize("gabor", "vit_ti16", init, model_overrides=TINY)
    kernel = np.asarray(out["params"]["embedding"]["conv"]["kernel"])
    bank = surgery.gabor_bank((8, 8, 3, 16))
    np.testing.assert_allclose(kernel / kernel.std(), bank / bank.std(), rtol=1e-5, atol=1e-6)
    assert kernel.std() == pytest.approx(np.asarray(init["params"]["embedding"]["conv"]["kernel"]).std(), rel=1e-5)
    assert {k for k, v in provenance.items() if v == "gabor"} == {"params/embedding/conv/kernel"}


def test_slim_has_no_vit_form():
    with pytest.raises(ValueError, match="no ViT form"):
        initialize("slim", vit_variables(0), vit_variables(1))
