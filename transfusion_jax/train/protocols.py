"""Fine-tuning protocols (`config.finetune`), built on optax masks: which blocks train, when, and how fast.

  protocol='full'           every block trains (the paper's fine-tuning).
  protocol='linear_probe'   only the head trains: a linear classifier on frozen features.
  protocol='lp_ft'          linear probe for `probe_steps` steps, then full fine-tuning (Kumar et al., ICLR 2022).
  protocol='surgical'       only the blocks in `surgical_blocks` and the head train (Lee et al., ICLR 2023).
  layer_decay=d < 1         layer-wise learning-rate decay: block i of n (bottom to top, `block_names(model)`) learns
                            at d^(n - i) times the rate, the head at 1x, as timm's `param_groups_layer_decay` (used by
                            BEiT, MAE and RETFound) with one layer per block. Combines with full, lp_ft and surgical.

Choices:
  * A block a protocol freezes is a fixed function: no update (optax.set_to_zero through `surgery.freeze`) and it
    runs in eval mode in the train step, its BatchNorm normalising with its running statistics and leaving them
    unchanged (`eval_mode`). So a linear probe trains on exactly the features it is evaluated on, as a probe fitted to
    features extracted in eval mode would. (Blocks frozen through `config.freeze` keep the older rule: no update,
    statistics fixed, batch statistics in the forward pass.)
  * The head always trains. Lee et al. fine-tune a source model on the same label space, whose head is already
    trained; here the head is new and random, so a surgical run trains `surgical_blocks` plus the head.
  * LP-FT's switch: the backbone gets a fresh optimizer state at step `probe_steps`, as Kumar et al. start fine-tuning
    with a new optimizer: its optimizer is wrapped in `optax.transforms.conditionally_mask`, which returns zero
    updates and leaves the inner state (moments, schedule count) untouched until its own step counter reaches
    `probe_steps`, so the backbone's schedule (the fine-tuning phase's, over the steps after the switch:
    `state.make_optimizer`) starts at the switch. The head keeps its optimizer state across the switch and follows
    the probe's schedule, then the same fine-tuning schedule. The counter lives in the optimizer state,
    which is checkpointed with the run, so a resumed run switches at exactly the same step; the train step runs the
    backbone in eval mode before the switch and in train mode after (`StepsByPhase`).
  * Gradient clipping (`optimizer.grad_clip_norm`) under LP-FT clips the head's and the backbone's gradients
    separately (each group has its own optimizer chain).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections
import optax

from transfusion_jax import models, surgery
from transfusion_jax.models.layers import ConvBN

PROTOCOLS = ("full", "linear_probe", "lp_ft", "surgical")


# config.finetune's fields and defaults (config_lib.base_config holds the same); a config without the field is 'full'.
DEFAULTS = {"protocol": "full", "probe_steps": 0, "surgical_blocks": (), "layer_decay": 1.0}


def _finetune(config) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({**DEFAULTS, **dict(config.get("finetune") or {})})


def _blocks(config) -> tuple[str, ...]:
    return models.block_names(config.model.name, **dict(config.model.overrides))


def validate(config, params: Mapping) -> None:
    """Raises, naming the field and the valid choices, on any `config.finetune` setting that cannot run."""
    ft, blocks = _finetune(config), _blocks(config)
    if ft.protocol not in PROTOCOLS:
        raise ValueError(f"Unknown config.finetune.protocol {ft.protocol!r}; choose one of {', '.join(PROTOCOLS)}.")
    if not 0.0 < ft.layer_decay <= 1.0:
        raise ValueError(f"config.finetune.layer_decay must be in (0, 1] (1 = off), got {ft.layer_decay}.")
    if ft.protocol == "linear_probe" and ft.layer_decay != 1.0:
        raise ValueError(
            "config.finetune.layer_decay has no effect with protocol 'linear_probe' (only the head trains)."
        )
    if ft.protocol == "lp_ft" and not 0 < ft.probe_steps < config.num_train_steps:
        raise ValueError(
            f"protocol 'lp_ft' needs 0 < config.finetune.probe_steps < num_train_steps ({config.num_train_steps}), "
            f"got probe_steps={ft.probe_steps}."
        )
    if ft.protocol != "lp_ft" and ft.probe_steps:
        raise ValueError(f"config.finetune.probe_steps={ft.probe_steps} is only used by protocol 'lp_ft'.")
    surgical = list(ft.surgical_blocks)
    if ft.protocol == "surgical":
        bad = [b for b in surgical if b not in blocks]
        if not surgical or bad:
            raise ValueError(
                f"protocol 'surgical' needs config.finetune.surgical_blocks, a non-empty list of the model's blocks "
                f"{', '.join(blocks)}; got {surgical}."
            )
    elif surgical:
        raise ValueError(f"config.finetune.surgical_blocks={surgical} is only used by protocol 'surgical'.")
    unknown = [name for name in params if name not in blocks and name not in models.HEAD_NAMES]
    if unknown and (ft.protocol != "full" or ft.layer_decay != 1.0):  # the protocols address blocks by name
        raise ValueError(f"Parameter blocks {unknown} are neither the model's blocks {blocks} nor heads.")


def frozen_at(config, params: Mapping, step: int) -> tuple[str, ...]:
    """Blocks the protocol freezes at train step `step` (0-based): they get no update and run in eval mode."""
    ft = _finetune(config)
    backbone = tuple(name for name in params if name not in models.HEAD_NAMES)
    if ft.protocol == "linear_probe" or (ft.protocol == "lp_ft" and step < ft.probe_steps):
        return backbone
    if ft.protocol == "surgical":
        return tuple(name for name in backbone if name not in ft.surgical_blocks)
    return ()


def layer_scales(config, params: Mapping) -> dict[str, float]:
    """Learning-rate multiplier per top-level block: decay^(n - i) for block i of n, 1 for the heads."""
    blocks, decay = _blocks(config), _finetune(config).layer_decay
    return {name: 1.0 if name in models.HEAD_NAMES else decay ** (len(blocks) - blocks.index(name)) for name in params}


def _by_block(params: Mapping, label_of: Callable[[str], str]):
    """A params-shaped tree of optax labels: each leaf labelled `label_of(its top-level block)`."""
    return jax.tree_util.tree_map_with_path(lambda path, _: label_of(path[0].key), dict(params))


def probe_steps(config) -> int:
    """LP-FT's probe length (its fine-tuning starts at this step); 0 for every other protocol."""
    ft = _finetune(config)
    return int(ft.probe_steps) if ft.protocol == "lp_ft" else 0


