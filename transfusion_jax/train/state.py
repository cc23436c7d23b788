"""Train state, model variables and the optimizer: the single place where init schemes and freezing meet training.

`init_variables`, `make_optimizer` and `frozen_statistics` are the only functions that know about
transfusion_jax.surgery, so the rest of the training code stays the same whatever the init scheme.
"""

import functools
import logging
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from transfusion_jax import models, pretrained, surgery
from transfusion_jax.train import protocols


@flax.struct.dataclass
class TrainState:
    """Everything a step changes; a pytree, so it is jitted, donated, sharded and checkpointed as one."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def compute_dtype(name: str):
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if name not in dtypes:
        raise ValueError(f"config.dtype must be one of {sorted(dtypes)}, got {name!r}.")
    return dtypes[name]


def build_model(config, num_outputs: int) -> nn.Module:
    """The configured architecture with `num_outputs` logits (from the dataset's task) in `config.dtype`."""
    return models.get_model(
        config.model.name, num_outputs, dtype=compute_dtype(config.dtype), **dict(config.model.overrides)
    )


@functools.partial(jax.jit, static_argnums=0)
def _init(model, rng, sample_input):
    return model.init(rng, sample_input, train=False)


def random_variables(model, rng, sample_input) -> dict[str, Any]:
    """{'params', 'batch_stats'} of `model` freshly initialised: one init program per architecture and input shape,
    traced once per process (Flax modules compare and hash by their fields, so every run's own, equal model shares
    it: a study's 80 runs otherwise spent ~0.5 s each tracing it again)."""
    try:
        hash(model)
    except TypeError:  # a module with an unhashable field: its own program
        variables = jax.jit(lambda r, x: model.init(r, x, train=False))(rng, sample_input)
    else:
        variables = _init(model, rng, sample_input)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def checkpoint_path(config, path: str) -> str:
    """`path`, or for the name pretrained.STAND_IN (',local' configs) the cached random stand-in checkpoint this
    model can load (made on first use)."""
    if path != pretrained.STAND_IN:
        return path
    name = config.model.name
    source = surgery.SLIM_SOURCE if name == surgery.SLIM_MODEL else name
    return pretrained.stand_in.path(source, dict(config.model.overrides))


def _checkpoint_loader(config):
    """pretrained.load, with the name pretrained.STAND_IN resolved at run time (`checkpoint_path`)."""
    return lambda path: pretrained.load(checkpoint_path(config, path))


def init_variables(config, model: nn.Module, rng, sample_input) -> dict[str, Any]:
    """{'params', 'batch_stats'} for `config.init` ('random' | 'transfer' | 'mean_var' |
    'transfusion:<block>[+mean_var]' | 'gabor' | 'slim'), applied by transfusion_jax.surgery to fresh random
    variables; logs where each block came from.
    """
    init_rng, scheme_rng = jax.random.split(rng)
    fresh = random_variables(model, init_rng, sample_input)
    variables, provenance = surgery.initialize(
        config.init,
        config.model.name,
        fresh,
        rng=scheme_rng,
        pretrained=config.pretrained or None,
        mean_var_bn=config.mean_var_bn,
        model_overrides=dict(config.model.overrides),
        loader=_checkpoint_loader(config),
    )
    logging.info("init %r:\n%s", config.init, surgery.summary(variables, provenance))
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def _schedule(config, num_steps: int) -> optax.Schedule:
    """Step -> learning rate over `num_steps` steps: constant (the paper names no schedule) or cosine decay, after
    optional linear warmup."""
    opt_config = config.optimizer
    lr = opt_config.learning_rate
    warmup = opt_config.warmup_steps
    if opt_config.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif opt_config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(num_steps - warmup, 1))
    else:
        raise ValueError(f"config.optimizer.schedule must be 'constant' or 'cosine', got {opt_config.schedule!r}.")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


# Weight decay applies to conv/dense kernels only, not to biases, BatchNorm/LayerNorm scales and offsets, or a ViT's
# class token and position embeddings (timm's and big_vision's no-decay sets).
KERNELS = surgery.matcher(regex=r"(.*/)?kernel")


