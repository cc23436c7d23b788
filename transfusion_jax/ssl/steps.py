"""State, optimizer and the jitted step of self-supervised pretraining (SimCLR, BYOL).

The step is one `jax.jit` over the ('data',) mesh, as the supervised one (train/steps.py): state replicated and
donated, the batch of images split over 'data'. It makes both views of every image (views.two_views), runs them
through the network as one batch of 2B (BatchNorm statistics over all 2B views of the global batch), takes the loss
over the global batch (SimCLR's negatives come from every device) and updates. BYOL then moves its target network
towards the updated online network by the step's momentum.
"""

import functools
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from transfusion_jax import surgery
from transfusion_jax.ssl import losses, views
from transfusion_jax.ssl.nets import MLP, SSLNet
from transfusion_jax.train import partition
from transfusion_jax.train import state as state_lib

METHODS = ("simclr", "byol")
OPTIMIZERS = ("lars", "adamw")
# The encoder's task head (and Inception's auxiliary one) is never read by the objectives: no gradient reaches it.
# It is kept out of the optimizer, so weight decay leaves it at its init, and zeroed on export.
ENCODER_HEADS = r"encoder/(head|aux_logits)/.*"
# Weight decay and LARS's trust ratio apply to kernels only, not to biases or BatchNorm (SimCLR's and BYOL's rule).
KERNELS = state_lib.KERNELS


@flax.struct.dataclass
class SSLState:
    """Everything a step changes. target_params / target_batch_stats: BYOL's target network (encoder and projector,
    no predictor); empty dicts for SimCLR."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    target_params: Any
    target_batch_stats: Any


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown self-supervised method {method!r}; choose one of {', '.join(METHODS)}.")


def build_nets(config, encoder, feature_dim: int) -> tuple[SSLNet, SSLNet | None]:
    """(online network, BYOL's target network or None) around `encoder`, whose FEATURE has `feature_dim` channels,
    sized by config.ssl (a projector hidden_dim of 0 is the feature width, SimCLR's choice)."""
    method = config.ssl.method
    check_method(method)
    dtype = state_lib.compute_dtype(config.dtype)
    hidden = config.ssl.projector.hidden_dim or feature_dim
    projector = MLP(hidden, config.ssl.projector.out_dim, dtype=dtype)
    if method == "simclr":
        return SSLNet(encoder, projector), None
    predictor = MLP(config.ssl.predictor.hidden_dim, config.ssl.projector.out_dim, dtype=dtype)
    return SSLNet(encoder, projector, predictor), SSLNet(encoder, projector)


def byol_momentum(base: float, step, num_steps: int):
    """BYOL's target momentum at `step` (0-based) of `num_steps`: 1 - (1 - base) (cos(pi step / num_steps) + 1) / 2,
    from `base` at the start to 1 at the end."""
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * step / num_steps) + 1.0) / 2.0


