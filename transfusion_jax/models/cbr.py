"""The paper's CBR family (docs/paper.md §1.2): conv(stride 1)-BN-ReLU stacks, 3x3/2 max-pools, global pool, head.

Layer lists as the paper's appendix prints them:
  cbr_larget  7x7  32-64-128-256-512, a max-pool after every layer but the last
  cbr_largew  7x7  64-128-256-512, a max-pool after every layer
  cbr_small   7x7  32-64-128-256, a max-pool after every layer
  cbr_tiny    5x5  64-128-256-512, a max-pool after every layer (as printed; the paper's parameter count may imply
              32-128-..., so `widths` is configurable and `cbr_tiny_alt` gives 32-64-128-256)

Padding, unspecified by the paper, is configurable: convs 'SAME' (the TF convention), pools 'VALID'
(587 -> 293 -> 146 -> 72 -> 35). No conv bias (BN follows). Parameter tree: layer1..layerN/{conv,bn}, head.
"""

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from transfusion_jax.models.layers import ConvBN, dense_head, global_avg_pool, max_pool

CBR_SPECS = {
    "cbr_larget": dict(widths=(32, 64, 128, 256, 512), kernel_size=7, pool_after_last=False),
    "cbr_largew": dict(widths=(64, 128, 256, 512), kernel_size=7, pool_after_last=True),
    "cbr_small": dict(widths=(32, 64, 128, 256), kernel_size=7, pool_after_last=True),
    "cbr_tiny": dict(widths=(64, 128, 256, 512), kernel_size=5, pool_after_last=True),
    "cbr_tiny_alt": dict(widths=(32, 64, 128, 256), kernel_size=5, pool_after_last=True),
}


class CBR(nn.Module):
    """Conv-BN-ReLU stack returning `(logits, features)`; features: layer1..layerN, pre_logits."""

    num_classes: int
    widths: Sequence[int]
    kernel_size: int
    pool_after_last: bool = True
    conv_padding: str = "SAME"
    pool_padding: str = "VALID"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        features = OrderedDict()
        x = x.astype(self.dtype)
        for i, width in enumerate(self.widths):
            k = (self.kernel_size, self.kernel_size)
            x = ConvBN(width, k, padding=self.conv_padding, dtype=self.dtype, name=f"layer{i + 1}")(x, train)
            if i + 1 < len(self.widths) or self.pool_after_last:
                x = max_pool(x, 3, 2, padding=self.pool_padding)
            features[f"layer{i + 1}"] = x
        x = global_avg_pool(x)
        features["pre_logits"] = x
        logits = dense_head(self.num_classes)(x)
        return logits, features


def cbr(name: str, num_classes: int, **overrides) -> CBR:
    return CBR(num_classes=num_classes, **{**CBR_SPECS[name], **overrides})
