"""Pixel preprocessing: normalisation presets that match pretrained weights, resizing (host, Pillow), and the
per-example device transforms: train augmentation and block shuffling (jitted JAX, one key per example).

A checkpoint converted from another framework stores the *name* of its preset (see
`transfusion_jax.pretrained`), so fine-tuning feeds the network the same input distribution it was trained on.

Normalisation formula (applied per channel, after reordering the channels to `channel_order`):

    x = (pixels_uint8 / 255 * scale - mean) / std

with `mean` and `std` given in the *output* channel order. This one formula covers every preset:
  'torchvision'    scale 1,   ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), RGB.
  'keras_resnet50' scale 255, mean (103.939, 116.779, 123.68) in BGR order, std 1, BGR (Keras "caffe" mode).
  'inception'      scale 2,   mean 1, std 1 -> x = pixels / 127.5 - 1 in [-1, 1], RGB.
  'none'           scale 1,   mean 0, std 1 -> x = pixels / 255 in [0, 1], RGB.

Single-channel input (`config.data.channels=1`) decodes grey pixels g (PIL's 'L': ITU-R 601-2 luma of a colour
image, the image itself for a grey one) and normalises them with `grey(preset)` (one mean m and std s, below), so
that a network whose first layer is folded from an RGB one (transfusion_jax.surgery.fit) computes on g what the RGB
network computes on g replicated to three channels.
"""

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Normalization:
    """`x = (pixels_uint8 / 255 * scale - mean) / std`, channels first reordered to `channel_order`."""

    mean: tuple
    std: tuple
    scale: float
    channel_order: Literal["RGB", "BGR"]

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean):
            raise ValueError(f"mean and std need 3 channels (or 1 for grey input), got mean={self.mean} std={self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def __call__(self, pixels, xp=np):
        """Normalises uint8 (or 0..255 float) pixels [..., H, W, channels] to float32; `xp=jax.numpy` runs it on
        device (the pipeline ships uint8, 4x fewer bytes, and normalises there in one fused pass)."""
        x = xp.asarray(pixels).astype(xp.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = x * np.float32(self.scale / 255.0)
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


PRESETS = {
    "torchvision": Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1.0, channel_order="RGB"),
    "keras_resnet50": Normalization(
        mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), scale=255.0, channel_order="BGR"
    ),
    "inception": Normalization(mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0), scale=2.0, channel_order="RGB"),
    "none": Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=1.0, channel_order="RGB"),
}


CHANNELS = (1, 3)


def grey(rgb: Normalization) -> Normalization:
    """The one-channel normalisation that goes with RGB preset `rgb`: x = (g / 255 * scale - m) / s with
    m = sum_c(mean_c / std_c) / sum_c(1 / std_c) and s = 3 / sum_c(1 / std_c).

    Why these: folding the RGB first layer W_c into one channel gives the kernel s * sum_c W_c / std_c and a constant
    sum_c W_c (m - mean_c) / std_c per tap (surgery.fit). With this m that constant is zero whenever the filter
    weighs the three channels alike (a luminance filter), so the one-channel layer's zero padding (the pixel value m)
    costs such filters nothing at the image border; with this s the kernel is the plain sum of the three when the
    stds are equal. torchvision's ImageNet preset gives m = 0.4488, s = 0.2260."""
    if rgb.channels != 3:
        raise ValueError(f"grey() needs an RGB normalisation, got {rgb.channels} channel(s).")
    inverse = 1.0 / np.asarray(rgb.std, np.float64)
    m = float(np.sum(np.asarray(rgb.mean, np.float64) * inverse) / np.sum(inverse))
    return Normalization(mean=(m,), std=(float(3.0 / np.sum(inverse)),), scale=rgb.scale, channel_order="RGB")


