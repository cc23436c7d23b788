"""Building blocks shared by every architecture: conv-BN-ReLU and pooling with explicit padding.

Padding is explicit (not 'SAME') wherever a reference framework pads symmetrically, so converted torchvision/Keras
weights give identical activations at any input size, odd ones included. Convolutions take their
gradients from `cpu_kernels` when the program runs on a CPU (same values, faster on XLA:CPU).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from transfusion_jax.models import cpu_kernels

Padding = str | Sequence[tuple[int, int]]

# torchvision's ResNet init (kaiming_normal_, mode='fan_out', relu); used for every conv so "random init" means the
# same thing across architectures.
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def symmetric_padding(kernel_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """torchvision's `padding=k//2` for odd kernels."""
    return tuple((k // 2, k // 2) for k in kernel_size)


class ConvBN(nn.Module):
    """Conv -> BatchNorm (-> ReLU). The unit every model here is made of.

    Attributes mirror the reference frameworks' knobs: `use_bias` (Keras ResNet50 has conv biases),
    `bn_scale` (Keras InceptionV3 has no BN gamma), `bn_epsilon` (1e-5 torchvision ResNet, 1e-3 Inception).
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Padding = "SAME"
    use_bias: bool = False
    bn_scale: bool = True
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.9
    relu: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            use_bias=self.use_bias,
            kernel_init=HE_FAN_OUT,
            dtype=self.dtype,
            conv_general_dilated=cpu_kernels.conv_general_dilated,
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            use_scale=self.bn_scale,
            dtype=self.dtype,
            name="bn",
        )(x)
        return nn.relu(x) if self.relu else x


def max_pool(x, window: int = 3, stride: int = 2, padding: Padding = "VALID"):
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=padding)


def global_avg_pool(x):
    return jnp.mean(x, axis=(1, 2))


def dense_head(num_classes: int, name: str | None = "head") -> nn.Dense:
    """The task head, computed in float32 whatever the body's dtype: bf16 logits would round scores into ties and
    bias the AUC. Its input (the pooled features) is promoted to float32 before the matmul."""
    return nn.Dense(num_classes, dtype=jnp.float32, name=name)
