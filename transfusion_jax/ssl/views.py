"""The two augmented views of each image that self-supervised pretraining compares, made on the devices.

Per view, in this order (SimCLR's and BYOL's pipeline, reshaped for medical images; docs/ssl.md lists every
departure and why):
  1. geometry, one bilinear warp: a random resized crop (area a fraction of the image uniform in `crop_scale`,
     aspect ratio log-uniform in `aspect`, placed uniformly inside the frame), turned by an angle uniform in
     +-`rotate_deg` about its centre, mirrored only where the task allows it (`hflip` / `vflip`: a chest x-ray is
     never mirrored); black outside the frame;
  2. with probability `jitter_prob`, brightness, contrast and saturation factors uniform in 1 -+ each strength
     (as PIL's ImageEnhance: scale, blend with the mean grey level, blend with each pixel's grey level); then with
     probability `grayscale_prob` the view turned grey (SimCLR's and BYOL's random greyscale). There is no hue
     jitter: on a fundus photo hue carries the pathology (red haemorrhages, yellow exudates). On a grey image every
     step here keeps it grey (saturation and greyscale leave it unchanged);
  3. with probability `blur_prob`, a Gaussian blur with sigma uniform in `blur_sigma` pixels at 224 px, scaled to
     the image size, and a kernel a tenth of the image side (SimCLR's), reflecting at the borders.
Each example's draws come from fold_in(fold_in(rng, its index in the global batch), view): a pure function of the
step's key and the example's position, so the views are the same on 1 device or 8 and a resumed run redraws them.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from transfusion_jax.data import preprocess
from transfusion_jax.train import partition

# Blur sigmas are given in pixels of a 224 px image (SimCLR's), and scaled with the image side.
BLUR_REFERENCE_SIZE = 224
_LUMA = (0.299, 0.587, 0.114)  # grey level as PIL's convert('L'), ITU-R 601-2


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """`config.ssl.views` with the flips resolved for the task (hashable: a static argument of the jitted step)."""

    crop_scale: tuple[float, float] = (0.25, 1.0)
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    vflip: bool = False
    rotate_deg: float = 10.0
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self):
        lo, hi = self.crop_scale
        problems = []
        if not 0 < lo <= hi <= 1:
            problems.append(f"crop_scale {self.crop_scale} needs 0 < min <= max <= 1 (fractions of the image area)")
        if not 0 < self.aspect[0] <= self.aspect[1]:
            problems.append(f"aspect {self.aspect} needs 0 < min <= max")
        if not 0 <= self.rotate_deg <= 180:
            problems.append(f"rotate_deg {self.rotate_deg} must lie in [0, 180]")
        for name in ("jitter_prob", "grayscale_prob", "blur_prob", "brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} {getattr(self, name)} must lie in [0, 1]")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            problems.append(f"blur_sigma {self.blur_sigma} needs 0 < min <= max")
        if problems:
            raise ValueError("config.ssl.views: " + "; ".join(problems) + ".")


def blur_radius(size: int) -> int:
    """Half the Gaussian kernel: SimCLR's kernel is a tenth of the image side (23 px at 224), at least 3 px wide."""
    return max(1, int(0.1 * size) // 2)


def draw(key: jax.Array, cfg: ViewConfig, size: int) -> dict:
    """One view's random draws, a pure function of its key: the crop box (centre cy, cx and sides h, w in pixels of
    the input, continuous coordinates with pixel k spanning [k, k + 1)), angle (radians), hflip, vflip, jitter,
    brightness, contrast, saturation, grayscale, blur (bools and factors), sigma (pixels)."""
    k = jax.random.split(key, 14)
    uniform = lambda i, lo, hi: jax.random.uniform(k[i], (), jnp.float32, lo, hi)  # noqa: E731
    area = uniform(0, *cfg.crop_scale)
    log_ratio = uniform(1, math.log(cfg.aspect[0]), math.log(cfg.aspect[1]))
    w = jnp.minimum(size * jnp.sqrt(area * jnp.exp(log_ratio)), size)
    h = jnp.minimum(size * jnp.sqrt(area / jnp.exp(log_ratio)), size)
    sigma_scale = size / BLUR_REFERENCE_SIZE
    return dict(
        cy=uniform(2, 0, 1) * (size - h) + h / 2,
        cx=uniform(3, 0, 1) * (size - w) + w / 2,
        h=h,
        w=w,
        angle=jnp.deg2rad(uniform(4, -cfg.rotate_deg, cfg.rotate_deg)),
        hflip=jnp.logical_and(cfg.hflip, uniform(5, 0, 1) < 0.5),
        vflip=jnp.logical_and(cfg.vflip, uniform(6, 0, 1) < 0.5),
        jitter=uniform(7, 0, 1) < cfg.jitter_prob,
        brightness=uniform(8, 1 - cfg.brightness, 1 + cfg.brightness),
        contrast=uniform(9, 1 - cfg.contrast, 1 + cfg.contrast),
        saturation=uniform(10, 1 - cfg.saturation, 1 + cfg.saturation),
        blur=uniform(11, 0, 1) < cfg.blur_prob,
        sigma=uniform(12, *cfg.blur_sigma) * sigma_scale,
        grayscale=uniform(13, 0, 1) < cfg.grayscale_prob,
    )


def warp(image: jax.Array, d: dict) -> jax.Array:
    """[S, S, C] -> the crop box of `d` turned by d['angle'] (clockwise on screen for positive angles), mirrored
    where d['hflip'] / d['vflip'], resampled to [S, S, C] (bilinear, zero outside the frame). Output pixel (r, c)
    samples the input at centre + R(-angle) (u w, v h) with (u, v) in [-1/2, 1/2]^2 its (column, row) position in
    the output, mirrored first."""
    size = image.shape[0]
    t = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size - 0.5
    v, u = jnp.meshgrid(t, t, indexing="ij")
    u = jnp.where(d["hflip"], -u, u) * d["w"]
    v = jnp.where(d["vflip"], -v, v) * d["h"]
    cos, sin = jnp.cos(d["angle"]), jnp.sin(d["angle"])
    cols = d["cx"] + cos * u + sin * v - 0.5  # continuous coordinates -> pixel-centre indices
    rows = d["cy"] - sin * u + cos * v - 0.5
    return preprocess.sample_bilinear(image, rows, cols)


def jitter(image: jax.Array, d: dict) -> jax.Array:
    """Brightness, then contrast, then saturation, as PIL's ImageEnhance (0..255 floats, clipped after each)."""
    luma = jnp.asarray(_LUMA, jnp.float32)
    x = jnp.clip(image * d["brightness"], 0, 255)
    mean = jnp.mean(x @ luma)
    x = jnp.clip(d["contrast"] * x + (1 - d["contrast"]) * mean, 0, 255)
    grey = (x @ luma)[..., None]
    return jnp.clip(d["saturation"] * x + (1 - d["saturation"]) * grey, 0, 255)


def grayscale(image: jax.Array) -> jax.Array:
    """Each pixel's grey level (PIL's convert('L')) in all channels."""
    return jnp.broadcast_to((image @ jnp.asarray(_LUMA, jnp.float32))[..., None], image.shape)


def gaussian_matrix(size: int, sigma: jax.Array, radius: int) -> jax.Array:
    """[size, size] matrix B with B @ signal = the signal convolved with a normalised Gaussian of `sigma` truncated
    at `radius`, reflecting at the borders (scipy.ndimage's mode 'reflect': d c b a | a b c d | d c b a). A blur
    is then two small matmuls, and sigma may differ per example under vmap."""
    offsets = np.arange(-radius, radius + 1)
    weights = jnp.exp(-0.5 * (jnp.asarray(offsets, jnp.float32) / sigma) ** 2)
    weights = weights / jnp.sum(weights)
    source = np.arange(size)[:, None] + offsets[None, :]
    source = np.where(source < 0, -source - 1, source)
    source = np.where(source >= size, 2 * size - 1 - source, source)  # radius < size: one reflection suffices
    onehot = np.eye(size, dtype=np.float32)[source]  # [size, taps, size]
    return jnp.einsum("t,itj->ij", weights, jnp.asarray(onehot))


def blur(image: jax.Array, sigma: jax.Array) -> jax.Array:
    size = image.shape[0]
    matrix = gaussian_matrix(size, sigma, blur_radius(size))
    x = jnp.einsum("ij,jkc->ikc", matrix, image, precision="highest")
    return jnp.einsum("kj,ijc->ikc", matrix, x, precision="highest")


def apply(image: jax.Array, d: dict, cfg: ViewConfig) -> jax.Array:
    """float32 [S, S, C] in 0..255 -> one view in 0..255 (the module docstring's steps; `cfg` only skips what it
    turns off)."""
    x = warp(image, d)
    if cfg.jitter_prob and (cfg.brightness or cfg.contrast or cfg.saturation):
        x = jnp.where(d["jitter"], jitter(x, d), x)
    if cfg.grayscale_prob:
        x = jnp.where(d["grayscale"], grayscale(x), x)
    if cfg.blur_prob:
        x = jnp.where(d["blur"], blur(x, d["sigma"]), x)
    return jnp.clip(x, 0, 255)


def view_key(rng: jax.Array, example: jax.Array, view: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(rng, example), view)


def _views_of_rows(cfg: ViewConfig, normalization: preprocess.Normalization, rng, images, first):
    """[b, S, S, C] images in 0..1 whose global batch positions start at `first` -> [b, 2, S, S, C] model inputs."""
    size = images.shape[1]
    examples = first + jnp.arange(images.shape[0])

    def one(image, example):
        pixels = image * 255.0
        views = [apply(pixels, draw(view_key(rng, example, v), cfg, size), cfg) for v in (0, 1)]
        return jnp.stack([normalization(x, xp=jnp) for x in views])

    return jax.vmap(one)(images, examples)


def two_views(cfg: ViewConfig, normalization: preprocess.Normalization, mesh, rng, images) -> jax.Array:
    """[B, S, S, C] images in 0..1, split over the mesh's 'data' axis -> [2B, S, S, C] normalised model inputs, the
    two views of example i at rows 2i and 2i + 1 (so each device keeps its own examples' views: no communication).
    Traceable: the train step calls it inside its jit."""
    local = functools.partial(_views_of_rows, cfg, normalization)

    def per_device(rng, images):
        first = jax.lax.axis_index(partition.DATA_AXIS) * images.shape[0]
        return local(rng, images, first)

    views = jax.shard_map(
        per_device, mesh=mesh, in_specs=(P(), P(partition.DATA_AXIS)), out_specs=P(partition.DATA_AXIS)
    )(rng, images)
    return views.reshape((-1,) + views.shape[2:])