def _base_optimizer(opt_config, schedule):
    if opt_config.name == "adam":
        return optax.adam(schedule, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps)
    if opt_config.name == "adamw":  # decoupled decay (Loshchilov & Hutter), scaled by the schedule: the ViT recipe
        return optax.adamw(
            schedule,
            b1=opt_config.b1,
            b2=opt_config.b2,
            eps=opt_config.eps,
            weight_decay=opt_config.weight_decay,
            mask=lambda p: surgery.mask(p, KERNELS),
        )
    if opt_config.name == "sgd":
        return optax.sgd(schedule, momentum=opt_config.momentum or None, nesterov=opt_config.nesterov)
    raise ValueError(f"config.optimizer.name must be 'adam', 'adamw' or 'sgd', got {opt_config.name!r}.")


def make_optimizer(config, params) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, its learning-rate schedule) from `config.optimizer`: L2 weight decay on kernels (added to the
    gradient, the TF-slim regulariser convention; AdamW decays them decoupled instead), optional global-norm clipping,
    Adam, AdamW or SGD(momentum) on the schedule, shaped by the fine-tuning protocol (`config.finetune`,
    train/protocols.py); the blocks (or name regexes) in `config.freeze` get zero updates (surgery.freeze). The
    trainer logs the same schedule it optimises with (the head's, under LP-FT).

    LP-FT has two phases, each with the configured schedule over its own length: the probe (the head only, steps
    0..probe_steps-1) and fine-tuning (every parameter, from step probe_steps to the end), as Kumar et al. start
    fine-tuning with a new optimizer; the backbone's schedule counts from the switch, not from step 0."""
    opt_config = config.optimizer

    def chain(schedule):
        parts = []
        if opt_config.grad_clip_norm > 0:
            parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
        if opt_config.weight_decay > 0 and opt_config.name != "adamw":
            parts.append(optax.add_decayed_weights(opt_config.weight_decay, mask=lambda p: surgery.mask(p, KERNELS)))
        parts.append(_base_optimizer(opt_config, schedule))
        return optax.chain(*parts)

    probe_steps = protocols.probe_steps(config)
    if probe_steps:
        fine_tune = _schedule(config, config.num_train_steps - probe_steps)
        schedule = optax.join_schedules([_schedule(config, probe_steps), fine_tune], [probe_steps])
        tx = protocols.finetune_optimizer(config, chain(schedule), params, backbone_tx=chain(fine_tune))
    else:
        schedule = _schedule(config, config.num_train_steps)
        tx = protocols.finetune_optimizer(config, chain(schedule), params)  # config.finetune: which blocks, when
    return surgery.freeze(tx, params, list(config.freeze)), schedule


def frozen_statistics(config, params, batch_stats):
    """batch_stats-shaped bools: the BatchNorm statistics `config.freeze` fixes along with their parameters, or
    None when nothing is frozen."""
    if not config.freeze:
        return None
    return surgery.frozen_statistics(params, batch_stats, list(config.freeze))


def abstract_train_state(config, model, sample_input) -> tuple[TrainState, optax.GradientTransformation]:
    """(the step-0 state as shapes and dtypes, optimizer) of a randomly initialised run: what lowering a train step
    needs, without drawing or compiling anything."""
    variables = jax.eval_shape(lambda r: random_variables(model, r, sample_input), jax.random.key(0))
    tx, _ = make_optimizer(config, variables["params"])
    state = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=jax.eval_shape(tx.init, variables["params"]),
    )
    return state, tx


def create_train_state(config, model, rng, sample_input):
    """(step-0 state, optimizer, learning-rate schedule). Host-side values; the trainer places them on the mesh."""
    variables = init_variables(config, model, rng, sample_input)
    tx, schedule = make_optimizer(config, variables["params"])
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=jax.jit(tx.init)(variables["params"]),
    )
    return state, tx, schedule
