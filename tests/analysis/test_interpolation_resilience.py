"""Linear interpolation (barrier against closed forms, BN statistics against a NumPy forward pass) and
re-initialisation resilience (exact block resets, criticality arithmetic, a real model and evaluator)."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from transfusion_jax.analysis import interpolation, resilience
from transfusion_jax.models import get_model
from transfusion_jax.surgery import tree
from transfusion_jax.train import partition, steps, trainer
from transfusion_jax.train.state import TrainState

# ----- barrier ----------------------------------------------------------------------------------------------------


def test_barrier_height_of_hand_worked_curves():
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert interpolation.barrier_height(alphas, [1.0, 2.0, 3.5, 2.0, 2.0]) == pytest.approx(3.5 - 1.5)
    assert interpolation.barrier_height(alphas, [1.0, 1.0, 1.0, 1.0, 1.0]) == 0.0
    assert interpolation.barrier_height(alphas, [0.9, 0.8, 0.6, 0.85, 0.7], higher_is_better=True) == pytest.approx(0.2)
    assert interpolation.barrier_height(alphas, [2.0, 1.0, 0.5, 1.0, 2.0]) == 0.0  # a valley is no barrier


def double_well(variables):
    """One block, `well`, holding one weight w (trees name leaves block/.../leaf): loss(w) = (w^2 - 1)^2, minima at
    w = -1 and w = 1; 'auc' = 1 - loss / 2."""
    w = float(variables["params"]["well"]["w"])
    loss = (w * w - 1.0) ** 2
    return {"loss": loss, "auc": 1.0 - loss / 2}


def test_double_well_barrier_is_its_closed_form():
    """w(alpha) = -1 + 2 alpha: loss(alpha) = ((2 alpha - 1)^2 - 1)^2, endpoints 0, so the barrier is loss(1/2) = 1."""
    a = {"params": {"well": {"w": jnp.float32(-1.0)}}, "batch_stats": {}}
    b = {"params": {"well": {"w": jnp.float32(1.0)}}, "batch_stats": {}}
    alphas = np.linspace(0, 1, 9)
    out = interpolation.interpolate(a, b, double_well, alphas=alphas)
    expected = ((2 * alphas - 1) ** 2 - 1) ** 2
    np.testing.assert_allclose([p["loss"] for p in out["path"]], expected, atol=1e-12)
    assert out["barrier"] == {"loss": pytest.approx(1.0), "auc": pytest.approx(0.5)}
    assert out["resolution"] == pytest.approx(0.125) and out["batch_stats"] == "interpolated"
    assert json.loads(json.dumps(out)) == out
    # A grid that misses alpha = 1/2 sees a lower barrier: the value is a lower bound at the grid's resolution.
    coarse = interpolation.interpolate(a, b, double_well, alphas=[0.0, 0.4, 1.0])
    assert coarse["barrier"]["loss"] == pytest.approx(((0.8 - 1) ** 2 - 1) ** 2) and coarse["barrier"]["loss"] < 1


def test_bad_alphas_and_mismatched_solutions_are_named():
    a = {"params": {"well": {"w": jnp.float32(-1.0)}}, "batch_stats": {}}
    for alphas in ([0.0, 1.0], [0.1, 0.5, 1.0], [0.0, 0.6, 0.4, 1.0]):
        with pytest.raises(ValueError, match="alphas"):
            interpolation.interpolate(a, a, double_well, alphas=alphas)
    with pytest.raises(tree.TreeMismatchError, match="not the same architecture"):
        interpolation.interpolate(a, {"params": {"well": {"w": jnp.zeros(2)}}, "batch_stats": {}}, double_well)


# ----- BatchNorm statistics ---------------------------------------------------------------------------------------


class TwoBN(nn.Module):
    """Dense -> BN(momentum 0.9) -> relu -> Dense -> BN(momentum 0.99): the second BN's input depends on the first
    BN's train-mode normalisation, so a reference must run the whole forward pass in train mode."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(5, name="d1")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn1")(x))
        x = nn.Dense(3, name="d2")(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.99, name="bn2")(x), {}


