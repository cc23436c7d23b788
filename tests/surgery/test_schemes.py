"""Init schemes: which leaves come from the checkpoint, Mean-Var statistics, Gabor placement, parsing, entry point."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from surgery_helpers import TINY, TINY_BLOCKS, filled_shapes, flat, random_like, tiny_init, tiny_random

from transfusion_jax.models import block_names
from transfusion_jax.surgery import schemes, tree


def assert_origins(result, init, source, from_source):
    """Every leaf equals the source's iff `from_source(key)`, else the init's; params and batch_stats alike."""
    out, src, ini = flat(result), flat(source), flat(init)
    assert out.keys() == ini.keys()
    for key in out:
        expected = src[key] if from_source(key) else ini[key]
        np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(expected), err_msg=key)


def tiny_pair():
    init = tiny_init(0)
    return init, random_like(init, seed=1)


# ----- transfer / transfusion / slim ------------------------------------------------------------------------------


def test_transfer_loads_everything_but_the_head():
    init, source = tiny_pair()
    out, provenance = schemes.transfer(init, source)
    assert_origins(out, init, source, lambda k: k.split("/")[1] != "head")
    assert provenance["params/head/kernel"] == "init" and provenance["batch_stats/layer4/bn/mean"] == "checkpoint"


def test_transfer_ignores_a_head_of_another_size():
    init = tiny_init(0)
    source = tiny_random(1, num_classes=1000)
    out, _ = schemes.transfer(init, source)
    assert_origins(out, init, source, lambda k: k.split("/")[1] != "head")


@pytest.mark.parametrize("k", range(len(TINY_BLOCKS)))
def test_transfusion_up_to_each_block(k):
    init, source = tiny_pair()
    out, _ = schemes.transfusion(init, source, TINY_BLOCKS, TINY_BLOCKS[k])
    transfused = {f"layer{i + 1}" for i in range(k + 1)}  # by hand: layer1..layer(k+1)
    assert_origins(out, init, source, lambda key: key.split("/")[1] in transfused)


def resnet_like(name, value, size=64, **overrides):
    """Full-size trees without running init: every leaf a constant, so origins are told apart by value."""
    return filled_shapes(name, size, lambda k, s: np.full(s, value, np.float32), **overrides)


@pytest.mark.parametrize(
    "name,size", [("resnet50", 64), ("resnet50_slim", 64), ("inception_v3", 75), ("cbr_larget", 64), ("cbr_tiny", 64)]
)
def test_transfusion_prefixes_of_full_size_models(name, size):
    init, source = resnet_like(name, 0.0, size), resnet_like(name, 1.0, size)
    blocks = block_names(name)
    for k, upto in enumerate(blocks):
        out, provenance = schemes.transfusion(init, source, blocks, upto)
        for key, value in flat(out).items():
            block = key.split("/")[1]
            expected = 1.0 if block in blocks[: k + 1] else 0.0
            assert float(np.asarray(value).reshape(-1)[0]) == expected, (upto, key)
            assert provenance[key] == ("checkpoint" if expected else "init")


def test_slim_takes_conv1_to_block2_from_a_resnet50():
    init, source = resnet_like("resnet50_slim", 0.0), resnet_like("resnet50", 1.0, num_classes=1000)
    out, _ = schemes.slim(init, source)
    for key, value in flat(out).items():
        expected = 1.0 if key.split("/")[1] in ("conv1", "block1", "block2") else 0.0
        assert float(np.asarray(value).reshape(-1)[0]) == expected, key
    # The slimmed top really differs, so a full transfer into it must fail loudly.
    slimmed = r"params/block3/unit1/conv1/conv/kernel: source \(1, 1, 512, 256\) vs target \(1, 1, 512, 128\)"
    with pytest.raises(tree.TreeMismatchError, match=slimmed):
        schemes.transfer(init, source)


SLIM_CBR, FULL_CBR = (16, 32, 32, 64), (16, 32, 64, 128)  # the study's Slim of its large CBR, and that CBR


def test_slim_of_a_cbr_takes_layers_1_2_from_the_full_width_checkpoint():
    init = resnet_like("cbr_small", 0.0, widths=SLIM_CBR)
    source = resnet_like("cbr_small", 1.0, widths=FULL_CBR, num_classes=64)
    blocks = block_names("cbr_small", widths=SLIM_CBR)
    out, provenance = schemes.slim(init, source, blocks, schemes.slim_upto("cbr_small"))
    for key, value in flat(out).items():
        expected = 1.0 if key.split("/")[1] in ("layer1", "layer2") else 0.0
        assert float(np.asarray(value).reshape(-1)[0]) == expected, key
        assert provenance[key] == ("checkpoint" if expected else "init")
    slimmed = r"params/layer3/conv/kernel: source \(7, 7, 32, 64\) vs target \(7, 7, 32, 32\)"
    with pytest.raises(tree.TreeMismatchError, match=slimmed):
        schemes.transfer(init, source)


@pytest.mark.parametrize("widths", [(16, 32, 48, 64), (16, 32, 64, 128), (16, 32, 32, 128)])
def test_slim_of_a_cbr_needs_every_layer_above_layer2_at_half_width(widths):
    init = resnet_like("cbr_small", 0.0, widths=widths)
    source = resnet_like("cbr_small", 1.0, widths=FULL_CBR)
    with pytest.raises(tree.TreeMismatchError, match="half the checkpoint's width"):
        schemes.slim(init, source, block_names("cbr_small", widths=widths), "layer2")


def test_slim_upto_per_model():
    assert schemes.slim_upto("resnet50_slim") == "block2"
    assert schemes.slim_upto("cbr_small") == schemes.slim_upto("cbr_larget") == "layer2"
    assert schemes.slim_upto("resnet50") is None and schemes.slim_upto("inception_v3") is None


# ----- Mean-Var ---------------------------------------------------------------------------------------------------


def structured_source(init, seed=3):
    """Smooth, strongly correlated tensors with a nonzero mean, so structure and moments are both measurable."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in flat(init).items():
        n = int(np.size(value))
        x = rng.uniform(-1, 1) + rng.uniform(0.2, 2) * np.sin(0.7 * np.arange(n) + rng.uniform(0, 6))
        x = np.abs(x) + 0.5 if key.endswith("/var") else x
        out[key] = x.reshape(np.shape(value)).astype(np.float32)
    return tree.unflatten(out)


