"""The config of a self-supervised pretraining run (configs/ssl.py starts from it) and its `,local` shrink.

Building a config only sets fields; nothing here reads or writes files. Fields (override any with --config.<field>):
  model.name, model.overrides   the encoder: any architecture of transfusion_jax.models (read at 'pre_logits')
  seed                          init, data order and views
  dtype                         compute dtype, 'float32' or 'bfloat16'
  init, pretrained, mean_var_bn the encoder's starting point: 'random' (SimCLR, BYOL), or any init scheme of the
                                supervised runs from a checkpoint, e.g. 'transfer' from ImageNet weights (REMEDIS
                                continues ImageNet weights with in-domain contrastive learning)
  data                          transfusion_jax.data.default_data_config(): any reader, labels ignored; data.augment is
                                not used (the views are ssl.views); data.subset_size limits the images
  train_split                   the split whose images are used
  ssl.method                    'simclr' | 'byol'
  ssl.temperature               SimCLR's NT-Xent temperature
  ssl.projector, ssl.predictor  hidden_dim (0 = the encoder's feature width, SimCLR's choice) and out_dim
  ssl.base_momentum             BYOL's target momentum at step 0 (to 1 on a cosine schedule)
  ssl.views                     the augmentations (transfusion_jax.ssl.views.ViewConfig); flips 'auto' = the task's
  optimizer                     name 'lars' | 'adamw', base_learning_rate (x batch_size / 256), weight_decay
                                (kernels only), momentum and trust_coefficient (LARS), b1, b2, eps (AdamW),
                                warmup_epochs (or warmup_steps when 0), grad_clip_norm (0 = off)
  batch_size, num_train_steps, num_train_epochs (> 0: the length in passes over the images)
  log_every_steps, checkpoint_every_steps, keep_checkpoints, progress_bar
"""

import ml_collections

from transfusion_jax import data as data_lib
from transfusion_jax.ssl.steps import METHODS
from transfusion_jax.train import config_lib

# Each method's published recipe (SimCLR: Chen et al. 2020; BYOL: Grill et al. 2020), at a batch of 256.
RECIPES = {
    "simclr": dict(base_learning_rate=0.3, weight_decay=1e-6, projector=(0, 128), predictor=(0, 0)),
    "byol": dict(base_learning_rate=0.2, weight_decay=1.5e-6, projector=(4096, 256), predictor=(4096, 0)),
}


def base_config(method: str = "simclr") -> ml_collections.ConfigDict:
    config_lib.check_choice("method", method, METHODS, "the self-supervised config")
    recipe = RECIPES[method]
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ml_collections.ConfigDict({"name": "resnet50", "overrides": ml_collections.ConfigDict()})
    c.dtype = "float32"
    c.init = "random"
    c.pretrained = ""
    c.mean_var_bn = "mean_var"
    c.data = data_lib.default_data_config()
    c.data.name = "unlabeled_folder"
    c.data.augment.enabled = False  # the views (ssl.views) are the augmentation
    c.train_split = "train"
    c.ssl = ml_collections.ConfigDict(
        dict(
            method=method,
            temperature=0.1,  # SimCLR at large batch with LARS (0.5 in its CIFAR-10 runs)
            projector=dict(hidden_dim=recipe["projector"][0], out_dim=recipe["projector"][1]),
            predictor=dict(hidden_dim=recipe["predictor"][0]),
            base_momentum=0.996,  # BYOL
            views=dict(
                crop_scale=(0.25, 1.0),  # SimCLR/BYOL: (0.08, 1); small crops lose small lesions (docs/ssl.md)
                aspect=(3 / 4, 4 / 3),
                flips="auto",  # auto (per task, data.pipeline.TASK_FLIPS) | none | horizontal | vertical | both
                rotate_deg=10.0,  # not in SimCLR/BYOL; MoCo-CXR's medical augmentation
                jitter_prob=0.8,
                brightness=0.4,  # BYOL's strengths; no hue jitter
                contrast=0.4,
                saturation=0.2,
                grayscale_prob=0.2,  # SimCLR's and BYOL's; a no-op on grey images
                blur_prob=0.5,
                blur_sigma=(0.1, 2.0),  # pixels at 224 px, scaled with the image
            ),
        )
    )
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="lars",
            base_learning_rate=recipe["base_learning_rate"],  # x batch_size / 256
            weight_decay=recipe["weight_decay"],
            momentum=0.9,
            trust_coefficient=1e-3,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            warmup_epochs=10.0,
            warmup_steps=0,  # used when warmup_epochs is 0
            grad_clip_norm=0.0,
        )
    )
    c.batch_size = 256
    c.num_train_steps = 100_000  # used when num_train_epochs is 0
    c.num_train_epochs = 100.0  # SimCLR's and BYOL's shortest ImageNet schedule
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.progress_bar = True
    c.runlocal = False
    return c


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks `c` to run on a CPU in about a minute: the architecture's tiny stand-in (the supervised configs'),
    32 px generated fundus images, small heads, 30 steps."""
    shrunk = config_lib.base_config()
    shrunk.model.name = c.model.name
    shrunk = config_lib.apply_runlocal(shrunk)  # the tiny widths every `,local` run of this architecture uses
    c.runlocal = True
    c.model.overrides.update(dict(shrunk.model.overrides))
    c.data.name = "synthetic_retina"  # rendered in memory; its labels are ignored
    c.data.image_size = shrunk.data.image_size
    c.data.synthetic.num_examples = 64
    c.data.synthetic.native_size = 64
    c.data.num_workers = 0
    c.ssl.projector.update(hidden_dim=64, out_dim=32)
    if c.ssl.predictor.hidden_dim:
        c.ssl.predictor.hidden_dim = 64
    c.batch_size = 16
    c.num_train_epochs = 0.0
    c.num_train_steps = 30
    c.optimizer.warmup_epochs = 0.0
    c.optimizer.warmup_steps = 3
    c.log_every_steps = 5
    c.checkpoint_every_steps = 10
    return c