def numpy_bn_stats(params, batches):
    """Per batch: train-mode forward in float64 with batch statistics (biased variance, eps 1e-5); then averages."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    per_batch = []
    for x in batches:
        h = x @ p["d1"]["kernel"] + p["d1"]["bias"]
        m1, v1 = h.mean(0), h.var(0)
        h = np.maximum((h - m1) / np.sqrt(v1 + 1e-5) * p["bn1"]["scale"] + p["bn1"]["bias"], 0)
        h = h @ p["d2"]["kernel"] + p["d2"]["bias"]
        per_batch.append((m1, v1, h.mean(0), h.var(0)))
    return [np.mean([s[i] for s in per_batch], axis=0) for i in range(4)]


def test_recomputed_statistics_equal_a_numpy_train_mode_forward():
    model = TwoBN()
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(32, 4)) * 2 + 1).astype(np.float32) for _ in range(3)]
    variables = model.init(jax.random.key(0), batches[0], train=False)
    variables = {
        "params": jax.tree_util.tree_map(lambda a: a + 0.3 * rng.normal(size=a.shape), variables["params"]),
        "batch_stats": jax.tree_util.tree_map(lambda a: a + 7.0, variables["batch_stats"]),  # stale: must not leak
    }
    stats = interpolation.recompute_batch_stats(
        model, variables, [{"image": b, "valid": np.ones(32, bool)} for b in batches]
    )
    m1, v1, m2, v2 = numpy_bn_stats(variables["params"], batches)
    np.testing.assert_allclose(stats["bn1"]["mean"], m1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["bn1"]["var"], v1, rtol=1e-5)
    np.testing.assert_allclose(stats["bn2"]["mean"], m2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["bn2"]["var"], v2, rtol=1e-5)
    with pytest.raises(ValueError, match="padding rows"):
        interpolation.recompute_batch_stats(model, variables, [{"image": batches[0], "valid": np.arange(32) < 30}])


# ----- real models ------------------------------------------------------------------------------------------------

TINY = dict(widths=(4, 8))


class EvalSplit:
    """A fixed eval split in the data contract (task, batches with valid padding), labels in the mean of channel 0."""

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 2, size=n).astype(np.int32)
        self.images = rng.normal(size=(n, 8, 8, 3)).astype(np.float32)
        self.images[..., 0] += self.labels[:, None, None]
        self.task = type("Task", (), {"loss": "softmax", "label_names": ("neg", "pos")})
        self.name = "eval"

    def __len__(self):
        return len(self.labels)

    def example_ids(self):
        return [f"eval/{i}" for i in range(len(self))]

    def batches(self, batch_size, *, mesh):
        n, sharding = len(self.labels), NamedSharding(mesh, P("data"))
        for start in range(0, n, batch_size):
            rows = np.arange(start, start + batch_size)
            take = np.minimum(rows, n - 1)
            batch = {
                "image": self.images[take],
                "label": self.labels[take],
                "label_mask": (rows < n).astype(np.float32)[:, None],
                "valid": rows < n,
            }
            yield {k: jax.device_put(v, sharding) for k, v in batch.items()}


@functools.cache
def tiny_setup():
    """A tiny CBR, two random inits, a fake eval split and an evaluator through the trainer's own evaluate."""
    model = get_model("cbr_small", 2, **TINY)
    x = jnp.zeros((1, 8, 8, 3))
    va, vb = (model.init(jax.random.key(s), x, train=False) for s in (0, 1))
    mesh = partition.make_data_mesh()
    eval_step = steps.make_eval_step(model, "softmax", mesh)
    dataset = EvalSplit(20, seed=1)

    def evaluate(variables):
        state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"], None)
        out, _ = trainer.evaluate(eval_step, jax.device_put(state, partition.replicated(mesh)), dataset, 8, mesh)
        return {"loss": out["loss"], "auc": out["auc"]}

    bn_batches = [np.random.default_rng(s).normal(size=(16, 8, 8, 3)).astype(np.float32) for s in range(2)]
    return model, dict(va), dict(vb), evaluate, bn_batches


def test_a_solution_interpolated_with_itself_has_zero_barrier():
    model, va, _, evaluate, bn_batches = tiny_setup()
    out = interpolation.interpolate(
        va, va, evaluate, alphas=[0.0, 0.5, 1.0], batch_stats_fn=interpolation.BatchStatsRecomputer(model, bn_batches)
    )
    assert out["barrier"] == {"loss": 0.0, "auc": 0.0} and out["batch_stats"] == "recomputed"
    assert len({(p["loss"], p["auc"]) for p in out["path"]}) == 1


