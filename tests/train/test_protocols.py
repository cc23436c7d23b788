"""Fine-tuning protocols: updates against optax run by hand, frozen blocks as fixed functions in the train step,
and an LP-FT run that resumes across its switch exactly."""

import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from fake_data import FakeDataset, route_build_dataset

from transfusion_jax import models
from transfusion_jax.train import config_lib, losses, partition, protocols, steps, trainer
from transfusion_jax.train import state as state_lib


def _config(protocol="full", **finetune):
    c = config_lib.base_config()
    c.model.name = "cbr_small"
    c.model.overrides.widths = (4, 8)
    c.num_train_steps = 10
    c.finetune.protocol = protocol
    c.finetune.update(finetune)
    return c


PARAMS = {
    "layer1": {"conv": {"kernel": np.full((3, 3, 3, 4), 0.5, np.float32)}, "bn": {"scale": np.ones(4, np.float32)}},
    "layer2": {"conv": {"kernel": np.full((3, 3, 4, 8), 0.5, np.float32)}},
    "head": {"kernel": np.full((8, 2), 0.5, np.float32), "bias": np.zeros(2, np.float32)},
}


def grads_like(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)


def run(tx, params, num_steps):
    """Updates of `num_steps` steps, each with its own gradients (seed = step)."""
    state, out = tx.init(params), []
    for step in range(num_steps):
        updates, state = tx.update(grads_like(params, step), state, params)
        out.append(updates)
    return out


def block(tree, name):
    return jax.tree_util.tree_leaves(tree[name])


def test_lp_ft_backbone_starts_a_fresh_optimizer_at_the_switch():
    """Adam lr 0.01, probe_steps 3: the head's updates are plain Adam's from step 0; the backbone's are zero for
    steps 0-2, then exactly those of a new Adam fed the gradients from step 3 on."""
    config = _config("lp_ft", probe_steps=3)
    adam = optax.adam(0.01)
    ours = run(protocols.finetune_optimizer(config, adam, PARAMS), PARAMS, 6)
    head_ref = run(adam, {"head": PARAMS["head"]}, 6)
    fresh, fresh_state = optax.adam(0.01), None
    backbone = {k: PARAMS[k] for k in ("layer1", "layer2")}
    fresh_state = fresh.init(backbone)
    for step, updates in enumerate(ours):
        for a, b in zip(block(updates, "head"), block(head_ref[step], "head")):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)  # lax.cond vs eager: float32 rounding
        got = {k: updates[k] for k in ("layer1", "layer2")}
        if step < 3:
            assert all(not np.any(u) for u in jax.tree_util.tree_leaves(got)), step
        else:
            g = grads_like(PARAMS, step)
            expected, fresh_state = fresh.update({k: g[k] for k in backbone}, fresh_state, backbone)
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    # The first backbone step of a fresh Adam is -lr * g / (|g| + eps): about 0.01 in size, not a stale Adam's 0.005.
    assert np.abs(ours[3]["layer2"]["conv"]["kernel"]).mean() == pytest.approx(0.01, rel=1e-3)


def _warmup_cosine(k: int, length: int, warmup: int, lr: float) -> float:
    """Closed form of the configured schedule at step k of a phase of `length` steps."""
    if k < warmup:
        return lr * k / warmup
    return lr * 0.5 * (1 + np.cos(np.pi * min(k - warmup, length - warmup) / (length - warmup)))


def test_lp_ft_schedules_start_with_their_phase():
    """Plain SGD, warmup 2 + cosine, 10 steps, probe_steps 4: every update is -lr * g, so the learning rate each
    step applies is read off it. The head follows warmup + cosine over the 4 probe steps, then warmup + cosine over
    the 6 fine-tuning steps; the backbone is still for 4 steps, then follows that same fine-tuning schedule from its
    start (not from step 4 of a schedule counted since step 0). The logged schedule is the head's."""
    config = _config("lp_ft", probe_steps=4)
    config.optimizer.update(name="sgd", momentum=0.0, schedule="cosine", warmup_steps=2, learning_rate=1.0)
    tx, logged = state_lib.make_optimizer(config, PARAMS)
    grads = jax.tree_util.tree_map(np.ones_like, PARAMS)
    opt_state = tx.init(PARAMS)
    for step in range(config.num_train_steps):
        updates, opt_state = tx.update(grads, opt_state, PARAMS)
        if step < 4:
            head, backbone = _warmup_cosine(step, 4, 2, 1.0), 0.0
        else:
            head = backbone = _warmup_cosine(step - 4, 6, 2, 1.0)
        for name, lr in (("head", head), ("layer1", backbone), ("layer2", backbone)):
            for leaf in block(updates, name):
                np.testing.assert_allclose(leaf, -lr, atol=1e-6, err_msg=f"{name} {step}")
        assert float(logged(step)) == pytest.approx(head, abs=1e-6)


