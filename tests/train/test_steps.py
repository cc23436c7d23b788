"""The data-parallel step: 8-device sharding gives the single-device result; freezing and weight decay."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from fake_data import FakeDataset
from sklearn.metrics import roc_auc_score

from transfusion_jax import models
from transfusion_jax.train import losses, partition, steps, trainer
from transfusion_jax.train import metrics as metrics_lib
from transfusion_jax.train import state as state_lib


def _config(**optimizer):
    opt = dict(
        name="sgd",
        learning_rate=0.1,
        momentum=0.9,
        nesterov=False,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        schedule="constant",
        warmup_steps=0,
        grad_clip_norm=0.0,
    )
    opt.update(optimizer)
    return ml_collections.ConfigDict(
        dict(
            init="random",
            freeze=(),
            num_train_steps=10,
            pretrained="",
            dtype="float32",
            mean_var_bn="mean_var",
            model=dict(name="cbr_small", overrides=dict(widths=(4, 8))),
            optimizer=ml_collections.ConfigDict(opt),
        )
    )


def _model():
    return models.get_model("cbr_small", 2, widths=(4, 8))


def _state_after_one_step(mesh, config, batch_np, model):
    state, tx, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    frozen_stats = state_lib.frozen_statistics(config, state.params, state.batch_stats)
    state = jax.device_put(state, partition.replicated(mesh))
    batch = {k: jax.device_put(v, partition.data_sharded(mesh)) for k, v in batch_np.items()}
    step = steps.make_train_step(model, tx, "softmax", mesh, frozen_stats=frozen_stats)
    new_state, metrics = step(state, batch, steps.step_rng(0, 0))
    return jax.device_get(new_state), jax.device_get(metrics)


def _numpy_batch(n=16):
    ds = FakeDataset(n, size=8)
    return {"image": ds.images, "label": ds.labels, "label_mask": ds.masks, "valid": np.ones(n, bool)}


@pytest.fixture(scope="module")
def one_step():
    """The same first step on a 1-device and on the 8-device mesh, from the same initial state."""
    batch, model, config = _numpy_batch(), _model(), _config()
    state0, _, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    one = _state_after_one_step(partition.make_data_mesh(jax.devices()[:1]), config, batch, model)
    eight = _state_after_one_step(partition.make_data_mesh(), config, batch, model)
    return batch, jax.device_get(state0), one, eight


def test_eight_device_step_equals_single_device_step(one_step):
    assert jax.device_count() == 8
    _, _, (one, m1), (eight, m8) = one_step
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-6)
    for a, b in zip(
        jax.tree_util.tree_leaves((one.params, one.batch_stats)),
        jax.tree_util.tree_leaves((eight.params, eight.batch_stats)),
    ):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_batch_stats_use_global_batch(one_step):
    """BN running mean after one step = 0.9 * 0 + 0.1 * (mean of layer1's conv output over all 16 examples),
    computed here in float64 from the initial kernel: a per-device mean would differ."""
    batch, state0, _, (after, _) = one_step
    kernel = np.asarray(state0.params["layer1"]["conv"]["kernel"], np.float64)  # [k, k, 3, C]
    k, (h, w) = kernel.shape[0], batch["image"].shape[1:3]
    padded = np.pad(batch["image"].astype(np.float64), ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    conv = sum(padded[:, dy : dy + h, dx : dx + w, :] @ kernel[dy, dx] for dy in range(k) for dx in range(k))
    expected = 0.1 * conv.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(after.batch_stats["layer1"]["bn"]["mean"], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "freeze",
    [("layer1",), (r"layer1/.*",), (r"layer1/conv/kernel", r"layer1/bn/(scale|bias)")],
    ids=["block name", "regex over the block", "regexes naming each parameter"],
)
def test_frozen_blocks_keep_params_and_statistics(freeze):
    """However layer1 is selected (its name or regexes over its parameters), its parameters and its BN running
    statistics stay exactly as they were; layer2's move."""
    batch, model = _numpy_batch(), _model()
    config = _config()
    config.freeze = freeze
    state0, _, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    after, _ = _state_after_one_step(partition.make_data_mesh(), config, batch, model)
    for before, now in zip(
        jax.tree_util.tree_leaves((state0.params["layer1"], state0.batch_stats["layer1"])),
        jax.tree_util.tree_leaves((after.params["layer1"], after.batch_stats["layer1"])),
    ):
        np.testing.assert_array_equal(before, now)
    assert not np.allclose(state0.params["layer2"]["conv"]["kernel"], after.params["layer2"]["conv"]["kernel"])
    assert not np.allclose(state0.batch_stats["layer2"]["bn"]["mean"], after.batch_stats["layer2"]["bn"]["mean"])


def test_a_batchnorm_with_a_trainable_parameter_keeps_updating_its_statistics():
    """Freezing layer1's conv and BN scale but not its BN bias leaves a trainable BatchNorm: its statistics move."""
    batch, model = _numpy_batch(), _model()
    config = _config()
    config.freeze = (r"layer1/conv/kernel", r"layer1/bn/scale")
    state0, _, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    after, _ = _state_after_one_step(partition.make_data_mesh(), config, batch, model)
    np.testing.assert_array_equal(state0.params["layer1"]["bn"]["scale"], after.params["layer1"]["bn"]["scale"])
    assert not np.allclose(state0.params["layer1"]["bn"]["bias"], after.params["layer1"]["bn"]["bias"])
    assert not np.allclose(state0.batch_stats["layer1"]["bn"]["mean"], after.batch_stats["layer1"]["bn"]["mean"])


def test_freeze_of_unknown_block_is_named():
    config = _config()
    config.freeze = ("block9",)
    params = {"layer1": {"w": jnp.zeros(1)}, "head": {"w": jnp.zeros(1)}}
    with pytest.raises(ValueError, match="block9"):
        state_lib.make_optimizer(config, params)


def test_weight_decay_touches_kernels_only():
    """Plain SGD (no momentum) with zero gradients: update = -lr * wd * kernel, and zero for biases/BN."""
    config = _config(momentum=0.0, weight_decay=0.01, learning_rate=0.5)
    params = {
        "layer1": {"conv": {"kernel": jnp.full((2, 2), 3.0)}, "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)}},
        "head": {"kernel": jnp.full((2,), -2.0), "bias": jnp.ones(2)},
    }
    tx, _ = state_lib.make_optimizer(config, params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["layer1"]["conv"]["kernel"], -0.5 * 0.01 * 3.0)
    np.testing.assert_allclose(updates["head"]["kernel"], -0.5 * 0.01 * -2.0)
    for leaf in (updates["layer1"]["bn"]["scale"], updates["layer1"]["bn"]["bias"], updates["head"]["bias"]):
        np.testing.assert_array_equal(leaf, 0.0)


def test_adam_first_step_matches_closed_form():
    """Adam's first update is -lr * g / (|g| + eps) elementwise (bias-corrected moments equal g and g^2)."""
    config = _config(name="adam", learning_rate=1e-3)
    params = {"head": {"kernel": jnp.array([1.0, -2.0, 3.0])}}
    grads = {"head": {"kernel": jnp.array([0.5, -4.0, 1e-3])}}
    tx, _ = state_lib.make_optimizer(config, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    g = np.array([0.5, -4.0, 1e-3])
    np.testing.assert_allclose(updates["head"]["kernel"], -1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-5)


def test_warmup_cosine_schedule():
    config = _config(schedule="cosine", warmup_steps=10, learning_rate=1.0)
    config.num_train_steps = 110
    _, lr = state_lib.make_optimizer(config, {"head": {"kernel": jnp.zeros(2)}})
    assert float(lr(5)) == pytest.approx(0.5)
    assert float(lr(10)) == pytest.approx(1.0)
    assert float(lr(60)) == pytest.approx(0.5 * (1 + np.cos(np.pi * 50 / 100)))


def test_the_returned_schedule_is_the_one_the_optimizer_follows():
    """Plain SGD: each update is -lr(step) * g, with lr the schedule make_optimizer returns (and the trainer logs)."""
    config = _config(momentum=0.0, schedule="cosine", warmup_steps=3, learning_rate=0.5)
    params = {"head": {"kernel": jnp.ones(2)}}
    tx, schedule = state_lib.make_optimizer(config, params)
    opt_state, grads = tx.init(params), {"head": {"kernel": jnp.full(2, 2.0)}}
    for step in range(config.num_train_steps):
        updates, opt_state = tx.update(grads, opt_state, params)
        np.testing.assert_allclose(updates["head"]["kernel"], -2.0 * float(schedule(step)), rtol=1e-6)
    assert len({round(float(schedule(s)), 6) for s in range(config.num_train_steps)}) > 5  # it does vary


def test_eval_counts_every_example_once_on_odd_sizes():
    """13 examples, global batch 8 on 8 devices: 2 batches, the last padded; loss and AUC over exactly 13."""
    model = _model()
    config = _config()
    mesh = partition.make_data_mesh()
    for loss in ("softmax", "sigmoid"):
        ds = FakeDataset(13, size=8, loss=loss, num_outputs=2 if loss == "softmax" else 3, train=False, seed=5)
        model = models.get_model("cbr_small", ds.task.num_outputs, widths=(4, 8))
        state, _, _ = state_lib.create_train_state(config, model, jax.random.key(1), jnp.zeros((1, 8, 8, 3)))
        state = jax.device_put(state, partition.replicated(mesh))
        out, outputs = trainer.evaluate(steps.make_eval_step(model, loss, mesh), state, ds, 8, mesh, calibration_bins=4)
        logits = np.asarray(
            model.apply({"params": state.params, "batch_stats": state.batch_stats}, ds.images, train=False)[0],
            np.float64,
        )
        assert out["num_examples"] == 13
        np.testing.assert_array_equal(outputs["label"], ds.labels)  # the per-example outputs, in example order
        assert list(outputs["id"]) == ds.example_ids() and outputs["logits"].shape == (13, ds.task.num_outputs)
        if loss == "softmax":
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            expected_loss = -np.log(p[np.arange(13), ds.labels]).mean()
            assert out["auc"] == pytest.approx(roc_auc_score(ds.labels, p[:, 1]), abs=1e-6)
            expected_ace = {"c1": metrics_lib.calibration_bins(p[:, 1], ds.labels == 1, 4, "quantile")["error"]}
            top = metrics_lib.calibration_bins(p.max(1), p.argmax(1) == ds.labels, 4)["error"]
            expected_ece = {"top_label": top}
        else:
            p = 1 / (1 + np.exp(-logits))
            bce = -(ds.labels * np.log(p) + (1 - ds.labels) * np.log(1 - p))
            expected_loss = (bce * ds.masks).sum() / ds.masks.sum()
            for c in range(3):
                keep = ds.masks[:, c] > 0
                assert out[f"auc/c{c}"] == pytest.approx(roc_auc_score(ds.labels[keep, c], p[keep, c]), abs=1e-6)
            known = [(p[ds.masks[:, c] > 0, c], ds.labels[ds.masks[:, c] > 0, c]) for c in range(3)]
            expected_ace = {
                f"c{c}": metrics_lib.calibration_bins(q, y, 4, "quantile")["error"] for c, (q, y) in enumerate(known)
            }
            expected_ece = {
                f"c{c}": metrics_lib.calibration_bins(np.maximum(q, 1 - q), (q > 0.5) == (y > 0.5), 4)["error"]
                for c, (q, y) in enumerate(known)
            }
        assert out["loss"] == pytest.approx(expected_loss, rel=1e-5)
        assert {k: out[f"ece/{k}"] for k in expected_ece} == pytest.approx(expected_ece, abs=1e-6)
        assert {k: out[f"ace/{k}"] for k in expected_ace} == pytest.approx(expected_ace, abs=1e-6)
        decision = "top_label" if loss == "softmax" else "c1"
        assert sum(out["reliability"][decision]["count"]) == (13 if loss == "softmax" else int(ds.masks[:, 1].sum()))


def test_bfloat16_compute_keeps_float32_params():
    config = _config()
    config.dtype = "bfloat16"
    model = state_lib.build_model(config, 2)
    after, metrics = _state_after_one_step(partition.make_data_mesh(), config, _numpy_batch(), model)
    assert np.isfinite(metrics["loss"])
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves((after.params, after.batch_stats))} == {
        np.dtype(np.float32)
    }


def test_distributed_mode_and_batch_size_checks(monkeypatch):
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert partition.maybe_initialize_distributed("auto") is False  # single host: nothing to start
    assert partition.maybe_initialize_distributed("false") is False
    with pytest.raises(ValueError, match="maybe"):
        partition.maybe_initialize_distributed("maybe")
    with pytest.raises(ValueError, match="divisible by the 8 devices"):
        partition.check_batch_size(12, partition.make_data_mesh())


class _NetWithAuxHead(nn.Module):
    """A CBR whose 'auxiliary head' (sown like Inception-v3's) outputs twice its logits, so both losses differ."""

    def setup(self):
        self.body = models.get_model("cbr_small", 2, widths=(4, 8))

    def __call__(self, x, train):
        logits, features = self.body(x, train)
        if train:
            self.sow("intermediates", models.AUX_OUTPUT, 2.0 * logits)
        return logits, features


@pytest.mark.parametrize("aux_weight", [0.0, 0.4])
def test_aux_head_loss_is_added_with_its_weight(aux_weight):
    mesh = partition.make_data_mesh()
    model = _NetWithAuxHead()
    config = _config()
    batch_np = _numpy_batch()
    state, tx, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    (logits, _), _ = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        batch_np["image"],
        train=True,
        mutable=["batch_stats", "intermediates"],
    )
    expected = losses.mean_loss("softmax", logits, batch_np) + aux_weight * losses.mean_loss(
        "softmax", 2.0 * logits, batch_np
    )
    state = jax.device_put(state, partition.replicated(mesh))
    batch = {k: jax.device_put(v, partition.data_sharded(mesh)) for k, v in batch_np.items()}
    step = steps.make_train_step(model, tx, "softmax", mesh, aux_loss_weight=aux_weight)
    _, metrics = step(state, batch, steps.step_rng(0, 0))
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5)