def test_interpolation_between_two_inits_recomputes_statistics_at_every_point():
    model, va, vb, evaluate, bn_batches = tiny_setup()
    seen = []
    recompute = interpolation.BatchStatsRecomputer(model, bn_batches)

    def spy(params, like):
        seen.append(params)
        return recompute(params, like)

    out = interpolation.interpolate(va, vb, evaluate, alphas=[0.0, 0.5, 1.0], batch_stats_fn=spy)
    assert len(seen) == 3 and out["barrier"]["loss"] >= 0.0
    kernel = lambda v: np.asarray(v["layer1"]["conv"]["kernel"])  # noqa: E731
    np.testing.assert_array_equal(kernel(seen[0]), kernel(va["params"]))  # endpoints exact
    np.testing.assert_array_equal(kernel(seen[2]), kernel(vb["params"]))
    np.testing.assert_allclose(kernel(seen[1]), (kernel(va["params"]) + kernel(vb["params"])) / 2, rtol=1e-6)


def test_reset_block_takes_exactly_that_blocks_params_and_statistics():
    _, va, vb, _, _ = tiny_setup()
    vb = {**vb, "batch_stats": jax.tree_util.tree_map(lambda s: s + 1.0, vb["batch_stats"])}  # unlike va's
    out = tree.flatten(resilience.reset_block(va, vb, "layer2"))
    fa, fb = tree.flatten(va), tree.flatten(vb)
    for key, value in out.items():
        expected = fb[key] if key.split("/")[1] == "layer2" else fa[key]
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected), err_msg=key)
    assert any(k.startswith("batch_stats/layer2/") for k in out)
    with pytest.raises(ValueError, match="Unknown block 'layer9'"):
        resilience.reset_block(va, vb, "layer9")


def test_criticality_is_the_change_from_the_unreset_model():
    """A closed-form 'evaluation': loss = sum of squares of each block's leaves, auc = 1 / (1 + loss)."""

    def evaluate(variables):
        loss = sum(float(np.sum(np.square(v))) for v in tree.flatten(variables).values())
        return {"loss": loss, "auc": 1 / (1 + loss)}

    final = {"params": {"a": {"w": np.array([3.0])}, "b": {"w": np.array([1.0, 1.0])}}}
    init = {"params": {"a": {"w": np.array([0.0])}, "b": {"w": np.array([2.0, 0.0])}}}
    out = resilience.reinit_resilience(final, init, evaluate, ["a", "b"])
    assert out["baseline"] == {"loss": 11.0, "auc": 1 / 12}
    assert out["per_block"]["a"] == {"loss": 2.0, "auc": 1 / 3, "auc_drop": 1 / 12 - 1 / 3, "loss_rise": -9.0}
    assert out["per_block"]["b"]["loss_rise"] == pytest.approx(2.0) and out["blocks"] == ["a", "b"]
    assert json.loads(json.dumps(out)) == out


def test_resilience_on_a_real_model_and_evaluator():
    """Resetting every block to the model's own value changes nothing; resetting to another init changes the loss."""
    _, va, vb, evaluate, _ = tiny_setup()
    same = resilience.reinit_resilience(va, va, evaluate, ["layer1", "layer2"])
    assert all(r["loss_rise"] == 0.0 and r["auc_drop"] == 0.0 for r in same["per_block"].values())
    other = resilience.reinit_resilience(va, vb, evaluate, ["layer1", "layer2"], reference_name="fresh draw")
    assert other["reference"] == "fresh draw"
    assert all(r["loss_rise"] != 0.0 for r in other["per_block"].values())


@pytest.mark.parametrize("name,size", [("resnet50", 32), ("inception_v3", 75), ("cbr_larget", 32)])
def test_every_batchnorm_of_every_family_has_a_known_momentum(name, size):
    """Traced only: the momentum read for BN recomputation covers every batch_stats leaf of each model family."""
    model = get_model(name, 2)
    x = jnp.zeros((2, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    momenta = interpolation._bn_momenta(model, variables, x)
    modules = {tuple(k.split("/")[1:-1]) for k in tree.flatten({"batch_stats": variables["batch_stats"]})}
    assert set(momenta) == modules and set(momenta.values()) == {0.9}
