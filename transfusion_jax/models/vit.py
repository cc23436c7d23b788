"""Vision Transformer (Dosovitskiy et al., ICLR 2021) laid out as big_vision's ViT, computing what torchvision's does.

Parameter tree (top level = block name, so surgery selects blocks by the first path component):
  embedding/conv/{kernel,bias}   the patch embedding: a patch x patch, stride-patch convolution (kernel HWIO)
  embedding/cls                  the class token (1, 1, D)
  embedding/pos_embedding        learned position embeddings (1, 1 + gh * gw, D), the class token's first
  encoderblock_i/{LayerNorm_0, MultiHeadDotProductAttention_0/{query,key,value,out}, LayerNorm_1,
                  MlpBlock_0/{Dense_0,Dense_1}}      pre-LN: x + MHA(LN(x)), then x + MLP(LN(x))
  encoder_norm/{scale,bias}      the final LayerNorm
  head                           on the class token after encoder_norm
Features: embedding (the tokens entering encoderblock_0), encoderblock_0..L-1, encoder_norm: tokens [N, 1 + P, D]
with the class token first; pre_logits [N, D], the normalised class token.

Numerics as torchvision's vit_b_16 and timm's (so converted weights give the same logits): LayerNorm eps 1e-6, exact
(erf) GELU (big_vision uses the tanh approximation), the position embedding added to the class token too, no dropout.
Random init as big_vision (xavier-uniform attention and MLP kernels, MLP biases N(0, 1e-6), zero class token) but the
position embeddings N(0, 0.02) as torchvision and timm, and the task head as every model here (LeCun normal, zero
bias; big_vision zero-initialises it). The patch embedding is computed as patches x kernel, one matrix product (the
same sums as the strided convolution; for ViT-B/16 at batch 8 on XLA:CPU its forward + backward took 0.26-0.36 s,
the convolution's 1.7-2.0 s, on a loaded 2-core machine). An input whose sides are not multiples of the
patch loses its last rows and columns, as a VALID convolution (big_vision) does; torchvision refuses such inputs.
`resample_posemb` resizes position embeddings to another grid (another image size) when weights are loaded.
"""

import re
from collections import OrderedDict
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transfusion_jax.models.layers import LECUN_NORMAL, dense_head

# ViT-B/16 and ViT-Ti/16 (Steiner et al. 2021's table, as big_vision and timm name them).
VIT_SPECS = {
    "vit_b16": dict(patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_ti16": dict(patch_size=16, width=192, depth=12, num_heads=3, mlp_dim=768),
}
# Tokens before the patch grid in every token feature and position embedding: the class token.
PREFIX_TOKENS = 1
# Modules holding a LayerNorm's scale and bias (normalisation layers, like BatchNorm, for the init schemes).
LAYER_NORM_MODULE = re.compile(r"(.*/)?(LayerNorm_\d+|encoder_norm)")
LN_EPSILON = 1e-6

XAVIER_UNIFORM = jax.nn.initializers.xavier_uniform()


def block_names(depth: int) -> tuple[str, ...]:
    return ("embedding",) + tuple(f"encoderblock_{i}" for i in range(depth)) + ("encoder_norm",)


class PatchConv(nn.Module):
    """[N, H, W, C] -> [N, gh * gw, D]: each patch x patch patch times the HWIO kernel, plus the bias."""

    features: int
    patch_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        if gh < 1 or gw < 1:
            raise ValueError(f"A {h}x{w} input is smaller than one {p}x{p} patch: the ViT needs at least {p} px.")
        kernel = self.param("kernel", LECUN_NORMAL, (p, p, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        patches = x[:, : gh * p, : gw * p].reshape(n, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(n, gh * gw, p * p * c).astype(self.dtype)
        return patches @ kernel.reshape(p * p * c, self.features).astype(self.dtype) + bias.astype(self.dtype)


class Embedding(nn.Module):
    """Patches -> tokens, the class token in front, plus the position embeddings: what enters the first block."""

    width: int
    patch_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        tokens = PatchConv(self.width, self.patch_size, self.dtype, name="conv")(x)
        n, num_patches, _ = tokens.shape
        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width))
        pos = self.param(
            "pos_embedding", nn.initializers.normal(stddev=0.02), (1, PREFIX_TOKENS + num_patches, self.width)
        )
        tokens = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (n, 1, self.width)), tokens], axis=1)
        return tokens + pos.astype(self.dtype)


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = lambda features: nn.Dense(  # noqa: E731
            features, dtype=self.dtype, kernel_init=XAVIER_UNIFORM, bias_init=nn.initializers.normal(stddev=1e-6)
        )
        y = nn.gelu(dense(self.mlp_dim)(x), approximate=False)
        return dense(x.shape[-1])(y)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            kernel_init=XAVIER_UNIFORM,
            deterministic=True,
            force_fp32_for_softmax=True,
        )(y)
        x = x + y
        y = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype)(x)
        return x + MlpBlock(self.mlp_dim, self.dtype)(y)


