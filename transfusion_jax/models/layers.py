"""Building blocks shared by every architecture: conv-BN-ReLU and pooling with explicit padding.

Padding is explicit (not 'SAME') wherever a reference framework pads symmetrically, so converted torchvision/Keras
weights give identical activations at any input size, odd ones included. Convolutions take their
gradients from `cpu_kernels` when the program runs on a CPU (same values, faster on XLA:CPU).
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transfusion_jax.models import cpu_kernels

Padding = str | Sequence[tuple[int, int]]


def variance_scaling(scale: float, mode: str, distribution: str) -> Callable:
    """`jax.nn.initializers.variance_scaling(scale, mode, distribution)`, the same values bit for bit, drawn as one
    vector and reshaped. Why by hand: with partitionable threefry (jax's default) an element's random counter comes
    from every axis's iota, and XLA:CPU compiles a draw of a 4-D kernel shape 3-5x slower than the same draw of a
    vector (1.5 s against 0.3 s for a 7x7x3x4 kernel on 2 cores); a CBR's init program compiles in ~1.3 s instead of
    ~4.5 s, which every run pays once. Modes 'fan_in' / 'fan_out' / 'fan_avg'; distributions 'normal' /
    'truncated_normal' (the two jax draws that are elementwise in the flat counter, checked in tests/models)."""
    if mode not in ("fan_in", "fan_out", "fan_avg") or distribution not in ("normal", "truncated_normal"):
        raise ValueError(f"variance_scaling: unsupported mode {mode!r} or distribution {distribution!r}")

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(int(d) for d in shape)
        receptive = math.prod(shape[:-2])  # jax's fans: in axis -2, out axis -1, the rest a receptive field
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = jnp.array(scale / denominator, dtype=dtype)
        flat = (math.prod(shape),)
        if distribution == "normal":
            values = jax.random.normal(key, flat, dtype) * jnp.sqrt(variance)
        else:  # the constant is the std of a standard normal truncated to (-2, 2), as in jax
            values = jax.random.truncated_normal(key, -2, 2, flat, dtype) * (
                jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype)
            )
        return values.reshape(shape)

    return init


# torchvision's ResNet init (kaiming_normal_, mode='fan_out', relu); used for every conv so "random init" means the
# same thing across architectures.
HE_FAN_OUT = variance_scaling(2.0, "fan_out", "normal")
# flax's default Dense kernel init (lecun_normal), drawn flat like HE_FAN_OUT.
LECUN_NORMAL = variance_scaling(1.0, "fan_in", "truncated_normal")


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
    """NHWC max-pool; on CPU with a gradient that reads the argmax recorded by the forward pass (`cpu_kernels`)."""
    return cpu_kernels.max_pool(x, (window, window), (stride, stride), padding)


def global_avg_pool(x):
    return jnp.mean(x, axis=(1, 2))


def dense_head(num_classes: int, name: str | None = "head") -> nn.Dense:
    """The task head, computed in float32 whatever the body's dtype: bf16 logits would round scores into ties and
    bias the AUC. Its input (the pooled features) is promoted to float32 before the matmul."""
    return nn.Dense(num_classes, dtype=jnp.float32, kernel_init=LECUN_NORMAL, name=name)
