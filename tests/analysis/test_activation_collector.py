"""Conv-feature reductions and the activation collector (tiny Flax module; a tiny registry CBR)."""

import functools

import analysis_reference as ref
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_events import CompileEvents

from transfusion_jax.analysis import activations, moments, similarity
from transfusion_jax.analysis.activations import Reduction
from transfusion_jax.models.layers import global_avg_pool


class Tiny(nn.Module):
    """Follows the models' interface: __call__(x, train) -> (logits, {block name: features})."""

    @nn.compact
    def __call__(self, x, train=False):
        h1 = nn.relu(nn.Conv(4, (3, 3), name="layer1")(x))
        h2 = nn.relu(nn.Conv(6, (3, 3), strides=2, name="layer2")(h1))
        pooled = jnp.mean(h2, axis=(1, 2))
        return nn.Dense(2, name="head")(pooled), {"layer1": h1, "layer2": h2, "pre_logits": pooled}


def images(seed, batches=3, n=4, size=8):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, size, size, 3)).astype(np.float32) for _ in range(batches)]


@functools.cache
def tiny_models():
    module = Tiny()
    init = jax.jit(module.init)  # jitted: op-by-op initialisation is slow on a busy 2-core machine
    x = jnp.zeros((1, 8, 8, 3))
    apply_fn = functools.partial(module.apply, train=False)
    return (apply_fn, init(jax.random.key(0), x)), (apply_fn, init(jax.random.key(1), x)), module