def test_mean_var_keeps_moments_and_destroys_structure():
    init = tiny_init(0)
    source = structured_source(init)
    out, provenance = schemes.mean_var(init, source, jax.random.key(0))
    src, res = flat(source), flat(out)
    drawn = [k for k in res if k.endswith("conv/kernel")]
    assert drawn and all(provenance[k] == "mean_var" for k in drawn)
    for key in drawn:
        x, y = np.asarray(src[key], np.float64).ravel(), np.asarray(res[key], np.float64).ravel()
        n = x.size
        # Sampling error of the mean is std/sqrt(n), of the std about std/sqrt(2n): allow 5 of each.
        assert abs(y.mean() - x.mean()) < 5 * x.std() / np.sqrt(n), key
        assert abs(y.std() / x.std() - 1) < 5 / np.sqrt(2 * n), key
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(n), key  # no trace of the source's pattern
        # iid normal with the source's moments (the source itself is far from normal).
        assert scipy.stats.kstest(y, "norm", args=(x.mean(), x.std())).pvalue > 1e-4, key
        assert scipy.stats.kstest(x, "norm", args=(x.mean(), x.std())).pvalue < 1e-4, key
    # Different tensors get independent draws.
    a, b = (np.asarray(res[f"params/layer{i}/conv/kernel"]).ravel() for i in (3, 4))
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)
    assert_origins(
        {"params": {"head": out["params"]["head"]}},
        {"params": {"head": init["params"]["head"]}},
        source,
        lambda k: False,
    )


def test_random_scaled_is_the_random_draw_at_the_pretrained_kernels_scale():
    """Each body kernel: the random init's values times one factor, so that its std is the pretrained kernel's (the
    source's structure does not enter); BatchNorm, the head and everything else stay the random init's."""
    init = tiny_init(0)
    source = structured_source(init)
    out, provenance = schemes.random_scaled(init, source)
    src, res, ini = flat(source), flat(out), flat(init)
    kernels = [k for k in res if k.endswith("conv/kernel")]
    assert kernels and all(provenance[k] == "scaled" for k in kernels)
    for key in kernels:
        x, y, z = (np.asarray(t[key], np.float64).ravel() for t in (src, res, ini))
        assert y.std() == pytest.approx(x.std(), rel=1e-6), key
        np.testing.assert_allclose(y, z * (x.std() / z.std()), rtol=1e-6)  # the random draw, rescaled
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(x.size), key
    for key in res:
        if key not in kernels:
            np.testing.assert_array_equal(res[key], ini[key], err_msg=key)
            assert provenance[key] == "init"
    out2, _ = initialize("random_scaled", init, pretrained="/ckpt", loader=FakeLoader(source))
    jax.tree_util.tree_map(np.testing.assert_array_equal, out2, out)  # the entry point dispatches to it