def schedule(learning_rate: float, warmup_steps: int, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then cosine decay to 0 (SimCLR, BYOL)."""
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, max(num_steps, warmup_steps + 1))


def learning_rate(config) -> float:
    """config.optimizer.base_learning_rate x batch_size / 256: SimCLR's and BYOL's linear scaling."""
    return config.optimizer.base_learning_rate * config.batch_size / 256


def make_optimizer(config, params, num_steps: int, warmup_steps: int):
    """(optimizer, schedule): LARS (SimCLR's and BYOL's; optax.lars) or AdamW on the warmup + cosine schedule,
    weight decay and LARS's adaptation on kernels only, the encoder's unused task head frozen."""
    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"config.optimizer.name must be one of {', '.join(OPTIMIZERS)}, got {opt.name!r}.")
    lr = schedule(learning_rate(config), warmup_steps, num_steps)
    kernels = functools.partial(surgery.mask, take=KERNELS)
    if opt.name == "lars":
        tx = optax.lars(
            lr,
            weight_decay=opt.weight_decay,
            weight_decay_mask=kernels,
            trust_coefficient=opt.trust_coefficient,
            trust_ratio_mask=kernels,
            momentum=opt.momentum,
        )
    else:
        tx = optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=kernels)
    if opt.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    return surgery.freeze(tx, params, [ENCODER_HEADS]), lr


def init_state(net: SSLNet, target_net, tx, variables: dict) -> SSLState:
    """Step-0 state from the online network's variables; BYOL's target starts as a copy of the online encoder and
    projector (BYOL's initialisation)."""
    params, stats = variables["params"], variables.get("batch_stats", {})
    target_params, target_stats = {}, {}
    if target_net is not None:
        target_params = {k: v for k, v in params.items() if k != "predictor"}
        target_stats = {k: v for k, v in stats.items() if k != "predictor"}
    copy = functools.partial(jax.tree.map, jnp.array)  # own buffers: the state is donated to the step
    return SSLState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=stats,
        opt_state=jax.jit(tx.init)(params),
        target_params=copy(target_params),
        target_batch_stats=copy(target_stats),
    )


def _forward(net, params, batch_stats, x):
    (z, p), new = net.apply({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
    return z, p, new["batch_stats"]


def _pairs(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Rows 2i, 2i + 1 (the two views of example i) -> (first views [B, D], second views [B, D])."""
    pairs = x.reshape((-1, 2) + x.shape[1:])
    return pairs[:, 0], pairs[:, 1]


def simclr_loss(net, temperature, params, batch_stats, x, valid):
    """(loss, (new batch_stats, metrics)) of SimCLR on the interleaved views `x` [2B, ...] of the examples whose
    `valid` [B] is True."""
    z, _, new_stats = _forward(net, params, batch_stats, x)
    loss, metrics = losses.nt_xent(*_pairs(z), temperature, valid)
    return loss, (new_stats, {**metrics, "projection_std": losses.projection_std(_pairs(z)[0], valid)})


def byol_loss(net, target_net, params, batch_stats, target_params, target_batch_stats, x, valid):
    """(loss, (new batch_stats, new target batch_stats, metrics)) of BYOL on the interleaved views `x` [2B, ...] of
    the examples whose `valid` [B] is True."""
    z, p, new_stats = _forward(net, params, batch_stats, x)
    t, _, new_target_stats = _forward(target_net, target_params, target_batch_stats, x)
    loss = losses.byol(*_pairs(p), *_pairs(t), valid)
    return loss, (new_stats, new_target_stats, {"projection_std": losses.projection_std(_pairs(z)[0], valid)})


def _train_step(net, target_net, tx, view_config, normalization, mesh, config_ssl, num_steps, state, batch, rng):
    x = views.two_views(view_config, normalization, mesh, rng, batch["image"])
    valid = batch["valid"]
    if target_net is None:
        loss_fn = functools.partial(simclr_loss, net, config_ssl["temperature"])
        (loss, (stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, x, valid
        )
        target_params, target_stats = state.target_params, state.target_batch_stats
    else:
        loss_fn = functools.partial(byol_loss, net, target_net)
        (loss, (stats, target_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, state.target_params, state.target_batch_stats, x, valid
        )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if target_net is not None:  # the target follows the updated online network (BYOL's order)
        tau = byol_momentum(config_ssl["base_momentum"], state.step, num_steps)
        online = {k: params[k] for k in state.target_params}
        target_params = jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, state.target_params, online)
        metrics = {**metrics, "momentum": tau}
    new_state = SSLState(
        step=state.step + 1,
        params=params,
        batch_stats=stats,
        opt_state=opt_state,
        target_params=target_params,
        target_batch_stats=target_stats,
    )
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}


def make_train_step(config, net, target_net, tx, view_config, normalization, mesh, num_steps: int):
    """jit(state, batch, rng) -> (state, metrics): state replicated and donated, the batch {'image': [B, S, S, C] in
    0..1, 'valid': [B] bool} split over 'data'. `rng` draws the views (train.steps.step_rng: a function of the seed
    and the step)."""
    if num_steps < 1 or not math.isfinite(config.ssl.temperature) or config.ssl.temperature <= 0:
        raise ValueError(f"num_steps ({num_steps}) must be >= 1 and config.ssl.temperature > 0.")
    ssl_numbers = {"temperature": float(config.ssl.temperature), "base_momentum": float(config.ssl.base_momentum)}
    step = functools.partial(_train_step, net, target_net, tx, view_config, normalization, mesh, ssl_numbers, num_steps)
    rep, data = partition.replicated(mesh), partition.data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=0)
