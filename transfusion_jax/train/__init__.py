"""Training: data-parallel jitted train/eval steps over a ('data',) mesh, evaluation (AUC, steps-to-threshold),
orbax checkpoints with exact resume, metrics to TensorBoard and metrics.jsonl. Entry point: `train_and_evaluate`."""
from transfusion_jax.train.trainer import NonFiniteLossError, evaluate, train_and_evaluate

__all__ = ["NonFiniteLossError", "evaluate", "train_and_evaluate"]
