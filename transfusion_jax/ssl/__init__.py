"""Self-supervised pretraining (SimCLR, BYOL) of any model here on unlabeled images: the in-domain alternative to an
ImageNet checkpoint. Its product is a `pretrained.npz` of the online encoder, which every init scheme (transfer,
transfusion:<block>, Mean-Var), the probes and the analyses take like any other checkpoint.

  python -m transfusion_jax.main --config=configs/ssl.py:MODEL,METHOD[,local] --workdir=DIR   # METHOD simclr | byol
  ssl.pretrain(config, workdir)                    # the same from Python (config: ssl.config.base_config())
  ssl.pretrain_folder(folder, out_npz, model=..., model_overrides=..., image_size=...)   # a folder of images

Modules: config (the run's fields), views (the augmented views, on the devices), nets (encoder + projector /
predictor), losses (NT-Xent, BYOL's regression), steps (state, optimizer, the jitted step), trainer (the run: data,
checkpoints, metrics, export), folder (`pretrain_folder`). docs/ssl.md: the recipes and where this departs from them.
"""

import importlib

_LAZY = {"pretrain": "trainer", "pretrain_folder": "folder", "base_config": "config", "METHODS": "steps"}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"transfusion_jax.ssl.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'transfusion_jax.ssl' has no attribute {name!r}")
