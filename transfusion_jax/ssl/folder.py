"""`pretrain_folder`: a self-supervised encoder from a folder of images in one call, written as pretrained.npz.

Sized for small images and small models (the miniature study's CBRs at 32 px on ~2,000 images: a minute or two on a
2-core CPU, BENCHMARKS.md): SimCLR at temperature 0.2 (in runs of a few hundred steps it learned where BYOL, whose
target barely moves in so few steps, did not: docs/ssl.md), AdamW on a warmup + cosine schedule rather than LARS,
heads 128-64, and each image decoded once and kept (data.cache_decoded). Every field of the run's config
(ssl.config.base_config) can still be set through `overrides`.
"""

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence

from transfusion_jax.ssl import config as ssl_config
from transfusion_jax.ssl import trainer
from transfusion_jax.train import config_lib, rundir

# The defaults of a small, fast run (module docstring), as `FIELD=VALUE` overrides of the run's config.
SMALL_RUN = (
    "ssl.temperature=0.2",
    "optimizer.name=adamw",
    "optimizer.base_learning_rate=4e-3",
    "optimizer.weight_decay=1e-4",
    "optimizer.warmup_epochs=1.0",
    "ssl.projector.hidden_dim=128",
    "ssl.projector.out_dim=64",
    "ssl.predictor.hidden_dim=128",
    "data.cache_decoded=True",
    "log_every_steps=25",
    "checkpoint_every_steps=100",
    "keep_checkpoints=1",
    "progress_bar=False",
)


def folder_config(
    folder: str,
    *,
    model: str = "cbr_small",
    model_overrides: Mapping | None = None,
    image_size: int = 32,
    method: str = "simclr",
    epochs: float = 8.0,
    batch_size: int = 128,
    seed: int = 0,
    resize_mode: str = "",
    flips: str = "auto",
    overrides: Sequence[str] = (),
):
    """The run `pretrain_folder` makes (see there); `overrides` ('FIELD=VALUE') come last."""
    c = ssl_config.base_config(method)
    c.model.name = model
    c.model.overrides.update(dict(model_overrides or {}))
    c.data.name, c.data.root = "unlabeled_folder", os.path.abspath(folder)
    c.data.image_size, c.data.resize_mode = image_size, resize_mode
    c.data.num_workers = 0 if image_size <= 64 else 2  # small images: decoding in threads costs more than it saves
    c.ssl.views.flips = flips
    c.seed, c.batch_size, c.num_train_epochs = seed, batch_size, float(epochs)
    return config_lib.apply_overrides(c, [*SMALL_RUN, *overrides])


def pretrain_folder(folder: str, out: str, *, workdir: str | None = None, **kwargs) -> dict:
    """Pretrains an encoder on every image under `folder` and writes its pretrained.npz to `out`; returns the run's
    summary (summary.json: loss, steps, seconds).

    kwargs: model (any architecture name), model_overrides (e.g. {'widths': (8, 16, 32, 32)}), image_size, method
    ('simclr' | 'byol'), epochs (passes over the folder), batch_size, seed, resize_mode ('' = squash, 'center_crop'
    for fundus photos on a wider frame), flips ('auto' = horizontal for a plain folder; 'none' for chest x-rays),
    overrides (any config field as 'FIELD=VALUE'). `workdir` keeps the run (checkpoints, metrics; rerunning resumes
    it); without one it runs in a temporary folder removed afterwards."""
    config = folder_config(folder, **kwargs)
    scratch = workdir is None
    run_dir = tempfile.mkdtemp(prefix="ssl_folder_") if scratch else workdir
    try:
        summary = trainer.pretrain(config, run_dir)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        staging = f"{out}.tmp.npz"
        shutil.copyfile(os.path.join(run_dir, rundir.FINAL), staging)
        os.replace(staging, out)
    finally:
        if scratch:
            shutil.rmtree(run_dir, ignore_errors=True)
    return summary
