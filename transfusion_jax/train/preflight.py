"""What a run resolves and checks before step 1, so that a bad run fails in seconds with a named error instead of
training for hours on wrong input or "succeeding" with a meaningless number.

`resolve(config)` returns a copy with the derived fields filled in (the normalisation the checkpoint's weights
expect) and rejects contradictory settings; `check_run(config, datasets)` opens every split the run will use.
"""

import logging
import math

import ml_collections
import numpy as np

from transfusion_jax import data as data_lib
from transfusion_jax import models, pretrained
from transfusion_jax.data import pipeline, preprocess
from transfusion_jax.train import config_lib
from transfusion_jax.train import state as state_lib


class ConfigError(ValueError):
    """A config that cannot give a meaningful run; the message names the field(s) and what to do."""


def resolve(config) -> ml_collections.ConfigDict:
    """A copy of `config` with `data.normalization` taken from the checkpoint; contradictions raise ConfigError."""
    config = config.copy_and_resolve_references()
    if "eval_split" in config:
        raise ConfigError(
            "config.eval_split is gone: set config.val_split (checkpoint selection, early stopping, every 'best') "
            "and config.test_split (reported at the validation-selected and the final step, never used to choose)."
        )
    check_splits(config)
    check_unused_fields(config)
    with config.unlocked():
        config.data.normalization = resolve_normalization(config)
    return config


def _unused_training_fields(config) -> list[str]:
    """Training fields set away from their defaults that this run would not read (see `check_unused_fields`)."""
    default, out = config_lib.base_config(), []
    opt, opt_default = config.optimizer, default.optimizer
    unread = {"adam": ("momentum", "nesterov"), "adamw": ("momentum", "nesterov"), "sgd": ("b1", "b2", "eps")}
    unread = unread.get(opt.name, ())
    out += [f"config.optimizer.{f} is not read by optimizer {opt.name!r}" for f in unread if opt[f] != opt_default[f]]
    if config.mean_var_bn != default.mean_var_bn and "mean_var" not in config.init:
        out.append(f"config.mean_var_bn is only read by Mean-Var inits, not init={config.init!r}")
    if config.aux_loss_weight and not dict(config.model.overrides).get("aux_logits"):
        out.append("config.aux_loss_weight needs a model with an auxiliary head (inception_v3 with aux_logits=True)")
    if config.eval_steps and config.eval_every_steps != default.eval_every_steps:
        out.append("config.eval_every_steps is not read when config.eval_steps lists the evaluation steps")
    if not config.val_split:
        out += [f"config.{f} is only read with a validation split (config.val_split)"
                for f in ("early_stopping_evals", "relative_threshold") if config[f] != default[f]]  # fmt: skip
    return out


def check_unused_fields(config) -> None:
    """A field set away from its default that the run would not read is an error before any work (it would be
    recorded in config.json as if it had been used), e.g. `data.root` for generated data."""
    found = data_lib.unused_fields(config.data) + _unused_training_fields(config)
    if found:
        hint = (
            " This is a ',local' config: it trains on generated data and a stand-in checkpoint; drop ',local' to use "
            "real data."
            if config.get("runlocal")
            else ""
        )
        raise ConfigError("Config fields this run would not use: " + "; ".join(found) + "." + hint)


def check_splits(config) -> None:
    """Selection must never see the test set: train, validation and test are different splits."""
    if not config.train_split:
        raise ConfigError("config.train_split is empty.")
    if not (config.val_split or config.test_split):
        raise ConfigError("config.val_split and config.test_split are both empty: the run would never be evaluated.")
    named = {"train_split": config.train_split, "val_split": config.val_split, "test_split": config.test_split}
    names = [k for k, v in named.items() if v]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if named[a] == named[b]:
                raise ConfigError(
                    f"config.{a} and config.{b} are both {named[a]!r}: selection, training and the reported test "
                    f"numbers need separate splits (e.g. CheXpert: train 'train[:95%]', validation 'train[95%:]', "
                    f"test 'valid')."
                )