def test_mean_var_draws_are_the_normals_of_each_tensors_shape():
    """Mean-Var draws a vector and reshapes it (faster to compile): the values must be those of a draw of the
    tensor's own shape from the tensor's key, fold_in(rng, position), as they always were."""
    init = tiny_init(0)
    source = structured_source(init)
    out, _ = schemes.mean_var(init, source, jax.random.key(0))
    kernels = [(i, k) for i, k in enumerate(flat(init)) if k.endswith("conv/kernel")]
    assert len(kernels) == len(TINY_BLOCKS)
    for i, key in kernels:
        x = np.asarray(flat(source)[key], np.float64)
        z = jax.random.normal(jax.random.fold_in(jax.random.key(0), i), x.shape, jnp.float32)
        np.testing.assert_array_equal(flat(out)[key], (x.mean() + x.std() * z).astype(np.float32))


@pytest.mark.parametrize("bn", schemes.MEAN_VAR_BN)
def test_mean_var_batchnorm_modes(bn):
    init = tiny_init(0)
    source = structured_source(init)
    out, provenance = schemes.mean_var(init, source, jax.random.key(0), bn=bn)
    res, src, ini = flat(out), flat(source), flat(init)
    bn_params = [k for k in res if k.startswith("params/") and "/bn/" in k]
    stats = [k for k in res if k.startswith("batch_stats/")]
    assert len(bn_params) == 8 and len(stats) == 8
    expect_params = {"default": "init", "copy": "checkpoint", "mean_var": "mean_var"}[bn]
    expect_stats = "checkpoint" if bn == "copy" else "init"
    for key in bn_params + stats:
        expected = expect_params if key in bn_params else expect_stats
        assert provenance[key] == expected, key
        if expected != "mean_var":
            reference = src[key] if expected == "checkpoint" else ini[key]
            np.testing.assert_array_equal(np.asarray(res[key]), np.asarray(reference), err_msg=key)
        else:
            x, y = np.asarray(src[key], np.float64), np.asarray(res[key], np.float64)
            assert not np.allclose(x, y) and abs(y.mean() - x.mean()) < 6 * x.std() / np.sqrt(x.size), key


def test_mean_var_rejects_a_mismatched_checkpoint_and_bad_modes():
    init = tiny_init(0)
    with pytest.raises(tree.TreeMismatchError, match="shape mismatch"):
        schemes.mean_var(init, tiny_random(1, widths=(4, 8, 16, 8)), jax.random.key(0))
    with pytest.raises(ValueError, match="mean_var, default, copy"):
        schemes.mean_var(init, init, jax.random.key(0), bn="gamma")


# ----- transfusion:<block>+mean_var (weight transfer below, statistics transfer above) -----------------------------


@pytest.mark.parametrize("k", range(len(TINY_BLOCKS)))
def test_hybrid_copies_the_prefix_and_draws_mean_var_above(k):
    init = tiny_init(0)
    source = structured_source(init)
    out, provenance = schemes.transfusion_mean_var(init, source, TINY_BLOCKS, TINY_BLOCKS[k], jax.random.key(0))
    plain, _ = schemes.mean_var(init, source, jax.random.key(0))
    res, src, ini, mv = flat(out), flat(source), flat(init), flat(plain)
    copied = {f"layer{i + 1}" for i in range(k + 1)}  # by hand: layer1..layer(k+1)
    assert res.keys() == ini.keys()
    for key, value in res.items():
        block = key.split("/")[1]
        if block in copied:  # weights and BN statistics from the checkpoint
            expected, origin = src[key], "checkpoint"
        elif block == "head" or key.startswith("batch_stats/"):  # random head; running stats reset (bn='mean_var')
            expected, origin = ini[key], "init"
        else:  # exactly plain Mean-Var's draw for this leaf
            expected, origin = mv[key], "mean_var"
        assert provenance[key] == origin, key
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected), err_msg=key)
    # The Mean-Var part has its pretrained tensor's moments and none of its structure.
    for key in [k_ for k_, o in provenance.items() if o == "mean_var" and k_.endswith("conv/kernel")]:
        x, y = np.asarray(src[key], np.float64).ravel(), np.asarray(res[key], np.float64).ravel()
        assert abs(y.mean() - x.mean()) < 5 * x.std() / np.sqrt(x.size), key
        assert abs(y.std() / x.std() - 1) < 5 / np.sqrt(2 * x.size), key
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(x.size), key


