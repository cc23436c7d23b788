"""Many runs as one program: N stacked runs equal the same runs trained alone, and the grouping of run configs."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from fake_data import FakeDataset

from transfusion_jax.models.layers import ConvBN, global_avg_pool, max_pool
from transfusion_jax.train import multirun, partition, steps
from transfusion_jax.train import state as state_lib

STEPS = 3
SIZE = 8


class _TinyNet(nn.Module):
    """Two conv-BN-ReLU blocks, dropout and a head: block names as the CBRs', and randomness in the step."""

    @nn.compact
    def __call__(self, x, train):
        x = max_pool(ConvBN(4, (3, 3), name="layer1")(x, train), 2, 2)
        x = global_avg_pool(ConvBN(8, (3, 3), name="layer2")(x, train))
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(2, name="head")(x), {}


def _config(seed, freeze=(), learning_rate=1e-2, **optimizer):
    opt = dict(
        name="adam",
        learning_rate=learning_rate,
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
            seed=seed,
            init="random",
            freeze=tuple(freeze),
            num_train_steps=10,
            pretrained="",
            dtype="float32",
            mean_var_bn="mean_var",
            batch_size=16,
            model=dict(name="cbr_small", overrides=dict(widths=(4, 8))),
            optimizer=ml_collections.ConfigDict(opt),
        )
    )


# Three runs that differ in everything a group may vary: seed (init, data order, dropout), frozen blocks
# (a block, and a regex over parameter paths) and learning rate. Adam with active clipping and weight decay: the
# trickiest case for freezing by masks (the clipping norm must not see frozen gradients).
OPTIMIZERS = {
    "adam_clip_decay": dict(name="adam", grad_clip_norm=0.05, weight_decay=0.01, schedule="cosine", warmup_steps=1),
    "sgd_nesterov": dict(name="sgd", momentum=0.9, nesterov=True, weight_decay=0.01),
}
RUNS = [dict(seed=0), dict(seed=1, freeze=("layer1",), learning_rate=3e-2), dict(seed=2, freeze=(r"head/kernel",))]


def _train_alone(config, model, mesh, batches):
    state, tx, _ = state_lib.create_train_state(
        config, model, jax.random.key(config.seed), jnp.zeros((1, SIZE, SIZE, 3))
    )
    initial = jax.device_get(state)
    state = jax.device_put(state, partition.replicated(mesh))
    frozen_stats = state_lib.frozen_statistics(config, state.params, state.batch_stats)
    step = steps.make_train_step(model, tx, "softmax", mesh, frozen_stats=frozen_stats)
    metrics = []
    for t in range(STEPS):
        state, m = step(state, batches[t], steps.step_rng(config.seed, t))
        metrics.append(jax.device_get(m))
    return initial, jax.device_get(state), metrics


def _batches(mesh, seed):
    stream = FakeDataset(48, size=SIZE).batches(16, mesh=mesh, seed=seed)
    return [next(stream) for _ in range(STEPS)]


@pytest.mark.parametrize(
    "optimizer, shared_batch", [("adam_clip_decay", False), ("sgd_nesterov", True)], ids=["own_batches", "shared_batch"]
)
def test_stacked_runs_equal_runs_trained_alone(optimizer, shared_batch):
    mesh, model = partition.make_data_mesh(), _TinyNet()
    configs = [_config(**run, **OPTIMIZERS[optimizer]) for run in RUNS]
    batches = [_batches(mesh, 0 if shared_batch else c.seed) for c in configs]
    alone = [_train_alone(c, model, mesh, b) for c, b in zip(configs, batches)]

    group = multirun.RunGroup(configs, alone[0][0].params, alone[0][0].batch_stats)
    state = jax.device_put(group.stack([initial for initial, _, _ in alone]), partition.replicated(mesh))
    step = multirun.make_multi_train_step(model, group.tx, "softmax", mesh, shared_batch=shared_batch)
    for t in range(STEPS):
        state, metrics = step(state, batches[0][t] if shared_batch else [b[t] for b in batches], group.per_run)
        for i, (_, _, run_metrics) in enumerate(alone):
            np.testing.assert_allclose(metrics["loss"][i], run_metrics[t]["loss"], rtol=1e-5)
            np.testing.assert_allclose(metrics["grad_norm"][i], run_metrics[t]["grad_norm"], rtol=1e-5)

    state = jax.device_get(state)
    for i, (initial, final, _) in enumerate(alone):
        ours = group.unstack(state, i)
        chex.assert_trees_all_equal_structs(ours, final)  # checkpoints of a stacked run look like a lone run's
        chex.assert_trees_all_close(ours, final, rtol=1e-5, atol=1e-6)
        # and training did move what was not frozen (so the comparison above is not of untouched initial states)
        assert not np.allclose(ours.params["layer2"]["conv"]["kernel"], initial.params["layer2"]["conv"]["kernel"])
    frozen = group.unstack(state, 1)
    chex.assert_trees_all_equal(frozen.params["layer1"], alone[1][0].params["layer1"])
    chex.assert_trees_all_equal(frozen.batch_stats["layer1"], alone[1][0].batch_stats["layer1"])


