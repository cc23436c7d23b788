"""The experiment config every configs/*.py file starts from, the `,local` shrink, and command-line overrides.

Building a config only sets fields: nothing here reads or writes files. What a `,local` config names (generated
data, a stand-in checkpoint) is made by the data and pretrained layers when the run reads it.

Fields (override any with `--config.<field>=...`):
  model.name, model.overrides   architecture (transfusion_jax.models registry) and constructor overrides
  seed, data_order_seed         init, dropout and data-order seed; data_order_seed >= 0 gives the data order its own
                                seed (runs sharing it see the same batches: a paired design), -1 = seed
  dtype                         compute dtype, 'float32' or 'bfloat16' (params stay float32)
  init, pretrained, freeze      init scheme ('random' | 'transfer' | 'mean_var' | 'transfusion:<block>[+mean_var]' |
                                'gabor' | 'slim'), pretrained checkpoint path, blocks to freeze
  init_bn_batches               BatchNorm statistics at step 0 from this many training batches in train mode (16)
  finetune                      protocol full|linear_probe|lp_ft|surgical, probe_steps, surgical_blocks, layer_decay
  data                          transfusion_jax.data.default_data_config()
  optimizer                     name adam|sgd, learning_rate, momentum, schedule, weight_decay (kernels only), ...
  train_split, val_split, test_split   training; selection (best checkpoint, early stopping, every "best");
                                reporting only (test AUC at the validation-selected step and at the final step)
  batch_size, num_train_steps, eval_every_steps, checkpoint_every_steps, keep_checkpoints, log_every_steps
  keep_best_checkpoint          False: no checkpoints/best (the selected step is still recorded); for many short runs
                                that only need their final weights, where saving every new best costs more than a step
  eval_steps                    explicit evaluation steps (replace eval_every_steps when given; the last is added)
  num_train_epochs              > 0: training length in passes over the training split (sets num_train_steps)
  early_stopping_evals          > 0: stop after this many evaluations without a better validation AUC
  auc_threshold                 the paper's convergence measure: first eval step with AUC > this (0.91)
  relative_threshold            also steps to AUC > this x the run's own final validation AUC (0.95)
  calibration_bins              bins of eval's calibration errors: ECE (equal width, top label) and ACE (equal mass)
"""

import re
from collections.abc import Iterable, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from transfusion_jax import data as data_lib
from transfusion_jax.pretrained import STAND_IN
from transfusion_jax.surgery.schemes import NEEDS_CHECKPOINT

# Evaluations every 1001 steps: the paper's steps-to-0.91 numbers are all multiples of 1001/5 (docs/paper.md §4.4),
# which fits this cadence averaged over 5 runs.
PAPER_EVAL_EVERY = 1001


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Seed of the training data's order (and augmentation); -1 = config.seed. Runs given one value train on the same
    # batches in the same order (a paired design); stacked in one program they read that stream once.
    c.data_order_seed = -1
    c.model = ml_collections.ConfigDict({"name": "resnet50", "overrides": ml_collections.ConfigDict()})
    c.dtype = "float32"
    c.init = "random"
    c.pretrained = ""  # checkpoint (transfusion_jax.pretrained format) for transfer / transfusion / mean_var / slim
    c.mean_var_bn = "mean_var"  # BatchNorm under init='mean_var' (paper silent): mean_var | default | copy
    # BatchNorm statistics a run starts from (and its init.npz records): recomputed in train mode over its first this
    # many training batches, as step 1 sees the network (train/batch_stats.py); 0 = the init's own (placeholders
    # mean 0 / var 1 for random layers)
    c.init_bn_batches = 16
    c.freeze = ()  # block names or path regexes whose parameters stay fixed
    c.finetune = ml_collections.ConfigDict(  # fine-tuning protocol (train/protocols.py)
        dict(
            protocol="full",  # full | linear_probe | lp_ft | surgical
            probe_steps=0,  # lp_ft: steps of linear probing before full fine-tuning
            surgical_blocks=(),  # surgical: the blocks that train (with the head)
            layer_decay=1.0,  # layer-wise lr decay: block i of n learns at decay^(n - i) x lr; 1 = off
        )
    )
    c.data = data_lib.default_data_config()
    c.train_split = "train"
    c.val_split = "validation"  # chooses: the selected step / best checkpoint, early stopping
    c.test_split = "test"  # only reported, at the selected and the final step ('' = none)
    c.batch_size = 32  # paper (docs/paper.md §3)
    c.eval_batch_size = 0  # 0 = batch_size
    c.num_train_steps = 150_000
    c.num_train_epochs = 0.0  # > 0: train this many passes over the training split instead of num_train_steps
    c.early_stopping_evals = 0  # 0 = off; else stop after this many evals without a better validation AUC
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="adam",  # adam | adamw | sgd; paper: Adam on Retina, SGD + momentum 0.9 on CheXpert
            learning_rate=1e-3,  # paper
            momentum=0.9,
            nesterov=False,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,  # paper silent; on kernels only when > 0: L2 (adam, sgd) or decoupled (adamw)
            schedule="constant",  # paper silent
            warmup_steps=0,
            grad_clip_norm=0.0,  # 0 = off
        )
    )
    c.aux_loss_weight = 0.0  # Inception-v3 aux head loss weight (needs model.overrides.aux_logits=True)
    c.log_every_steps = 100
    c.eval_every_steps = PAPER_EVAL_EVERY
    # Explicit evaluation steps (e.g. log-spaced, dense early, so steps-to-threshold is not censored by the grid's
    # floor); empty: every eval_every_steps. The last step is always evaluated.
    c.eval_steps = ()
    c.checkpoint_every_steps = PAPER_EVAL_EVERY
    c.keep_checkpoints = 3
    c.keep_best_checkpoint = True
    c.auc_threshold = 0.91  # steps to the first eval with AUC > this (the paper's convergence measure)
    # ... and to AUC > relative_threshold x the run's own final validation AUC: defined even where a setup's final AUC
    # sits near 0.91 (e.g. a constant learning rate on a small training set)
    c.relative_threshold = 0.95
    c.calibration_bins = 15  # bins of eval's ECE (equal width, Guo et al.) and ACE (equal mass, Nixon et al.)
    c.export_pretrained = False  # write workdir/pretrained.npz at the end (e.g. ImageNet-trained CBRs)
    c.progress_bar = True
    c.runlocal = False  # set by the ",local" suffix of a config arg (apply_runlocal), which shrinks the whole run
    return c