@pytest.mark.parametrize("bn", schemes.MEAN_VAR_BN)
def test_hybrid_batchnorm_above_the_prefix_follows_mean_var_bn(bn):
    init = tiny_init(0)
    source = structured_source(init)
    _, provenance = schemes.transfusion_mean_var(init, source, TINY_BLOCKS, "layer2", jax.random.key(0), bn=bn)
    expect_params = {"default": "init", "copy": "checkpoint", "mean_var": "mean_var"}[bn]
    expect_stats = "checkpoint" if bn == "copy" else "init"
    assert provenance["params/layer2/bn/scale"] == provenance["batch_stats/layer2/bn/var"] == "checkpoint"
    assert provenance["params/layer3/bn/scale"] == provenance["params/layer4/bn/bias"] == expect_params
    assert provenance["batch_stats/layer3/bn/mean"] == provenance["batch_stats/layer4/bn/var"] == expect_stats


@pytest.mark.parametrize("name,size", [("resnet50", 64), ("inception_v3", 75), ("cbr_larget", 64)])
def test_hybrid_routes_every_leaf_of_full_size_models(name, size, monkeypatch):
    """Which leaf is copied, drawn or left at init, on every family's real tree. The draw itself (moments, rng) is
    tested above on the tiny CBR; here it is replaced by a marker so 20M-parameter trees cost no random draws."""
    monkeypatch.setattr(schemes, "_mean_var_draw", lambda rng, tensor, dtype: np.full(np.shape(tensor), -7.0, dtype))
    blocks = block_names(name)
    init, source = resnet_like(name, 0.0, size), resnet_like(name, 1.0, size)
    out, provenance = schemes.initialize(
        f"transfusion:{blocks[1]}+mean_var",
        name,
        init,
        rng=jax.random.key(0),
        pretrained="/p",
        loader=FakeLoader(source, architecture=name),
    )
    for key, value in flat(out).items():
        block = key.split("/")[1]
        if block in blocks[:2]:
            expected = (1.0, "checkpoint")
        elif block in ("head", "aux_logits") or key.startswith("batch_stats/"):
            expected = (0.0, "init")
        else:
            expected = (-7.0, "mean_var")
        assert (float(np.asarray(value).reshape(-1)[0]), provenance[key]) == expected, key


# ----- Gabor ------------------------------------------------------------------------------------------------------


def test_gabor_replaces_only_the_first_conv_at_the_init_scale():
    init = tiny_init(0)
    out, provenance = schemes.gabor(init, TINY_BLOCKS)
    key = "params/layer1/conv/kernel"
    for k, v in flat(out).items():
        if k != key:
            np.testing.assert_array_equal(np.asarray(v), np.asarray(flat(init)[k]), err_msg=k)
    kernel = np.asarray(flat(out)[key], np.float64)
    assert provenance[key] == "gabor" and kernel.shape == (7, 7, 3, 4)
    np.testing.assert_allclose(kernel.std(), np.asarray(flat(init)[key], np.float64).std(), rtol=1e-5)
    # The He fan_out init it matches: std sqrt(2 / (7 * 7 * 4)), within sampling error of 588 draws.
    assert abs(kernel.std() / np.sqrt(2 / (49 * 4)) - 1) < 0.15
    np.testing.assert_array_equal(kernel[:, :, 0], kernel[:, :, 2])  # grayscale across RGB


def test_gabor_takes_its_scale_from_a_checkpoint():
    init = tiny_init(0)
    source = random_like(init, seed=1)  # std about 1, far from the He init's 0.1
    out, _ = schemes.gabor(init, TINY_BLOCKS, source)
    key = "params/layer1/conv/kernel"
    np.testing.assert_allclose(
        np.std(np.asarray(flat(out)[key], np.float64)), np.std(np.asarray(flat(source)[key], np.float64)), rtol=1e-5
    )


