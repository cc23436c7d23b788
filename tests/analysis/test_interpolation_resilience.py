"""Linear interpolation (barrier against closed forms, BN statistics recomputed at every point) and
re-initialisation resilience (exact block resets, criticality arithmetic, a real model and evaluator)."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from transfusion_jax.analysis import interpolation, resilience
from transfusion_jax.models import get_model
from transfusion_jax.surgery import tree
from transfusion_jax.train import batch_stats, partition, steps, trainer
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
        va, va, evaluate, alphas=[0.0, 0.5, 1.0], batch_stats_fn=batch_stats.BatchStatsRecomputer(model, bn_batches)
    )
    assert out["barrier"] == {"loss": 0.0, "auc": 0.0} and out["batch_stats"] == "recomputed"
    assert len({(p["loss"], p["auc"]) for p in out["path"]}) == 1


def test_interpolation_between_two_inits_recomputes_statistics_at_every_point():
    model, va, vb, evaluate, bn_batches = tiny_setup()
    seen = []
    recompute = batch_stats.BatchStatsRecomputer(model, bn_batches)

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