class ViT(nn.Module):
    """ViT with a class token returning `(logits, features)` (see the module docstring). `train` changes nothing
    (no dropout, no BatchNorm); it is the interface every model here shares."""

    num_classes: int
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        if self.width % self.num_heads:
            raise ValueError(f"ViT width {self.width} is not a multiple of num_heads {self.num_heads}.")
        features = OrderedDict()
        x = Embedding(self.width, self.patch_size, self.dtype, name="embedding")(x)
        features["embedding"] = x
        for i in range(self.depth):
            x = EncoderBlock(self.num_heads, self.mlp_dim, self.dtype, name=f"encoderblock_{i}")(x)
            features[f"encoderblock_{i}"] = x
        x = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype, name="encoder_norm")(x)
        features["encoder_norm"] = x
        x = x[:, 0]
        features["pre_logits"] = x
        return dense_head(self.num_classes)(x), features


def vit(name: str, num_classes: int, **overrides) -> ViT:
    return ViT(num_classes=num_classes, **{**VIT_SPECS[name], **overrides})


def grid_side(num_tokens: int) -> int:
    """The side g of the square patch grid of a position embedding of 1 + g * g tokens."""
    side = int(round(np.sqrt(num_tokens - PREFIX_TOKENS)))
    if num_tokens <= PREFIX_TOKENS or side * side != num_tokens - PREFIX_TOKENS:
        raise ValueError(
            f"A position embedding of {num_tokens} tokens is not a class token plus a square grid of patches."
        )
    return side


def resample_posemb(posemb, num_tokens: int) -> np.ndarray:
    """Position embeddings (1, 1 + g * g, D) resized to (1, num_tokens, D), the "high-resolution fine-tuning" of
    Dosovitskiy et al.: the class token's embedding kept, the g x g grid resized bicubically (Keys' cubic, a = -0.5,
    pixel centres aligned, antialiased when shrinking: PIL's BICUBIC) to the new square grid. timm and torchvision
    resize with PyTorch's bicubic (a = -0.75), big_vision linearly; the resampled embeddings are fine-tuned anyway."""
    posemb = np.asarray(posemb, np.float32)
    if posemb.ndim != 3 or posemb.shape[0] != 1:
        raise ValueError(f"Expected a position embedding of shape (1, tokens, D), got {posemb.shape}.")
    old, new = grid_side(posemb.shape[1]), grid_side(num_tokens)
    if old == new:
        return posemb
    grid = posemb[0, PREFIX_TOKENS:].reshape(old, old, -1)
    grid = jax.image.resize(grid, (new, new, grid.shape[-1]), method="cubic", antialias=True)
    grid = np.asarray(grid, np.float32).reshape(1, new * new, -1)
    return np.concatenate([posemb[:, :PREFIX_TOKENS], grid], axis=1)
