"""Per-example losses for the two task kinds. Padding rows (`valid=False`) and unlabelled CheXpert entries
(`label_mask=0`) contribute nothing; callers get a (sum, count) pair so the mean is exact across batches and hosts.
"""

import jax.numpy as jnp
import optax

LOSS_KINDS = ("softmax", "sigmoid")


def softmax_xent(logits, labels):
    """Cross-entropy per example from int labels [B]; logits [B, C] in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def sigmoid_bce(logits, labels):
    """Binary cross-entropy per entry [B, C] for targets in [0, 1]."""
    return optax.sigmoid_binary_cross_entropy(logits, labels)


def loss_terms(kind: str, logits, batch):
    """(loss summed over counted entries, number of counted entries) for one batch.

    softmax: one entry per valid row. sigmoid: one entry per valid row and labelled class (`label_mask`).
    """
    valid = batch["valid"].astype(jnp.float32)
    logits = logits.astype(jnp.float32)
    if kind == "softmax":
        return jnp.sum(softmax_xent(logits, batch["label"]) * valid), jnp.sum(valid)
    if kind == "sigmoid":
        weight = batch["label_mask"].astype(jnp.float32) * valid[:, None]
        return jnp.sum(sigmoid_bce(logits, batch["label"]) * weight), jnp.sum(weight)
    raise ValueError(f"Unknown loss kind {kind!r}; the dataset's task.loss must be one of {LOSS_KINDS}.")


def mean_loss(kind: str, logits, batch):
    total, count = loss_terms(kind, logits, batch)
    return total / jnp.maximum(count, 1.0)