def finetune_optimizer(
    config, tx: optax.GradientTransformation, params: Mapping, backbone_tx: optax.GradientTransformation | None = None
) -> optax.GradientTransformation:
    """`tx` (the configured optimizer for every parameter) shaped by `config.finetune` (see the module docstring).
    LP-FT: `backbone_tx` (default `tx`) is the backbone's optimizer from the switch on, `tx` the head's."""
    validate(config, params)
    ft = _finetune(config)
    backbone_tx = tx if backbone_tx is None else backbone_tx
    if ft.layer_decay != 1.0:
        scales = layer_scales(config, params)
        labels = _by_block(params, lambda name: name)
        decay = optax.multi_transform({n: optax.scale(s) for n, s in scales.items()}, labels)
        tx, backbone_tx = optax.chain(tx, decay), optax.chain(backbone_tx, decay)
    if ft.protocol in ("linear_probe", "surgical"):
        return surgery.freeze(tx, params, list(frozen_at(config, params, 0)))
    if ft.protocol == "lp_ft":
        labels = _by_block(params, lambda name: "head" if name in models.HEAD_NAMES else "backbone")
        switch = int(ft.probe_steps)
        backbone = optax.transforms.conditionally_mask(backbone_tx, lambda count: count >= switch)
        return optax.multi_transform({"head": tx, "backbone": backbone}, labels)
    return tx


@contextlib.contextmanager
def eval_mode(blocks: Sequence[str]):
    """Within this context, model calls run every conv-BN unit under a top-level block in `blocks` in eval mode.

    Flax's method interception: each `ConvBN.__call__(x, train)` under such a block is called with train=False. A
    BatchNorm under such a block that is not inside a ConvBN would escape this, so it raises instead.
    """
    blocks = frozenset(blocks)

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        inside = bool(module.path) and module.path[0] in blocks
        if inside and context.method_name == "__call__":
            if isinstance(module, ConvBN):
                if "train" in kwargs:
                    return next_fun(*args, **{**kwargs, "train": False})
                return next_fun(args[0], False, *args[2:], **kwargs)
            if isinstance(module, nn.BatchNorm) and False in (
                module.use_running_average,
                kwargs.get("use_running_average"),
            ):
                raise ValueError(
                    f"BatchNorm {'/'.join(module.path)} of frozen block {module.path[0]!r} runs in train mode outside "
                    "a ConvBN; eval_mode cannot switch it. Build the model's BatchNorms through models.layers.ConvBN."
                )
        return next_fun(*args, **kwargs)

    if not blocks:
        yield
        return
    with nn.intercept_methods(intercept):
        yield


class StepsByPhase:
    """step -> the jitted train step for that step's frozen blocks; one compile per distinct phase (LP-FT: two)."""

    def __init__(self, config, params: Mapping, make_step: Callable[..., Callable]):
        self._config, self._params, self._make = config, params, make_step
        self._steps: dict[tuple[str, ...], Callable] = {}

    def __call__(self, step: int) -> Callable:
        frozen = frozen_at(self._config, self._params, step)
        if frozen not in self._steps:
            self._steps[frozen] = self._make(eval_blocks=frozen)
        return self._steps[frozen]