@pytest.mark.parametrize(
    "name,size,key,shape",
    [
        ("resnet50", 64, "params/conv1/conv/kernel", (7, 7, 3, 64)),
        ("inception_v3", 75, "params/stem/Conv2d_1a_3x3/conv/kernel", (3, 3, 3, 32)),
        ("cbr_tiny", 32, "params/layer1/conv/kernel", (5, 5, 3, 64)),
    ],
)
def test_gabor_finds_the_first_conv_of_every_architecture(name, size, key, shape):
    rng = np.random.default_rng(0)
    init = filled_shapes(name, size, lambda k, s: rng.normal(size=s).astype(np.float32))
    out, provenance = schemes.gabor(init, block_names(name))
    assert [k for k, v in provenance.items() if v == "gabor"] == [key]
    assert np.shape(flat(out)[key]) == shape


# ----- parsing and the config entry point -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,hint",
    [
        ("transfusion:blok2", "Did you mean 'block2'"),
        ("mean-var", "Did you mean 'mean_var'"),
        ("transfusion", "transfusion:conv1"),
        ("random:conv1", "Valid choices"),
        ("Transfer", "Did you mean 'transfer'"),
        ("transfusion:block2+meanvar", "Did you mean 'transfusion:block2+mean_var'"),
        ("transfusion:block2+gabor", "only '+mean_var'"),
        ("transfusion:blok2+mean_var", "Did you mean 'block2'"),
    ],
)
def test_parse_rejects_typos_naming_choices_and_blocks(spec, hint):
    blocks = block_names("resnet50")
    with pytest.raises(ValueError) as e:
        schemes.parse_init(spec, blocks)
    assert hint in str(e.value)
    assert "conv1, block1, block2, block3, block4" in str(e.value) and "mean_var" in str(e.value)


def test_parse_accepts_every_scheme():
    blocks = block_names("resnet50")
    assert schemes.parse_init("transfusion:block3", blocks) == schemes.InitSpec("transfusion", "block3")
    hybrid = schemes.parse_init("transfusion:block3+mean_var", blocks)
    assert hybrid == schemes.InitSpec("transfusion", "block3", "mean_var") and hybrid.draws
    for name in ("random", "transfer", "mean_var", "random_scaled", "gabor", "slim"):
        assert schemes.parse_init(name, blocks) == schemes.InitSpec(name)


def initialize(spec, init, rng=None, **kwargs):
    """`schemes.initialize` on the tiny CBR."""
    return schemes.initialize(spec, "cbr_small", init, rng=rng, model_overrides=TINY, **kwargs)


class FakeLoader:
    """Stands in for transfusion_jax.pretrained.load: records the path, returns (variables, metadata)."""

    def __init__(self, variables, architecture="cbr_small"):
        self.variables, self.architecture, self.paths = variables, architecture, []

    def __call__(self, path):
        self.paths.append(path)
        return self.variables, {
            "architecture": self.architecture,
            "variant": None,
            "num_classes": 1000,
            "preprocessing": {},
        }


def test_entry_point_dispatches_and_reads_the_checkpoint_only_when_needed():
    init, source = tiny_pair()
    loader = FakeLoader(source)
    out, _ = initialize("transfusion:layer2", init, pretrained="/ckpt", loader=loader)
    assert loader.paths == ["/ckpt"]
    assert_origins(out, init, source, lambda k: k.split("/")[1] in ("layer1", "layer2"))
    out, provenance = initialize("random", init, pretrained="/ckpt", loader=loader)
    assert loader.paths == ["/ckpt"] and set(provenance.values()) == {"init"}  # random never reads the file
    out, provenance = initialize(
        "mean_var", init, jax.random.key(0), pretrained="/ckpt", mean_var_bn="copy", loader=loader
    )
    assert provenance["batch_stats/layer1/bn/mean"] == "checkpoint"


