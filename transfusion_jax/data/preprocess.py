"""Pixel preprocessing: normalisation presets that match pretrained weights, resizing, train augmentation.

A checkpoint converted from another framework stores the *name* of its preset (see
`transfusion_jax.pretrained`), so fine-tuning feeds the network the same input distribution it was trained on.

Normalisation formula (applied per channel, after reordering the channels to `channel_order`):

    x = (pixels_uint8 / 255 * scale - mean) / std

with `mean` and `std` given in the *output* channel order. This one formula covers every preset:
  'torchvision'    scale 1,   ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), RGB.
  'keras_resnet50' scale 255, mean (103.939, 116.779, 123.68) in BGR order, std 1, BGR (Keras "caffe" mode).
  'inception'      scale 2,   mean 1, std 1 -> x = pixels / 127.5 - 1 in [-1, 1], RGB.
  'none'           scale 1,   mean 0, std 1 -> x = pixels / 255 in [0, 1], RGB.
"""

import dataclasses
from typing import Literal

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
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 channels, got mean={self.mean} std={self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, pixels, xp=np):
        """Normalises uint8 (or 0..255 float) RGB pixels [..., H, W, 3] to float32; `xp=jax.numpy` runs it on
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


def get_normalization(name: str) -> Normalization:
    """The preset called `name`; raises listing the valid names."""
    if name not in PRESETS:
        raise ValueError(f"Unknown normalization {name!r}; valid names: {sorted(PRESETS)}")
    return PRESETS[name]


def resize(image: Image.Image, size: int, mode: str) -> Image.Image:
    """RGB `size`x`size` image. 'center_crop' keeps the aspect ratio (fundus photos are wider than tall and
    their disc is centred); 'squash' resizes the whole frame (chest x-rays: keep the full field of view)."""
    image = image.convert("RGB")  # grayscale x-rays are replicated to 3 channels here
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


def augment(image: Image.Image, rng: np.random.Generator, cfg) -> Image.Image:
    """Random train-time transform of a square RGB image; `cfg` is `config.data.augment`.

    Optional flips, a small affine (rotation, translation, isotropic scale) about the centre, then brightness
    and contrast jitter by factors in [1 - b, 1 + b] (as PIL's ImageEnhance). All draws come from `rng`, so a
    seeded stream is reproducible.
    """
    size = image.size[0]
    if cfg.hflip and rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if cfg.vflip and rng.random() < 0.5:
        image = image.transpose(Image.FLIP_TOP_BOTTOM)
    angle = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    scale = rng.uniform(cfg.scale_min, cfg.scale_max)
    tx, ty = rng.uniform(-cfg.translate, cfg.translate, size=2) * size
    if angle or scale != 1.0 or tx or ty:
        image = image.transform(
            (size, size), Image.AFFINE, _inverse_affine(angle, scale, tx, ty, size), resample=Image.BILINEAR
        )
    if cfg.brightness or cfg.contrast:
        b = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
        c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        image = brightness_contrast(image, b, c)
    return image


def brightness_contrast(image: Image.Image, b: float, c: float) -> Image.Image:
    """PIL's Brightness(b) then Contrast(c) as two lookup-table passes (faster than ImageEnhance's blends):
    v -> clip(b v), then v -> clip(c v + (1 - c) m), m the brightened image's mean gray level."""
    v = np.arange(256, dtype=np.float64)
    image = image.point(np.clip(np.rint(b * v), 0, 255).astype(int).tolist() * 3)
    mean = int(np.dot(image.convert("L").histogram(), v) / (image.size[0] * image.size[1]) + 0.5)
    return image.point(np.clip(np.rint(c * v + (1 - c) * mean), 0, 255).astype(int).tolist() * 3)


def _inverse_affine(angle: float, scale: float, tx: float, ty: float, size: int) -> tuple:
    """PIL wants the output->input map: invert `rotate(angle) * scale` about the centre, then shift by (tx, ty)."""
    c = size / 2.0  # PIL samples output pixel (x, y) at its centre (x + 0.5, y + 0.5)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # input = R^-1 / s @ (output - c - t) + c
    a, b, d, e = cos, sin, -sin, cos
    ox, oy = c + tx, c + ty
    return (a, b, c - a * ox - b * oy, d, e, c - d * ox - e * oy)