def test_layer_decay_scales_each_blocks_learning_rate():
    """SGD lr 0.1, decay 0.5 over blocks (layer1, layer2): updates -0.1 g x 0.25, 0.5 and 1 (head)."""
    config = _config(layer_decay=0.5)
    assert protocols.layer_scales(config, PARAMS) == {"layer1": 0.25, "layer2": 0.5, "head": 1.0}
    (updates,) = run(protocols.finetune_optimizer(config, optax.sgd(0.1), PARAMS), PARAMS, 1)
    g = grads_like(PARAMS, 0)
    for name, scale in (("layer1", 0.25), ("layer2", 0.5), ("head", 1.0)):
        for u, gi in zip(block(updates, name), block(g, name)):
            np.testing.assert_allclose(u, -0.1 * scale * gi, rtol=1e-6)


@pytest.mark.parametrize(
    "protocol,extra,trained",
    [("linear_probe", {}, {"head"}), ("surgical", {"surgical_blocks": ("layer1",)}, {"layer1", "head"})],
)
def test_frozen_blocks_get_no_update(protocol, extra, trained):
    config = _config(protocol, **extra)
    for updates in run(protocols.finetune_optimizer(config, optax.adam(0.01), PARAMS), PARAMS, 2):
        for name in PARAMS:
            moved = any(np.any(u) for u in block(updates, name))
            assert moved == (name in trained), name
    assert set(protocols.frozen_at(config, PARAMS, 0)) == set(PARAMS) - trained


@pytest.mark.parametrize(
    "finetune,match",
    [
        ({"protocol": "lp-ft"}, "Unknown config.finetune.protocol 'lp-ft'"),
        ({"protocol": "lp_ft"}, "0 < config.finetune.probe_steps < num_train_steps"),
        ({"protocol": "lp_ft", "probe_steps": 10}, "probe_steps < num_train_steps"),
        ({"protocol": "surgical"}, "non-empty list of the model's blocks layer1, layer2"),
        ({"protocol": "surgical", "surgical_blocks": ("block1",)}, "got \\['block1'\\]"),
        ({"surgical_blocks": ("layer1",)}, "only used by protocol 'surgical'"),
        ({"probe_steps": 3}, "only used by protocol 'lp_ft'"),
        ({"layer_decay": 0.0}, "layer_decay must be in \\(0, 1\\]"),
        ({"protocol": "linear_probe", "layer_decay": 0.7}, "no effect with protocol 'linear_probe'"),
    ],
)
def test_bad_settings_raise_before_training(finetune, match):
    config = _config(**finetune)
    with pytest.raises(ValueError, match=match):
        state_lib.make_optimizer(config, PARAMS)


# ----- the train step ---------------------------------------------------------------------------------------------


def _state_with_stale_statistics(config, model):
    """Init variables whose BN running statistics are far from any batch's, so eval and train mode differ."""
    state, tx, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    stats = jax.tree_util.tree_map(lambda s: s + 0.7, state.batch_stats)
    return state.replace(batch_stats=stats), tx


def test_linear_probe_trains_the_head_on_eval_mode_features():
    """The probe's training loss is the loss of the model in eval mode, and no block changes, statistics included."""
    mesh = partition.make_data_mesh()
    config = _config("linear_probe")
    model = models.get_model("cbr_small", 2, widths=(4, 8))
    state, tx = _state_with_stale_statistics(config, model)
    data = FakeDataset(16, size=8, seed=3)
    batch_np = {"image": data.images, "label": data.labels, "label_mask": data.masks, "valid": np.ones(16, bool)}
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    eval_loss = losses.mean_loss("softmax", model.apply(variables, data.images, train=False)[0], batch_np)
    train_logits = model.apply(variables, data.images, train=True, mutable=["batch_stats"])[0][0]
    assert abs(float(losses.mean_loss("softmax", train_logits, batch_np)) - float(eval_loss)) > 1e-2

    step = protocols.StepsByPhase(
        config,
        state.params,
        lambda eval_blocks: steps.make_train_step(model, tx, "softmax", mesh, eval_blocks=eval_blocks),
    )(0)
    batch = {k: jax.device_put(v, partition.data_sharded(mesh)) for k, v in batch_np.items()}
    before = jax.device_get(state)  # the step donates its input state
    new, metrics = step(jax.device_put(state, partition.replicated(mesh)), batch, steps.step_rng(0, 0))
    np.testing.assert_allclose(float(metrics["loss"]), float(eval_loss), rtol=1e-5)
    new, state = jax.device_get(new), before
    for name in ("layer1", "layer2"):
        for a, b in zip(block(new.params, name), block(state.params, name)):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(new.batch_stats), jax.tree_util.tree_leaves(state.batch_stats)):
        np.testing.assert_array_equal(a, b)
    assert np.any(np.asarray(new.params["head"]["kernel"]) != np.asarray(state.params["head"]["kernel"]))


