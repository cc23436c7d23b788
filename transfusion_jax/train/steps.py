"""The jitted train and eval steps. Pure functions of (state, batch); sharding is given at jit time."""

import functools

import jax
import jax.numpy as jnp

from transfusion_jax.models import AUX_OUTPUT
from transfusion_jax.train import losses, partition, protocols
from transfusion_jax.train.state import TrainState


def loss_and_grads(model, loss_kind, aux_loss_weight, eval_blocks, state: TrainState, batch, rng):
    """(loss, BatchNorm statistics after the batch, gradients of the loss): the part of a train step before the
    optimizer, shared by this single-run step and the many-runs step (transfusion_jax.train.multirun)."""

    def loss_fn(params):
        with protocols.eval_mode(eval_blocks):  # blocks a fine-tuning protocol freezes run as fixed functions
            (logits, _), new_vars = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["image"],
                train=True,
                mutable=["batch_stats", "intermediates"],
                rngs={"dropout": rng},
            )
        loss = losses.mean_loss(loss_kind, logits, batch)
        aux = new_vars.get("intermediates", {}).get(AUX_OUTPUT)
        if aux is not None and aux_loss_weight:
            loss = loss + aux_loss_weight * losses.mean_loss(loss_kind, aux[0], batch)
        return loss, new_vars["batch_stats"]

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loss, new_stats, grads


def global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(tree)))


def _train_step(model, tx, loss_kind, frozen_stats, aux_loss_weight, eval_blocks, state: TrainState, batch, rng):
    loss, new_stats, grads = loss_and_grads(model, loss_kind, aux_loss_weight, eval_blocks, state, batch, rng)
    # Frozen BatchNorms keep their running statistics too: a frozen block is a fixed function.
    if frozen_stats is not None:
        new_stats = jax.tree.map(
            lambda fixed, old, new: old if fixed else new, frozen_stats, state.batch_stats, new_stats
        )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree_util.tree_map(jnp.add, state.params, updates)
    new_state = TrainState(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state)
    return new_state, {"loss": loss, "grad_norm": global_norm(grads)}


def make_train_step(
    model, tx, loss_kind: str, mesh, *, frozen_stats=None, aux_loss_weight: float = 0.0, eval_blocks=()
):
    """jit(state, batch, rng) -> (state, metrics): state replicated and donated, batch split over 'data'.

    frozen_stats: None, or a batch_stats-shaped tree of bools (`state.frozen_statistics`) marking the BatchNorm
    statistics that stay fixed (config.freeze); eval_blocks: blocks that run in eval mode (`protocols.eval_mode`),
    as the fine-tuning protocols freeze them."""
    step = functools.partial(_train_step, model, tx, loss_kind, frozen_stats, aux_loss_weight, tuple(eval_blocks))
    rep, data = partition.replicated(mesh), partition.data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=0)


def eval_outputs(model, loss_kind, state: TrainState, batch):
    """Per-example logits (float32; metrics rank and calibrate them on the host in float64) and the batch's loss
    (sum, count) in eval mode: the body of the eval step."""
    logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False)
    loss_sum, loss_count = losses.loss_terms(loss_kind, logits, batch)
    return {"logits": logits.astype(jnp.float32), "loss_sum": loss_sum, "loss_count": loss_count}


def make_eval_step(model, loss_kind: str, mesh):
    """jit(state, batch) -> per-example logits (kept sharded) and the batch's loss sum and count."""
    rep, data = partition.replicated(mesh), partition.data_sharded(mesh)
    return jax.jit(
        functools.partial(eval_outputs, model, loss_kind),
        in_shardings=(rep, data),
        out_shardings={"logits": data, "loss_sum": rep, "loss_count": rep},
    )


def step_rng(seed: int, step: int):
    """RNG of one step from (seed, step) only, so a resumed run draws exactly what an unbroken one would."""
    return jax.random.fold_in(jax.random.key(seed), step)