def get_normalization(name: str, channels: int = 3) -> Normalization:
    """The preset called `name` (its `grey` form for 1 channel); raises listing the valid names."""
    if name not in PRESETS:
        raise ValueError(f"Unknown normalization {name!r}; valid names: {sorted(PRESETS)}")
    if channels not in CHANNELS:
        raise ValueError(f"config.data.channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return PRESETS[name] if channels == 3 else grey(PRESETS[name])


def resize(image: Image.Image, size: int, mode: str, channels: int = 3) -> Image.Image:
    """`size`x`size` image, RGB (a grey x-ray replicated to 3 channels) or, for `channels=1`, grey ('L': the luma
    of a colour image). 'center_crop' keeps the aspect ratio (fundus photos are wider than tall and their disc is
    centred); 'squash' resizes the whole frame (chest x-rays: keep the full field of view)."""
    if channels not in CHANNELS:
        raise ValueError(f"config.data.channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    image = image.convert("RGB" if channels == 3 else "L")
    if mode == "center_crop":
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    elif mode != "squash":
        raise ValueError(f"resize mode must be 'center_crop' or 'squash', got {mode!r}")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    return image


@dataclasses.dataclass(frozen=True)
class Augment:
    """Train augmentation (`config.data.augment` without `enabled`): brightness and contrast factors uniform in
    [1 - b, 1 + b], flips with probability 1/2 where allowed, then an affine about the centre (rotation uniform in
    +-rotate_deg, clockwise on screen for positive angles; isotropic scale uniform in [scale_min, scale_max]; shift
    uniform in +-translate of the side, per axis). Frozen (hashable): it is a static argument of the jit."""

    hflip: bool
    vflip: bool
    rotate_deg: float
    translate: float
    scale_min: float
    scale_max: float
    brightness: float
    contrast: float

    def __post_init__(self):
        if self.rotate_deg < 0 or self.translate < 0 or self.brightness < 0 or self.contrast < 0:
            raise ValueError(f"augment ranges must be >= 0, got {self}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"augment needs 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if self.brightness > 1 or self.contrast > 1:
            raise ValueError(f"augment brightness and contrast must be <= 1 (factors 1 +- b), got {self}")

    @property
    def has_affine(self) -> bool:
        return bool(self.rotate_deg or self.translate or self.scale_min != 1 or self.scale_max != 1)


def draw_augment(key: jax.Array, cfg: Augment, size: int) -> dict:
    """The random draws of one example's augmentation, a pure function of its key (so a resumed run redraws the
    same transform). Scalars: hflip, vflip (bool), angle (radians), scale, tx, ty (pixels), brightness, contrast."""
    k = jax.random.split(key, 8)
    uniform = lambda i, lo, hi: jax.random.uniform(k[i], (), jnp.float32, lo, hi)  # noqa: E731
    angle = jnp.deg2rad(uniform(2, -cfg.rotate_deg, cfg.rotate_deg))
    return dict(
        hflip=jnp.logical_and(cfg.hflip, uniform(0, 0, 1) < 0.5),
        vflip=jnp.logical_and(cfg.vflip, uniform(1, 0, 1) < 0.5),
        angle=angle,
        scale=uniform(3, cfg.scale_min, cfg.scale_max),
        tx=uniform(4, -cfg.translate, cfg.translate) * size,
        ty=uniform(5, -cfg.translate, cfg.translate) * size,
        brightness=uniform(6, 1 - cfg.brightness, 1 + cfg.brightness),
        contrast=uniform(7, 1 - cfg.contrast, 1 + cfg.contrast),
    )


def apply_augment(image: jax.Array, draws: dict, cfg: Augment) -> jax.Array:
    """float32 [H, W, C] (C = 3, or 1 for grey input) in 0..255 -> the same, transformed by `draws` (see
    `draw_augment`): brightness and contrast (as PIL's ImageEnhance, about the image's mean gray level), then flips,
    then the affine warp with bilinear interpolation and black outside the frame. Colour comes first so that its mean
    reduces the decoded pixels, and the flips are folded into the warp's sampling positions: a reduction over, or a
    select under, the warp's gathers runs several times slower on XLA:CPU. `cfg` only skips the stages it disables
    (static)."""
    x = image
    if cfg.brightness or cfg.contrast:
        x = jnp.clip(x * draws["brightness"], 0, 255)
        luma = x @ jnp.asarray(_LUMA, jnp.float32) if x.shape[-1] == 3 else x[..., 0]
        mean = jnp.mean(luma)  # gray level as PIL's convert('L'), ITU-R 601-2
        x = jnp.clip(draws["contrast"] * x + (1 - draws["contrast"]) * mean, 0, 255)
    hflip = draws["hflip"] if cfg.hflip else False
    vflip = draws["vflip"] if cfg.vflip else False
    if cfg.has_affine:
        return _affine(x, draws["angle"], draws["scale"], draws["tx"], draws["ty"], hflip, vflip)
    if cfg.hflip:
        x = jnp.where(hflip, x[:, ::-1], x)
    if cfg.vflip:
        x = jnp.where(vflip, x[::-1], x)
    return x


def augment(image: jax.Array, key: jax.Array, cfg: Augment) -> jax.Array:
    """One example's train augmentation on the device: float32 [H, W, C] (0..255) -> the same. The pipeline calls
    it under jit and vmap with key = fold_in(fold_in(key(seed), epoch), position in epoch)."""
    return apply_augment(image, draw_augment(key, cfg, image.shape[0]), cfg)


_LUMA = (0.299, 0.587, 0.114)


def _affine(x, angle, scale, tx, ty, hflip=False, vflip=False):
    """Output pixel (x, y) (column, row; pixel centres at integers) samples the input at
    R(-angle) (x - c - tx, y - c - ty) / scale + c with c the image centre: content turns clockwise on screen by
    `angle`, grows by `scale` and moves right by tx, down by ty; the sampling position is then mirrored where the
    image is flipped (flip, then warp). Bilinear, zero outside the frame (scipy.ndimage's mode 'grid-constant').
    Written by hand rather than with jax.scipy.ndimage.map_coordinates, which gathers each channel separately: one
    gather of RGB triples per neighbour is 3-4x faster on XLA:CPU under vmap."""
    height, width = x.shape[:2]
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    u, v = cols - cx - tx, rows - cy - ty
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    source_cols = cos * u + sin * v + cx
    source_rows = -sin * u + cos * v + cy
    source_cols = jnp.where(hflip, width - 1 - source_cols, source_cols)
    source_rows = jnp.where(vflip, height - 1 - source_rows, source_rows)
    return sample_bilinear(x, source_rows, source_cols)


def sample_bilinear(x, source_rows, source_cols):
    """[H, W, C] image sampled at fractional (row, col) positions [h, w] (pixel centres at integers): bilinear, zero
    outside the frame (scipy.ndimage's mode 'grid-constant'). One gather of whole pixels (all channels) per
    neighbour: the fast form on XLA:CPU under vmap (see `_affine`). Every warp of the package samples through it."""
    height, width = x.shape[:2]
    row0, col0 = jnp.floor(source_rows), jnp.floor(source_cols)
    fy, fx = source_rows - row0, source_cols - col0
    row0, col0 = row0.astype(jnp.int32), col0.astype(jnp.int32)
    out = jnp.zeros(source_rows.shape + x.shape[2:], x.dtype)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            r, c = row0 + dy, col0 + dx
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            pixel = x[jnp.clip(r, 0, height - 1), jnp.clip(c, 0, width - 1)]
            out = out + jnp.where(inside, wy * wx, 0.0)[..., None] * pixel
    return out


@dataclasses.dataclass(frozen=True)
class BlockShuffle:
    """Block-shuffled inputs (Neyshabur, Sedghi & Zhang, NeurIPS 2020): cut the image into tiles of `block_size` x
    `block_size` pixels and permute the tiles. By default one permutation, drawn from `seed`, serves every image
    (what the authors' public code does: the task stays a fixed rearrangement of the original one);
    `per_example=True` draws each example's own fixed permutation from (seed, its index in the source), so an image
    still looks the same in every epoch and split but no tile position means the same thing across images."""

    block_size: int
    seed: int = 0
    per_example: bool = False

    def check(self, image_size: int):
        """Raises unless `block_size` tiles an `image_size` square exactly (naming the nearest sizes that do)."""
        if self.block_size <= 0:
            raise ValueError(f"block_shuffle.block_size must be positive, got {self.block_size}")
        if image_size % self.block_size:
            below = image_size - image_size % self.block_size
            raise ValueError(
                f"block_shuffle.block_size {self.block_size} does not tile image_size {image_size}: choose a block "
                f"size that divides it, or set config.data.image_size to a multiple such as {below or self.block_size}"
                f" or {below + self.block_size}"
            )

    def key(self, example: jax.Array) -> jax.Array:
        key = jax.random.key(self.seed)
        return jax.random.fold_in(key, example) if self.per_example else key


def block_shuffle(image: jax.Array, key: jax.Array, block_size: int) -> jax.Array:
    """[H, W, C] cut into (H / b) x (W / b) tiles of b x b pixels, row-major; output tile j is input tile perm[j]
    with perm = jax.random.permutation(key, number of tiles)."""
    height, width, channels = image.shape
    gh, gw = height // block_size, width // block_size
    tiles = image.reshape(gh, block_size, gw, block_size, channels).transpose(0, 2, 1, 3, 4)
    tiles = tiles.reshape(gh * gw, block_size, block_size, channels)
    tiles = tiles[jax.random.permutation(key, gh * gw)]
    return tiles.reshape(gh, gw, block_size, block_size, channels).transpose(0, 2, 1, 3, 4).reshape(image.shape)