PAPER_MODELS = ("resnet50", "inception_v3", "cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny")
VIT_MODELS = ("vit_b16", "vit_ti16")  # beyond the paper (docs/VIT.md)


def retina_config(model: str, init: str) -> ml_collections.ConfigDict:
    """Retina moderate-DR (grade >= 2 of 0-4) with the paper's recipe: Adam lr 1e-3, batch 32, 150k steps, 587 px."""
    c = base_config()
    c.model.name = model
    c.init = init
    c.data.name = "retina_folder"
    c.data.retina_target = "binary"
    c.data.retina_threshold = 2  # "moderate DR" on the 0-4 scale (docs/paper.md §2.1)
    c.train_split = "train"
    c.val_split = "validation"  # Kaggle's Public test images (TFDS 'validation')
    c.test_split = "test"  # Kaggle's Private test images
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.batch_size = 32
    c.num_train_steps = 150_000  # Fig. 6 curves run to 150k
    return c


def vit_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The recipe ViTs are fine-tuned with (BEiT's and MAE's fine-tuning, RETFound's; docs/VIT.md), in place of the
    paper's CNN recipe: AdamW at 1e-4 (batch 32) with decoupled weight decay 0.05 on kernels, 5000 warmup steps then
    cosine decay to 0, gradients clipped at global norm 1, and layer-wise learning-rate decay 0.75 when the init
    copies pretrained weights (transfer, transfusion:<block>); random and Mean-Var inits have no pretrained features to
    keep, so their blocks all learn at the full rate (layer_decay 1)."""
    c.optimizer.update(dict(name="adamw", learning_rate=1e-4, weight_decay=0.05, schedule="cosine"))
    c.optimizer.update(dict(warmup_steps=5000, grad_clip_norm=1.0))
    copies_weights = c.init == "transfer" or c.init.startswith("transfusion:")
    c.finetune.layer_decay = 0.75 if copies_weights else 1.0
    return c


def check_choice(what: str, value: str, choices, where: str) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r} in {where}; choose one of {', '.join(choices)}.")


# A ViT small enough for CPU tests and ',local' runs: every block (so block names and transfusion configs stay valid),
# a 16-wide residual stream, 8 px patches (a 32 px image is a 4 x 4 grid).
VIT_LOCAL_OVERRIDES = dict(patch_size=8, width=16, num_heads=2, mlp_dim=32)
# Tiny stand-ins that keep each architecture's block names (so freezing / transfusion configs stay valid).
_LOCAL_OVERRIDES = {
    # resnet50_slim fixes its own widths, so both ResNets keep full widths (slim transfers resnet50's blocks 1-2).
    "resnet50": dict(stage_sizes=(1, 1, 1, 1)),
    "resnet50_slim": dict(stage_sizes=(1, 1, 1, 1)),
    "inception_v3": {},  # no width knob: runs at full width on the smallest input it accepts (75 px)
    "cbr_larget": dict(widths=(4, 4, 8, 8, 8)),
    "cbr_largew": dict(widths=(4, 8, 8, 8)),
    "cbr_small": dict(widths=(4, 4, 8, 8)),
    "cbr_tiny": dict(widths=(4, 8, 8, 8)),
    "cbr_tiny_alt": dict(widths=(4, 4, 8, 8)),
    "vit_b16": VIT_LOCAL_OVERRIDES,
    "vit_ti16": VIT_LOCAL_OVERRIDES,
}


def _use_local_data(c: ml_collections.ConfigDict) -> None:
    """Generated stand-ins for the real datasets, keeping the task (loss kind, number of outputs); the data layer
    renders or generates them when the run reads them."""
    if "chexpert" in c.data.name:
        c.data.name, c.data.root = "local_chexpert", ""
        c.train_split, c.val_split = "train[:75%]", "train[75%:]"  # a validation slice big enough for an AUC
    elif c.data.name in ("image_folder", "synthetic_source", "imagenet_tfds", "tfds_classification"):
        c.data.name = "synthetic_source"
    else:
        c.data.name = "synthetic_retina"


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks `c` to run on a laptop CPU in about a minute: tiny widths, small generated images, few steps.

    The experiment's structure (model family and block names, init scheme, optimizer, loss kind) is unchanged.
    """
    c.runlocal = True
    c.model.overrides.update(_LOCAL_OVERRIDES[c.model.name])
    _use_local_data(c)
    c.data.image_size = 75 if c.model.name == "inception_v3" else 32
    if c.data.name.startswith("synthetic"):
        c.data.synthetic.num_examples = 64
        c.data.synthetic.native_size = 64
    c.data.subset_size = min(c.data.subset_size, 48)
    c.data.num_workers = 0
    c.batch_size = 8
    c.num_train_steps = 20
    c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, c.num_train_steps // 4)
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 10
    if c.init.split(":")[0] in NEEDS_CHECKPOINT and not c.pretrained:
        c.pretrained = STAND_IN  # resolved by the trainer to a cached random checkpoint (pretrained.stand_in)
    return c


def parse_arg(arg: str, names=("model", "init")) -> dict:
    """'resnet50,transfer,local' -> {'model': 'resnet50', 'init': 'transfer', 'local': True}."""
    parts = [p for p in (arg or "").split(",") if p]
    local = "local" in parts
    parts = [p for p in parts if p != "local"]
    if len(parts) != len(names):
        raise ValueError(f"Config arg {arg!r} must be '{','.join(names)}[,local]'.")
    return {**dict(zip(names, parts)), "local": local}


def _parse_config_flags(config: ml_collections.ConfigDict, args: Sequence[str]) -> list[str]:
    """Parses `args` with ml_collections' config_flags into `config` (in place); returns the arguments that are not
    flags. Raises ValueError for a field the config lacks, flags.Error for a bad value or another flag."""
    argv = ["override", *args]
    flag_values = flags.FlagValues()  # private to this call: the process-wide absl FLAGS stay untouched
    try:
        config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, sys_argv=argv, lock_config=False)
        return flag_values(argv)[1:]
    except (AttributeError, KeyError) as e:  # how ml_collections reports a field the config does not have
        suggestion = re.search(r"Did you mean .*\?", str(e).replace("\\n", " "))
        hint = f" {suggestion.group(0)}" if suggestion else ""
        named = re.findall(r"--config\.([^=\s]+)", " ".join(args))
        field = next((f for f in named if not _has_field(config, f)), " ".join(args))
        raise ValueError(f"Unknown config field {field!r}.{hint} See transfusion_jax/train/config_lib.py.") from None


def _has_field(config: ml_collections.ConfigDict, field: str) -> bool:
    node = config
    for part in field.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def apply_flags(config: ml_collections.ConfigDict, args: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies command-line arguments as a user typed them, `--config.a.b=value` or `--config.a.b value`, to `config`
    in place, parsed by ml_collections' config_flags exactly as main.py parses `--config.*` (the value is read as the
    field's type; a tuple as '("a", "b")' or one bare value). Anything else among `args` is an error naming it."""
    try:
        rest = _parse_config_flags(config, args)
    except flags.Error as e:
        raise ValueError(f"Bad config override: {e}") from None
    if rest:
        raise ValueError(f"Not a config override (--config.FIELD=VALUE): {rest}")
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Applies 'a.b=value' strings in order, in place, each parsed exactly as main.py parses `--config.a.b=value`
    (the parser of `apply_flags`)."""
    for item in overrides:
        field, sep, _ = item.partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} must look like field.sub=value.")
        try:
            _parse_config_flags(config, [f"--config.{item}"])
        except flags.Error as e:
            raise ValueError(f"Bad value in override {item!r}: {e}") from None
    return config
