"""The networks of self-supervised pretraining: any model of the registry as the encoder, read at its 'pre_logits'
feature, with SimCLR's projector or BYOL's projector and predictor on top.

Parameter tree: {'encoder': the model's own tree, 'projector': ..., 'predictor': ... (BYOL)}; the exported checkpoint
is the 'encoder' subtree alone, so it loads wherever a model of that architecture does.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# The feature every model of the registry returns after its global pooling (and a ViT its class token): the
# representation the task head reads, and what the projector reads here.
FEATURE = "pre_logits"


class MLP(nn.Module):
    """Dense(hidden) - BatchNorm - ReLU - Dense(out): SimCLR's projection head and BYOL's projector and predictor."""

    hidden_dim: int
    out_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(self.hidden_dim, dtype=self.dtype, name="dense1")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="bn")(x)
        x = nn.relu(x)
        return nn.Dense(self.out_dim, dtype=jnp.float32, name="dense2")(x)  # the loss reads float32


class SSLNet(nn.Module):
    """encoder -> its FEATURE -> projector (-> predictor). Returns (projection, prediction or None)."""

    encoder: nn.Module
    projector: MLP
    predictor: MLP | None = None

    def __call__(self, x, train: bool):
        _, features = self.encoder(x, train=train)
        if FEATURE not in features:
            raise ValueError(f"The encoder returns no {FEATURE!r} feature (it returns {list(features)}).")
        h = features[FEATURE]
        if h.ndim == 4:  # a feature map: pooled as the models pool before their head
            h = jnp.mean(h, axis=(1, 2))
        z = self.projector(h, train)
        return z, (self.predictor(z, train) if self.predictor is not None else None)
