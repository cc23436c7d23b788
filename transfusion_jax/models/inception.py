"""Inception-v3 with torchvision's module names, grouped into the stages the paper analyses.

Parameter tree (top level = stage, so surgery selects stages by the first path component):
  stem/{Conv2d_1a_3x3 .. Conv2d_4a_3x3}/{conv,bn}
  mixed_5/{Mixed_5b,Mixed_5c,Mixed_5d}/<branch>/{conv,bn}     35x35 at 299 input
  mixed_6/{Mixed_6a .. Mixed_6e}/<branch>/{conv,bn}           17x17
  mixed_7/{Mixed_7a,Mixed_7b,Mixed_7c}/<branch>/{conv,bn}     8x8
  aux_logits/{conv0,conv1,fc}   optional ImageNet auxiliary classifier (torchvision AuxLogits), sown, not returned
  head                          torchvision fc
Features: stem, mixed_5, mixed_6, mixed_7, pre_logits.

Variants (`variant=`):
  'torchvision'  BN with scale, eps 1e-3; branch avg-pools count the zero padding (F.avg_pool2d default).
  'keras'        BN without scale (keras.applications.InceptionV3), eps 1e-3; avg-pools exclude the padding
                 ('same' pooling in TF/Keras).
The final dropout torchvision applies before fc is `dropout_rate` (default 0: the paper names none; set 0.5 for
torchvision's recipe). The aux head's logits are sown into the 'intermediates' collection as 'aux_output' when
`aux_logits=True` and `train=True`, as torchvision computes them only in training.
"""

import functools
from collections import OrderedDict
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from transfusion_jax.models.layers import ConvBN, dense_head, global_avg_pool, max_pool, symmetric_padding

# Key in the 'intermediates' collection under which the auxiliary head's logits are sown (train mode only).
AUX_OUTPUT = "aux_output"

VARIANTS = {
    "torchvision": dict(bn_scale=True, count_include_pad=True),
    "keras": dict(bn_scale=False, count_include_pad=False),
}


class _Branches(nn.Module):
    """Base for the mixed blocks: a conv-BN-ReLU factory and the branch avg-pool of the chosen variant."""

    conv: Any
    count_include_pad: bool

    def c(self, features, kernel, name, strides=1, padding=None):
        kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
        padding = symmetric_padding(kernel) if padding is None else padding
        return self.conv(features, kernel, strides=(strides, strides), padding=padding, name=name)

    def avg_pool(self, x):
        return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=self.count_include_pad)


class InceptionA(_Branches):
    pool_features: int = 32

    @nn.compact
    def __call__(self, x, train):
        b1 = self.c(64, 1, "branch1x1")(x, train)
        b5 = self.c(48, 1, "branch5x5_1")(x, train)
        b5 = self.c(64, 5, "branch5x5_2")(b5, train)
        b3 = self.c(64, 1, "branch3x3dbl_1")(x, train)
        b3 = self.c(96, 3, "branch3x3dbl_2")(b3, train)
        b3 = self.c(96, 3, "branch3x3dbl_3")(b3, train)
        bp = self.c(self.pool_features, 1, "branch_pool")(self.avg_pool(x), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Branches):
    @nn.compact
    def __call__(self, x, train):
        b3 = self.c(384, 3, "branch3x3", strides=2, padding="VALID")(x, train)
        bd = self.c(64, 1, "branch3x3dbl_1")(x, train)
        bd = self.c(96, 3, "branch3x3dbl_2")(bd, train)
        bd = self.c(96, 3, "branch3x3dbl_3", strides=2, padding="VALID")(bd, train)
        return jnp.concatenate([b3, bd, max_pool(x, 3, 2)], axis=-1)