def test_reductions_shapes_and_values():
    f = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 6, 3)), jnp.float32)
    np.testing.assert_allclose(global_avg_pool(f), np.asarray(f).mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_array_equal(activations.positions_as_datapoints(f), np.asarray(f).reshape(48, 3))
    sampled = activations.positions_as_datapoints(f, positions=5, key=jax.random.key(3))
    assert sampled.shape == (10, 3)
    rows = np.asarray(f).reshape(2, 24, 3)
    for i in range(2):  # each image's rows are distinct positions of that image
        picked = np.asarray(sampled[5 * i : 5 * i + 5])
        assert all(any(np.array_equal(r, c) for c in rows[i]) for r in picked)
        assert len({tuple(r) for r in picked}) == 5
    again = activations.positions_as_datapoints(f, positions=5, key=jax.random.key(3))
    np.testing.assert_array_equal(sampled, again)  # seeded: same key, same positions
    small = activations.positions_as_datapoints(f, positions=100, key=jax.random.key(3))
    np.testing.assert_array_equal(small, np.asarray(f).reshape(48, 3))  # a small grid is used whole
    assert activations.resize(f, (2, 3)).shape == (2, 2, 3, 3)
    constant = jnp.ones((1, 4, 4, 2))
    np.testing.assert_allclose(activations.resize(constant, (7, 7)), 1.0, rtol=1e-6)


def test_reduction_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        Reduction(mode="max")
    with pytest.raises(ValueError, match="positions"):
        Reduction(mode="mean", positions=3)


def test_collector_matches_direct_forward_and_moments():
    """Streamed pair moments equal moments of the concatenated features computed outside the collector."""
    model_a, model_b, module = tiny_models()
    batches = images(0)
    reduction = Reduction(mode="positions")
    accs = activations.collect_pair_moments(model_a, model_b, batches, reduction=reduction)
    assert list(accs) == [("layer1", "layer1"), ("layer2", "layer2"), ("pre_logits", "pre_logits")]
    forward = jax.jit(module.apply)
    x = np.concatenate([np.asarray(forward(model_a[1], b)[1]["layer2"]).reshape(-1, 6) for b in batches])
    y = np.concatenate([np.asarray(forward(model_b[1], b)[1]["layer2"]).reshape(-1, 6) for b in batches])
    stats = moments.finalize(accs[("layer2", "layer2")])
    assert stats.n == 3 * 4 * 4 * 4  # batches x images x 4x4 positions
    np.testing.assert_allclose(stats.cxy, ref.centred(x).T @ ref.centred(y) / len(x), atol=1e-6)
    assert similarity.cca(stats).score == pytest.approx(ref.cca_qr(x, y)[0].mean(), abs=1e-5)


def test_kept_rows_are_the_streamed_datapoints():
    """collect_pair_rows keeps the very rows collect_pair_moments streams (same sampled positions for both models):
    their moments, computed outside the collector, equal the streamed ones."""
    model_a, model_b, module = tiny_models()
    reduction = Reduction(mode="positions", positions=5, seed=3)
    batches = images(2)
    rows = activations.collect_pair_rows(model_a, model_b, batches, ["layer1", "layer2"], reduction)
    accs = activations.collect_pair_moments(model_a, model_b, batches, [("layer1", "layer1")], reduction)
    x, y = rows["layer1"]
    assert x.shape == y.shape == (3 * 4 * 5, 4) and rows["layer2"][0].shape == (3 * 4 * 5, 6)
    stats = moments.finalize(accs[("layer1", "layer1")])
    np.testing.assert_allclose(stats.cxy, ref.centred(x).T @ ref.centred(y) / len(x), atol=1e-6)
    # each of a's rows is a position of its image's layer1 map
    maps = np.asarray(jax.jit(module.apply)(model_a[1], batches[0])[1]["layer1"]).reshape(4, 64, 4)
    assert all(any(np.allclose(r, c) for c in maps[i // 5]) for i, r in enumerate(x[:20]))
    with pytest.raises(ValueError, match="not found"):
        activations.collect_pair_rows(model_a, model_b, batches, ["layer9"])
    with pytest.raises(ValueError, match="empty"):
        activations.collect_pair_rows(model_a, model_b, [], ["layer1"])


def test_compare_models_records_reduction_and_pairs_layers():
    model_a, _, _ = tiny_models()
    reduction = Reduction(mode="positions", positions=3, grid=(4, 4), seed=7)
    # layer1 (8x8 grid) vs layer2 (4x4): pairable because both are resized to 4x4 first.
    out = activations.compare_models(
        model_a, model_a, images(1, batches=4, n=8), method="cka", pairs=[("layer1", "layer2")], reduction=reduction
    )
    result = out["layer1/layer2"]
    assert result["reduction"] == {
        "mode": "positions",
        "positions": 3,
        "grid": [4, 4],
        "resize_method": "linear",
        "seed": 7,
    }
    assert result["n_examples"] == 4 * 8 * 3
    same = activations.compare_models(
        model_a, model_a, [{"image": b} for b in images(1)], method="svcca", reduction=Reduction(mode="mean"), keep=None
    )
    assert same["layer1/layer1"]["score"] == pytest.approx(1.0, abs=1e-5)  # a model against itself


def test_collected_rows_are_the_streamed_datapoints():
    """collect_rows of two models, with sampled positions, pair up row by row: their moments equal the streamed
    pair moments, and each image's rows are contiguous."""
    model_a, model_b, _ = tiny_models()
    batches = images(2, batches=3, n=4)
    reduction = Reduction(mode="positions", positions=5, seed=3)
    rows_a = activations.collect_rows(model_a, batches, ["layer1", "layer2"], reduction)
    rows_b = activations.collect_rows(model_b, batches, ["layer1", "layer2"], reduction)
    accs = activations.collect_pair_moments(model_a, model_b, batches, reduction=reduction)
    for layer, channels in (("layer1", 4), ("layer2", 6)):
        assert rows_a[layer].shape == (3 * 4 * 5, channels) and rows_a[layer].dtype == np.float32
        want = moments.finalize(accs[(layer, layer)])
        got = moments.finalize(moments.from_arrays(rows_a[layer], rows_b[layer]))
        np.testing.assert_allclose(got.cxy, want.cxy, atol=1e-6)
        np.testing.assert_allclose(got.cxx, want.cxx, atol=1e-6)
    features = np.asarray(jax.jit(model_a[0])(model_a[1], batches[1])[1]["layer2"]).reshape(4, 16, 6)
    image = rows_a["layer2"][4 * 5 + 2 * 5 : 4 * 5 + 3 * 5]  # batch 1, image 2: five of its own positions
    assert all(any(np.allclose(r, f, atol=1e-6) for f in features[2]) for r in image)
    with pytest.raises(ValueError, match="not found"):
        activations.collect_rows(model_a, batches, ["layer9"])


def test_default_pairs_follow_the_models_layer_order():
    """Not the alphabetical order a plain dict comes out of jit with (ResNet: conv1 before block1)."""

    def apply_fn(variables, x):
        return None, {"stem": x * variables, "block": jnp.tanh(x)}

    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((16, 3)).astype(np.float32) for _ in range(2)]
    assert list(activations.collect_pair_moments((apply_fn, 1.0), (apply_fn, 2.0), batches)) == [
        ("stem", "stem"),
        ("block", "block"),
    ]


def test_collector_errors_name_the_culprit():
    model_a, model_b, _ = tiny_models()
    with pytest.raises(ValueError, match="datapoints per batch"):
        activations.collect_pair_moments(model_a, model_b, images(0), pairs=[("layer1", "layer2")])
    with pytest.raises(ValueError, match="not found"):
        activations.collect_pair_moments(model_a, model_b, images(0), pairs=[("layer9", "layer1")])
    with pytest.raises(ValueError, match="empty"):
        activations.collect_pair_moments(model_a, model_b, [])


def test_collector_with_registry_cbr():
    from transfusion_jax import models

    module = models.get_model("cbr_small", 2, widths=(4, 8, 8, 8))
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    init = jax.jit(functools.partial(module.init, train=False))
    variables = [init(jax.random.key(i), x[:1]) for i in range(2)]
    apply_fn = functools.partial(module.apply, train=False)
    out = activations.compare_models(
        (apply_fn, variables[0]),
        (apply_fn, variables[1]),
        [x, x[::-1]],
        method="cka",
        reduction=Reduction(mode="positions", positions=4),
    )
    assert set(out) == {f"{n}/{n}" for n in models.feature_names("cbr_small", widths=(4, 8, 8, 8))}
    assert all(0.0 <= r["score"] <= 1.0 for r in out.values())


def test_collection_compiles_once_per_model_and_shape():
    """Collections over new checkpoints (other variables), a new but equal model (every RunWeights builds its own
    `partial(module.apply)`), other batches and every kind of collection trace and compile nothing after the first
    call of each; a new batch shape traces the forward (one program for both models) and the update once each."""
    _, _, module = tiny_models()
    init = jax.jit(module.init)
    variables = [init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3))) for seed in range(4)]

    def model(v):  # a fresh partial of a fresh, equal module each time, as RunWeights does
        return functools.partial(Tiny().apply, train=False), v

    reduction = Reduction(mode="positions", positions=5, seed=1)
    layers = ["layer1", "layer2"]

    def collect_all(va, vb, seed):
        activations.compare_models(model(va), model(vb), images(seed), method="cka", reduction=reduction)
        activations.collect_rows(model(va), images(seed), layers, reduction)
        activations.collect_pair_rows(model(va), model(vb), images(seed), layers, reduction)

    collect_all(variables[0], variables[1], 0)  # the first calls compile
    with CompileEvents() as compiles:
        for seed, (va, vb) in enumerate([(variables[2], variables[3]), (variables[1], variables[0])], start=1):
            collect_all(va, vb, seed)
    assert compiles.events == []
    with CompileEvents() as compiles:  # two images per batch: one new forward (for both models) and one update
        activations.collect_pair_moments(model(variables[0]), model(variables[1]), images(5, n=2), reduction=reduction)
        activations.collect_pair_moments(model(variables[2]), model(variables[3]), images(6, n=2), reduction=reduction)
    assert sorted(compiles.traces()) == ["_accumulate_pairs", "_rows_step"]
