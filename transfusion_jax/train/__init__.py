"""Training: data-parallel jitted train/eval steps over a ('data',) mesh, evaluation (AUC, steps-to-threshold),
orbax checkpoints with exact resume, metrics to TensorBoard and metrics.jsonl. Entry point: `train_and_evaluate`.

The trainer is imported lazily so that `transfusion_jax.train.steps` / `.state` (all a benchmark or an accelerator
smoke test needs) load without the data, TensorBoard and sklearn stack.
"""

__all__ = ["NonFiniteLossError", "evaluate", "train_and_evaluate"]


def __getattr__(name):
    if name in __all__:
        from transfusion_jax.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'transfusion_jax.train' has no attribute {name!r}")