class BareBN(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        return nn.Dense(2, name="head")(x.reshape(len(x), -1)), {}


def test_eval_mode_refuses_a_batchnorm_it_cannot_switch():
    model = BareBN()
    variables = model.init(jax.random.key(0), jnp.ones((2, 3)), train=False)
    with pytest.raises(ValueError, match="outside a ConvBN"), protocols.eval_mode(["bn"]):
        model.apply(variables, jnp.ones((2, 3)), train=True, mutable=["batch_stats"])


# ----- a whole LP-FT run ------------------------------------------------------------------------------------------


@pytest.fixture
def fake_data(monkeypatch):
    route_build_dataset(monkeypatch)


def _lp_ft_config():
    c = _config("lp_ft", probe_steps=6)
    c.update(batch_size=16, num_train_steps=12, log_every_steps=4, eval_every_steps=4, checkpoint_every_steps=4)
    c.update(keep_checkpoints=10, progress_bar=False, auc_threshold=0.8)
    c.data.image_size = 8  # what FakeDataset makes
    c.optimizer.learning_rate = 0.01
    return c


def _checkpoint(workdir, step):
    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "latest", str(step), "default"))


def test_lp_ft_run_freezes_then_trains_the_backbone_and_resumes_exactly_across_the_switch(fake_data, tmp_path):
    config = _lp_ft_config()
    unbroken = str(tmp_path / "unbroken")
    trainer.train_and_evaluate(config, unbroken)
    model = models.get_model("cbr_small", 2, widths=(4, 8))
    initial, _, _ = state_lib.create_train_state(config, model, jax.random.key(config.seed), jnp.zeros((1, 8, 8, 3)))
    at4, at8, final = (_checkpoint(unbroken, s) for s in (4, 8, 12))
    for name in ("layer1", "layer2"):  # a fixed function during the probe: weights and statistics
        for a, b in zip(block(at4["params"], name), block(initial.params, name)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(block(at4["batch_stats"], name), block(initial.batch_stats, name)):
            np.testing.assert_array_equal(a, b)
        assert any(np.any(a != b) for a, b in zip(block(at8["params"], name), block(initial.params, name)))
    assert np.any(np.asarray(at4["params"]["head"]["kernel"]) != np.asarray(initial.params["head"]["kernel"]))
    # Killed after the checkpoint at step 4 (before the switch at 6) or at step 8 (after it): resumes to the same end.
    for kept in (4, 8):
        resumed = str(tmp_path / f"resumed_{kept}")
        shutil.copytree(unbroken, resumed)
        for later in range(kept + 4, 13, 4):
            shutil.rmtree(os.path.join(resumed, "checkpoints", "latest", str(later)))
        trainer.train_and_evaluate(config, resumed)
        for a, b in zip(jax.tree_util.tree_leaves(_checkpoint(resumed, 12)), jax.tree_util.tree_leaves(final)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,size", [("resnet50", 32), ("inception_v3", 75), ("cbr_larget", 32)])
def test_eval_mode_reaches_every_batchnorm_of_every_family(name, size):
    """Traced only (no compile): under eval_mode(all blocks), every BatchNorm of a train-mode call uses its running
    statistics; without it, none does."""
    model = models.get_model(name, 2)
    x = jnp.zeros((2, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            seen.append(context.module.use_running_average)
        return next_fun(*args, **kwargs)

    def trace():
        with nn.intercept_methods(record):
            jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables)

    with protocols.eval_mode(models.block_names(name)):
        trace()
    n_bn = len(jax.tree_util.tree_leaves(variables["batch_stats"])) // 2  # mean and var per BatchNorm
    assert len(seen) == n_bn > 0 and all(seen)
    seen.clear()
    trace()
    assert len(seen) == n_bn and not any(seen)


@pytest.mark.parametrize(
    "name,size,blocks",
    [
        ("resnet50", 32, ("conv1", "block1", "block2", "block3", "block4")),
        ("inception_v3", 75, ("stem", "mixed_5", "mixed_6", "mixed_7")),
        ("cbr_tiny", 32, ("layer1", "layer2", "layer3", "layer4")),
    ],
)
def test_layer_decay_depths_of_every_family(name, size, blocks):
    """Block i of n (bottom to top, written out by hand) at 0.5^(n - i), the head at 1, on each family's real tree."""
    config = _config(layer_decay=0.5)
    config.model.name, config.model.overrides = name, ml_collections.ConfigDict()
    model = models.get_model(name, 2)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))["params"]
    expected = {b: 0.5 ** (len(blocks) - i) for i, b in enumerate(blocks)} | {"head": 1.0}
    assert protocols.layer_scales(config, params) == expected
    protocols.validate(config, params)