class InceptionC(_Branches):
    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x, train):
        c7 = self.channels_7x7
        b1 = self.c(192, 1, "branch1x1")(x, train)
        b7 = self.c(c7, 1, "branch7x7_1")(x, train)
        b7 = self.c(c7, (1, 7), "branch7x7_2")(b7, train)
        b7 = self.c(192, (7, 1), "branch7x7_3")(b7, train)
        bd = self.c(c7, 1, "branch7x7dbl_1")(x, train)
        bd = self.c(c7, (7, 1), "branch7x7dbl_2")(bd, train)
        bd = self.c(c7, (1, 7), "branch7x7dbl_3")(bd, train)
        bd = self.c(c7, (7, 1), "branch7x7dbl_4")(bd, train)
        bd = self.c(192, (1, 7), "branch7x7dbl_5")(bd, train)
        bp = self.c(192, 1, "branch_pool")(self.avg_pool(x), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Branches):
    @nn.compact
    def __call__(self, x, train):
        b3 = self.c(192, 1, "branch3x3_1")(x, train)
        b3 = self.c(320, 3, "branch3x3_2", strides=2, padding="VALID")(b3, train)
        b7 = self.c(192, 1, "branch7x7x3_1")(x, train)
        b7 = self.c(192, (1, 7), "branch7x7x3_2")(b7, train)
        b7 = self.c(192, (7, 1), "branch7x7x3_3")(b7, train)
        b7 = self.c(192, 3, "branch7x7x3_4", strides=2, padding="VALID")(b7, train)
        return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class InceptionE(_Branches):
    @nn.compact
    def __call__(self, x, train):
        b1 = self.c(320, 1, "branch1x1")(x, train)
        b3 = self.c(384, 1, "branch3x3_1")(x, train)
        b3 = jnp.concatenate(
            [self.c(384, (1, 3), "branch3x3_2a")(b3, train), self.c(384, (3, 1), "branch3x3_2b")(b3, train)], -1
        )
        bd = self.c(448, 1, "branch3x3dbl_1")(x, train)
        bd = self.c(384, 3, "branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate(
            [self.c(384, (1, 3), "branch3x3dbl_3a")(bd, train), self.c(384, (3, 1), "branch3x3dbl_3b")(bd, train)], -1
        )
        bp = self.c(192, 1, "branch_pool")(self.avg_pool(x), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class Stem(_Branches):
    @nn.compact
    def __call__(self, x, train):
        x = self.c(32, 3, "Conv2d_1a_3x3", strides=2, padding="VALID")(x, train)
        x = self.c(32, 3, "Conv2d_2a_3x3", padding="VALID")(x, train)
        x = self.c(64, 3, "Conv2d_2b_3x3")(x, train)
        x = max_pool(x, 3, 2)
        x = self.c(80, 1, "Conv2d_3b_1x1", padding="VALID")(x, train)
        x = self.c(192, 3, "Conv2d_4a_3x3", padding="VALID")(x, train)
        return max_pool(x, 3, 2)


class Stage(nn.Module):
    """A named group of mixed blocks applied in sequence."""

    blocks: Any  # sequence of (name, constructor taking name=)

    @nn.compact
    def __call__(self, x, train):
        for name, make in self.blocks:
            x = make(name=name)(x, train)
        return x


class AuxHead(nn.Module):
    """torchvision InceptionAux: 5x5/3 avg-pool, 1x1 conv 128, 5x5 conv 768, global pool, fc."""

    num_classes: int
    conv: Any

    @nn.compact
    def __call__(self, x, train):
        x = nn.avg_pool(x, (5, 5), (3, 3))
        x = self.conv(128, (1, 1), padding="VALID", name="conv0")(x, train)
        x = self.conv(768, (5, 5), padding="VALID", name="conv1")(x, train)
        return dense_head(self.num_classes, name="fc")(global_avg_pool(x))


class InceptionV3(nn.Module):
    """Inception-v3 returning `(logits, features)`; features: stem, mixed_5, mixed_6, mixed_7, pre_logits."""

    num_classes: int
    variant: str = "torchvision"
    aux_logits: bool = False
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown Inception-v3 variant {self.variant!r}; choose one of {sorted(VARIANTS)}.")
        v = VARIANTS[self.variant]
        conv = functools.partial(ConvBN, bn_epsilon=1e-3, bn_scale=v["bn_scale"], dtype=self.dtype)
        kw = dict(conv=conv, count_include_pad=v["count_include_pad"])
        a, b, c, d, e = (
            functools.partial(m, **kw) for m in (InceptionA, InceptionB, InceptionC, InceptionD, InceptionE)
        )
        stages = {
            "mixed_5": [("Mixed_5b", functools.partial(a, pool_features=32)),
                        ("Mixed_5c", functools.partial(a, pool_features=64)),
                        ("Mixed_5d", functools.partial(a, pool_features=64))],
            "mixed_6": [("Mixed_6a", b),
                        ("Mixed_6b", functools.partial(c, channels_7x7=128)),
                        ("Mixed_6c", functools.partial(c, channels_7x7=160)),
                        ("Mixed_6d", functools.partial(c, channels_7x7=160)),
                        ("Mixed_6e", functools.partial(c, channels_7x7=192))],
            "mixed_7": [("Mixed_7a", d), ("Mixed_7b", e), ("Mixed_7c", e)],
        }  # fmt: skip
        features = OrderedDict()
        x = Stem(**kw, name="stem")(x.astype(self.dtype), train)
        features["stem"] = x
        for stage_name, blocks in stages.items():
            x = Stage(blocks, name=stage_name)(x, train)
            features[stage_name] = x
            if stage_name == "mixed_6" and self.aux_logits:
                aux = AuxHead(self.num_classes, conv, name="aux_logits")(x, train)
                if train:
                    self.sow("intermediates", AUX_OUTPUT, aux)
        x = global_avg_pool(x)
        features["pre_logits"] = x
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = dense_head(self.num_classes)(x)
        return logits, features


def inception_v3(num_classes: int, **overrides) -> InceptionV3:
    return InceptionV3(num_classes=num_classes, **overrides)