def test_stack_then_unstack_gives_back_each_runs_state():
    model = _TinyNet()
    configs = [_config(**run, **OPTIMIZERS["adam_clip_decay"]) for run in RUNS]
    states = [
        jax.device_get(state_lib.create_train_state(c, model, jax.random.key(c.seed), jnp.zeros((1, 8, 8, 3)))[0])
        for c in configs
    ]
    # Non-zero optimizer moments, so the conversion of the frozen runs' multi_transform state is really exercised.
    states = [
        dataclasses.replace(s, opt_state=jax.tree.map(lambda x: x + 0.5 * (k + 1), s.opt_state))
        for k, s in enumerate(states)
    ]
    group = multirun.RunGroup(configs, states[0].params, states[0].batch_stats)
    stacked = group.stack(states)
    assert stacked.params["layer1"]["conv"]["kernel"].shape == (3, 3, 3, 3, 4)
    for i, state in enumerate(states):
        chex.assert_trees_all_equal_structs(group.unstack(stacked, i), state)
        chex.assert_trees_all_equal(group.unstack(stacked, i), state)


def test_stacked_eval_equals_each_runs_eval():
    mesh, model = partition.make_data_mesh(), _TinyNet()
    configs = [_config(seed=s) for s in range(3)]
    states = [
        state_lib.create_train_state(c, model, jax.random.key(c.seed), jnp.zeros((1, 8, 8, 3)))[0] for c in configs
    ]
    group = multirun.RunGroup(configs, states[0].params, states[0].batch_stats)
    stacked = jax.device_put(group.stack(states), partition.replicated(mesh))
    batch = next(FakeDataset(13, size=SIZE, train=False).batches(16, mesh=mesh))
    out = jax.device_get(multirun.make_multi_eval_step(model, "softmax", mesh)(stacked, batch))
    single = steps.make_eval_step(model, "softmax", mesh)
    for i, state in enumerate(states):
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], out),
            jax.device_get(single(jax.device_put(state, partition.replicated(mesh)), batch)),
            rtol=1e-5,
            atol=1e-6,
        )


def test_group_runs_by_program():
    configs = [
        _config(0),
        _config(1, freeze=("layer1",), learning_rate=0.1),  # differs in per-run fields only
        _config(0, b1=0.8),  # another optimizer hyperparameter: another program
        _config(2),
        _config(3),
    ]
    configs[1].init, configs[1].pretrained, configs[1].mean_var_bn = "transfer", "a.npz", "copy"
    configs[4].model.overrides.widths = (4, 16)  # another architecture
    assert multirun.group_runs(configs) == [[0, 1, 3], [2], [4]]
    assert multirun.group_runs(configs, max_runs_per_program=2) == [[0, 1], [3], [2], [4]]
    with pytest.raises(ValueError, match=r"optimizer\.b1: 0\.9 vs 0\.8"):
        multirun.RunGroup([configs[0], configs[2]], {}, {})
    with pytest.raises(ValueError, match="max_runs_per_program"):
        multirun.group_runs(configs, max_runs_per_program=-1)