def test_entry_point_errors():
    init, source = tiny_pair()
    with pytest.raises(ValueError, match="config.pretrained"):
        initialize("transfer", init, loader=FakeLoader(source))
    with pytest.raises(ValueError, match="holds a 'resnet50' model but model 'cbr_small' needs"):
        initialize("transfer", init, pretrained="/p", loader=FakeLoader(source, architecture="resnet50"))
    with pytest.raises(ValueError, match="needs model 'resnet50_slim' or a CBR"):
        schemes.initialize("slim", "resnet50", init, pretrained="/p", loader=FakeLoader(source))
    with pytest.raises(tree.TreeMismatchError, match="half the checkpoint's width"):  # a CBR of the same widths
        initialize("slim", init, pretrained="/p", loader=FakeLoader(source))
    with pytest.raises(ValueError, match="layer9"):
        initialize("transfusion:layer9", init)
    with pytest.raises(ValueError, match="Unknown mean_var_bn 'copies'"):
        initialize("random", init, mean_var_bn="copies")
    for spec in ("mean_var", "transfusion:layer2+mean_var"):
        with pytest.raises(ValueError, match="pass rng"):
            initialize(spec, init, pretrained="/p", loader=FakeLoader(source))
    with pytest.raises(ValueError, match="needs a checkpoint"):
        initialize("transfusion:layer2+mean_var", init, jax.random.key(0))
    with pytest.raises(TypeError, match="needs loader="):  # surgery reads no file itself
        initialize("transfer", init, pretrained="/p")
    # A shape mismatch names the checkpoint and the model next to the diff.
    with pytest.raises(
        tree.TreeMismatchError,
        match=r"(?s)shape mismatch.*Checkpoint /p: architecture 'cbr_small'.*"
        r"model 'cbr_small' with overrides",
    ):
        initialize("transfer", init, pretrained="/p", loader=FakeLoader(tiny_random(1, widths=(4, 8, 16, 8))))


def test_slim_entry_point_takes_a_resnet50_checkpoint():
    init, source = resnet_like("resnet50_slim", 0.0), resnet_like("resnet50", 1.0, num_classes=1000)
    for spec in ("slim", "transfusion:block1"):
        out, provenance = schemes.initialize(
            spec, "resnet50_slim", init, pretrained="/r50", loader=FakeLoader(source, architecture="resnet50")
        )
        assert provenance["params/block1/unit1/conv1/conv/kernel"] == "checkpoint"
        assert provenance["params/block3/unit1/conv1/conv/kernel"] == "init"


def test_slim_entry_point_takes_a_cbr_checkpoint_of_twice_the_top_width():
    init = resnet_like("cbr_small", 0.0, widths=SLIM_CBR)
    source = resnet_like("cbr_small", 1.0, widths=FULL_CBR, num_classes=64)
    out, provenance = schemes.initialize(
        "slim", "cbr_small", init, pretrained="/large", model_overrides=dict(widths=SLIM_CBR), loader=FakeLoader(source)
    )
    assert provenance["params/layer2/conv/kernel"] == provenance["batch_stats/layer2/bn/mean"] == "checkpoint"
    assert provenance["params/layer3/conv/kernel"] == provenance["params/head/kernel"] == "init"


def test_entry_point_with_a_real_checkpoint_file(tmp_path):
    from transfusion_jax import pretrained

    init, source = tiny_pair()
    path = str(tmp_path / "tiny.npz")
    pretrained.save(path, source, {"architecture": "cbr_small", "variant": None, "num_classes": 2, "preprocessing": {}})
    out, provenance = initialize("transfer", init, pretrained=path, loader=pretrained.load)
    assert_origins(out, init, source, lambda k: k.split("/")[1] != "head")
    assert provenance["params/layer4/conv/kernel"] == "checkpoint"


def test_random_is_the_documented_initializers():
    init = tiny_init(0)
    out, provenance = schemes.initialize("random", "cbr_small", init, model_overrides=TINY)
    assert set(provenance.values()) == {"init"}
    f = flat(out)
    # He normal fan_out: std sqrt(2 / (k*k*out)); layer3 has 7*7*8*8 = 3136 draws (sampling error ~1.3%).
    assert abs(np.std(np.asarray(f["params/layer3/conv/kernel"])) / np.sqrt(2 / (49 * 8)) - 1) < 0.06
    for i in range(1, 5):
        np.testing.assert_array_equal(f[f"params/layer{i}/bn/scale"], 1.0)
        np.testing.assert_array_equal(f[f"params/layer{i}/bn/bias"], 0.0)
        np.testing.assert_array_equal(f[f"batch_stats/layer{i}/bn/mean"], 0.0)
        np.testing.assert_array_equal(f[f"batch_stats/layer{i}/bn/var"], 1.0)
    np.testing.assert_array_equal(f["params/head/bias"], 0.0)


def test_gabor_refuses_a_1x1_first_conv():
    init = {"params": {"layer1": {"conv": {"kernel": np.ones((1, 1, 3, 4), np.float32)}}}}
    with pytest.raises(ValueError, match="1x1 kernel"):
        schemes.gabor(init, ("layer1",))
