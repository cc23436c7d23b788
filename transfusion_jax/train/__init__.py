"""Training: data-parallel jitted train/eval steps over a ('data',) mesh, evaluation (AUC, steps-to-threshold),
orbax checkpoints with exact resume, metrics to TensorBoard and metrics.jsonl. Entry points: `train_and_evaluate`
(one run) and `train_group` (compatible runs stacked as one program, `multirun`).

The trainer is imported lazily so that `transfusion_jax.train.steps` / `.state` (all a benchmark or an accelerator
smoke test needs) load without the data, TensorBoard and sklearn stack.
"""

import importlib

_LAZY = {
    "CheckpointError": "checkpoint",
    "NonFiniteLossError": "trainer",
    "evaluate": "trainer",
    "train_and_evaluate": "trainer",
    "train_group": "trainer",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"transfusion_jax.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'transfusion_jax.train' has no attribute {name!r}")