def resolve_normalization(config) -> str:
    """The input normalisation preset of the run.

    With a checkpoint (`config.pretrained`, whatever the init scheme, so random and transfer runs of one sweep see
    the same inputs) it is the preset recorded in the checkpoint's metadata; an explicit, different
    `config.data.normalization` is refused naming both. Without one: the configured preset, or the default."""
    explicit = config.data.normalization
    if explicit:
        data_lib.get_normalization(explicit)  # an unknown name raises listing the valid ones
    if not config.pretrained:
        return explicit or pipeline.DEFAULT_NORMALIZATION
    record = pretrained.read_metadata(state_lib.checkpoint_path(config, config.pretrained)).get("preprocessing") or {}
    recorded = record.get("name")
    if not recorded:
        if explicit:
            return explicit
        raise ConfigError(
            f"The checkpoint {config.pretrained} records no preprocessing: set config.data.normalization to the "
            f"preset its weights were trained with (one of {sorted(preprocess.PRESETS)})."
        )
    preset = data_lib.get_normalization(recorded)
    for field in ("mean", "std", "scale", "channel_order"):  # converted checkpoints also spell out the numbers
        if field in record and not _same(record[field], getattr(preset, field)):
            raise ConfigError(
                f"The checkpoint {config.pretrained} records preprocessing {recorded!r} with {field}="
                f"{record[field]!r}, but this code's preset {recorded!r} has {getattr(preset, field)!r}."
            )
    if explicit and explicit != recorded:
        raise ConfigError(
            f"config.data.normalization={explicit!r} but the checkpoint {config.pretrained} expects {recorded!r} "
            f"input (its metadata). Leave config.data.normalization='' to use the checkpoint's."
        )
    if not explicit:
        logging.info("Input normalisation %r, from the checkpoint %s.", recorded, config.pretrained)
    return recorded


def _same(a, b) -> bool:
    if isinstance(b, str):
        return a == b
    return bool(np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-9, atol=0))


def num_train_steps(config, train_examples: int) -> int:
    """config.num_train_steps, or ceil(num_train_epochs x examples / batch) when num_train_epochs > 0."""
    if config.num_train_epochs < 0 or config.num_train_steps <= 0:
        raise ConfigError(
            f"config.num_train_steps must be > 0 and config.num_train_epochs >= 0, got {config.num_train_steps} "
            f"and {config.num_train_epochs}."
        )
    if not config.num_train_epochs:
        return config.num_train_steps
    return math.ceil(config.num_train_epochs * train_examples / config.batch_size)


def eval_steps(config) -> frozenset:
    """The steps after which the run evaluates: config.eval_steps (each in 1..num_train_steps) or every
    eval_every_steps; the last step always (the final numbers). Call after num_train_steps is resolved."""
    last = config.num_train_steps
    if config.eval_steps:
        steps = [int(s) for s in config.eval_steps]
        bad = [s for s in steps if not 1 <= s <= last]
        if bad:
            raise ConfigError(f"config.eval_steps must lie in 1..num_train_steps ({last}); got {bad[:5]}.")
        return frozenset(steps) | {last}
    if config.eval_every_steps <= 0:
        raise ConfigError(
            f"config.eval_every_steps must be > 0 (or give config.eval_steps), got {config.eval_every_steps}."
        )
    return frozenset(range(config.eval_every_steps, last + 1, config.eval_every_steps)) | {last}


def check_input_size(config) -> None:
    """An input too small for the architecture (a feature map of size 0) fails here, naming the smallest."""
    size = data_lib.image_size(config)
    overrides = dict(config.model.overrides)
    if not models.fits_input(config.model.name, size, **overrides):
        smallest = models.min_input_size(config.model.name, **overrides)
        raise ConfigError(
            f"config.data.image_size={size} is too small for {config.model.name}"
            f"{' ' + str(overrides) if overrides else ''}: its smallest input is {smallest}x{smallest} px "
            f"(below that a feature map has size 0)."
        )


def _auc_defined(dataset) -> bool:
    """Whether the split holds both classes for at least one of the AUCs the task reports."""
    targets, masks = np.asarray(dataset.targets), np.asarray(dataset.masks)
    if dataset.task.loss == "softmax":
        present = np.unique(targets)
        return len(present) >= 2 and (dataset.task.num_outputs > 2 or 1 in present)
    known = masks > 0
    return any(len(np.unique(targets[known[:, k], k])) == 2 for k in range(targets.shape[1]))


def check_run(config, train_ds, eval_sets: dict) -> None:
    """Before step 1: input size vs. architecture; every split opens, its files exist and its first image decodes
    (`Dataset.check`); evaluation splits can give an AUC and share the training task; no example is in two splits."""
    check_input_size(config)
    train_ds.check()
    for role, ds in eval_sets.items():
        ds.check()
        if ds.task.label_names != train_ds.task.label_names:
            raise ConfigError(f"The {role} split's task {ds.task} differs from the training split's {train_ds.task}.")
        if not _auc_defined(ds):
            raise ConfigError(
                f"The {role} split ({ds.name}, {len(ds)} examples) has only one class for every label, so its AUC is "
                f"undefined; choose a larger or different split."
            )
    named = {"train": train_ds, **eval_sets}
    ids = {role: set(ds.example_ids()) for role, ds in named.items()}
    roles = list(ids)
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            shared = ids[a] & ids[b]
            if shared:
                raise ConfigError(
                    f"{len(shared)} examples are in both the {a} split ({named[a].name}) and the {b} split "
                    f"({named[b].name}), e.g. {sorted(shared)[:3]}: the splits must be disjoint."
                )
