"""ResNet-50 (and its Slim variant) with torchvision's layout, block names conv1, block1..block4.

Parameter tree (top level = block name, so surgery selects blocks by the first path component):
  conv1/{conv,bn}                       torchvision conv1, bn1 (the stem; its feature is taken after the max-pool)
  blockK/unitJ/{conv1,conv2,conv3,downsample}/{conv,bn}   torchvision layerK[J-1]
  head                                  torchvision fc

Variants (`variant=`):
  'torchvision'  v1.5: stride in the 3x3 conv, no conv biases, BN eps 1e-5 (torchvision resnet50).
  'keras'        v1: stride in the first 1x1 conv, conv biases, BN eps 1.001e-5 (keras.applications.ResNet50).
"""

import functools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from transfusion_jax.models.layers import ConvBN, dense_head, global_avg_pool, max_pool, symmetric_padding

VARIANTS = {
    "torchvision": dict(stride_in_1x1=False, conv_bias=False, bn_epsilon=1e-5),
    "keras": dict(stride_in_1x1=True, conv_bias=True, bn_epsilon=1.001e-5),
}


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), plus a projection shortcut when shape changes."""

    width: int
    strides: int
    conv: Any  # partially applied ConvBN
    stride_in_1x1: bool

    @nn.compact
    def __call__(self, x, train: bool):
        out_features = self.width * 4
        stride_1x1, stride_3x3 = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
        y = self.conv(self.width, (1, 1), strides=(stride_1x1,) * 2, padding="VALID", name="conv1")(x, train)
        y = self.conv(self.width, (3, 3), strides=(stride_3x3,) * 2, padding=symmetric_padding((3, 3)), name="conv2")(
            y, train
        )
        y = self.conv(out_features, (1, 1), padding="VALID", relu=False, name="conv3")(y, train)
        if x.shape[-1] != out_features or self.strides != 1:
            x = self.conv(
                out_features, (1, 1), strides=(self.strides,) * 2, padding="VALID", relu=False, name="downsample"
            )(x, train)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet v1/v1.5 returning `(logits, features)`; features: conv1, block1..block4, pre_logits."""

    num_classes: int
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    widths: Sequence[int] = (64, 128, 256, 512)  # bottleneck widths; outputs are 4x
    stem_features: int = 64
    variant: str = "torchvision"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown ResNet variant {self.variant!r}; choose one of {sorted(VARIANTS)}.")
        v = VARIANTS[self.variant]
        conv = functools.partial(ConvBN, use_bias=v["conv_bias"], bn_epsilon=v["bn_epsilon"], dtype=self.dtype)
        features = OrderedDict()
        x = x.astype(self.dtype)

        x = conv(self.stem_features, (7, 7), strides=(2, 2), padding=symmetric_padding((7, 7)), name="conv1")(x, train)
        x = max_pool(x, 3, 2, padding=((1, 1), (1, 1)))
        features["conv1"] = x
        for i, (num_units, width) in enumerate(zip(self.stage_sizes, self.widths)):
            strides = 1 if i == 0 else 2
            x = Stage(num_units, width, strides, conv, v["stride_in_1x1"], name=f"block{i + 1}")(x, train)
            features[f"block{i + 1}"] = x
        x = global_avg_pool(x)
        features["pre_logits"] = x
        logits = dense_head(self.num_classes)(x)
        return logits, features


class Stage(nn.Module):
    """`num_units` bottlenecks; the first one downsamples by `strides`."""

    num_units: int
    width: int
    strides: int
    conv: Any
    stride_in_1x1: bool

    @nn.compact
    def __call__(self, x, train: bool):
        for j in range(self.num_units):
            strides = self.strides if j == 0 else 1
            x = Bottleneck(self.width, strides, self.conv, self.stride_in_1x1, name=f"unit{j + 1}")(x, train)
        return x


def resnet50(num_classes: int, **overrides) -> ResNet:
    return ResNet(num_classes=num_classes, **overrides)


def resnet50_slim(num_classes: int, **overrides) -> ResNet:
    """Paper 6.3: ResNet-50 up to block2 unchanged (pretrained weights load as is); block3, block4 at half width."""
    return ResNet(num_classes=num_classes, **{"widths": (64, 128, 128, 256), **overrides})
