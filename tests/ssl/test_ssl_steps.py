"""The SSL train step: BYOL's target is the exponential moving average of the online network and gets no gradient;
its momentum follows BYOL's cosine schedule; the step over 8 simulated devices equals the step on one (BatchNorm
statistics and SimCLR's negatives over the global batch); the encoder's unused task head never moves; the optimizer
decays and adapts kernels only."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ssl_helpers import batch, setup, tiny_config

from transfusion_jax import surgery
from transfusion_jax.ssl import steps
from transfusion_jax.train import partition
from transfusion_jax.train.steps import step_rng


def _host(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(tree))


@functools.cache
def _compiled(method: str, devices: int, **overrides):
    """(mesh, step, host copy of the step-0 state, net, target net) of the tiny setup, built once per module: the
    step donates its state, so each use starts from `_fresh`. `overrides`: 'a.b' config fields (dots as '__')."""
    mesh = partition.make_data_mesh(jax.devices()[:devices])
    config = tiny_config(method)
    for field, value in overrides.items():
        *parents, leaf = field.split("__")
        functools.reduce(getattr, parents, config)[leaf] = value
    step, state, net, target_net, _ = setup(config, mesh, num_steps=10, warmup=0)
    return mesh, step, jax.device_get(state), net, target_net


def _fresh(state, mesh):
    return jax.device_put(state, partition.replicated(mesh))


def test_byol_target_gets_no_gradient():
    _, _, state, net, target_net = _compiled("byol", 1)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 16, 16, 3)), jnp.float32)
    valid = jnp.ones(16, bool)

    def loss(params, target_params):
        return steps.byol_loss(net, target_net, params, state.batch_stats, target_params, state.target_batch_stats,
                               x, valid)[0]  # fmt: skip

    online_grads, target_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(state.params, state.target_params)
    assert all(not np.any(g) for g in jax.tree.leaves(target_grads))
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(online_grads)) > 1e-4  # the online network learns


@pytest.mark.parametrize("at_step", [0, 4, 9])
def test_byol_target_is_the_ema_of_the_updated_online_network(at_step):
    """After a step at index k of N: target' = tau_k target + (1 - tau_k) online' over the encoder and projector,
    tau_k = 1 - (1 - b) (cos(pi k / N) + 1) / 2 (computed here in float64); the predictor has no target. A low base
    momentum b and large AdamW steps make the updated online network far from the old one, so a target averaged with
    the old one would fail."""
    mesh, step, state, *_ = _compiled(
        "byol", 1, ssl__base_momentum=0.5, optimizer__name="adamw", optimizer__base_learning_rate=0.5
    )
    # a target different from the online network, as after some training
    state = state.replace(
        step=np.asarray(at_step, np.int32),
        target_params=jax.tree.map(lambda t: t + 0.1 * np.sign(t) + 0.01, state.target_params),
    )
    before, state_before = _host(state.target_params), state.params
    state = _fresh(state, mesh)
    new, metrics = step(state, batch(mesh), step_rng(0, at_step))
    tau = 1 - (1 - 0.5) * (np.cos(np.pi * at_step / 10) + 1) / 2
    assert float(metrics["momentum"]) == pytest.approx(tau, abs=1e-7)
    online, target = _host(new.params), _host(new.target_params)
    moved = max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(online), jax.tree.leaves(_host(state_before))))
    assert (1 - tau) * moved > 1e-5  # far beyond the tolerance below: the old online network gives another target
    assert set(target) == {"encoder", "projector"} and set(online) == {"encoder", "projector", "predictor"}
    expected = jax.tree.map(lambda t, o: tau * t + (1 - tau) * o, before, {k: online[k] for k in target})
    for got, want in zip(jax.tree.leaves(target), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(target)))


def test_byol_momentum_schedule():
    assert float(steps.byol_momentum(0.996, 0, 100)) == pytest.approx(0.996)
    assert float(steps.byol_momentum(0.996, 50, 100)) == pytest.approx(0.998)
    assert float(steps.byol_momentum(0.996, 100, 100)) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_step_on_eight_devices_equals_the_step_on_one(method):
    """The same global batch of 16 split over 8 devices (2 images each) or on one: the same loss, parameters and
    BatchNorm statistics, to float32 rounding. Per-device BatchNorm statistics or per-device negatives would give
    other numbers (2 images per device instead of 16)."""
    results = {}
    for n in (1, 8):
        mesh, step, state, *_ = _compiled(method, n)
        state = _fresh(state, mesh)
        for k in range(3):
            state, metrics = step(state, batch(mesh, seed=k), step_rng(0, k))
        results[n] = _host((metrics, state.params, state.batch_stats, state.target_params))
    for a, b in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[8]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_encoder_head_never_moves_and_only_kernels_decay():
    mesh, step, state, *_ = _compiled("simclr", 1, optimizer__weight_decay=0.5)  # large, so decay would show
    start = _host(state.params)
    state = _fresh(state, mesh)
    for k in range(3):
        state, _ = step(state, batch(mesh, seed=k), step_rng(0, k))
    end = _host(state.params)
    np.testing.assert_array_equal(end["encoder"]["head"]["kernel"], start["encoder"]["head"]["kernel"])
    np.testing.assert_array_equal(end["encoder"]["head"]["bias"], start["encoder"]["head"]["bias"])
    assert not np.allclose(end["encoder"]["layer1"]["conv"]["kernel"], start["encoder"]["layer1"]["conv"]["kernel"])
    mask = surgery.tree.flatten(surgery.mask(start, steps.KERNELS))
    assert mask["encoder/layer1/conv/kernel"] and mask["projector/dense1/kernel"]
    assert not mask["encoder/layer1/bn/scale"] and not mask["projector/dense1/bias"]


def test_unknown_method_and_optimizer_name_the_valid_ones():
    with pytest.raises(ValueError, match="choose one of simclr, byol"):
        steps.check_method("moco")
    config = tiny_config("simclr")
    config.optimizer.name = "sgd"
    with pytest.raises(ValueError, match="lars, adamw"):
        steps.make_optimizer(config, {"w": jnp.zeros(2)}, 10, 1)
