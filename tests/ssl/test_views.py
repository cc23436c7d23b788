"""The views against independent references: the crop against PyTorch's bilinear resize of the cropped region, the
rotation and flips against NumPy's exact rot90 and mirrors, the blur against scipy.ndimage.gaussian_filter, the
colour jitter against PIL's ImageEnhance; grey images stay grey; flips only where the task allows them; the views
are the same on 1 device and on 8."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import torch
from absl.testing import parameterized
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image, ImageEnhance

from transfusion_jax.data import preprocess
from transfusion_jax.ssl import views
from transfusion_jax.train import partition

NOTHING = dict(
    angle=0.0,
    hflip=False,
    vflip=False,
    jitter=False,
    brightness=1.0,
    contrast=1.0,
    saturation=1.0,
    grayscale=False,
    blur=False,
    sigma=1.0,
)


def _image(seed, size, channels=3):
    return np.random.default_rng(seed).uniform(0, 255, (size, size, channels)).astype(np.float32)


def _full_frame(size):
    return dict(NOTHING, cy=size / 2, cx=size / 2, h=float(size), w=float(size))


class ViewsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((16, 3, 5, 8, 8), (16, 2, 1, 12, 6), (15, 4, 6, 5, 9))
    def test_crop_matches_pytorch_bilinear_resize_of_the_region(self, size, top, left, h, w):
        """Crop box rows top..top+h, cols left..left+w (inside the frame), upsampled to size x size."""
        image = _image(0, size)
        d = dict(NOTHING, cy=top + h / 2, cx=left + w / 2, h=float(h), w=float(w))
        ours = np.asarray(self.variant(views.warp)(jnp.asarray(image), d))
        region = torch.from_numpy(image[top : top + h, left : left + w].transpose(2, 0, 1)[None].copy())
        ref = torch.nn.functional.interpolate(region.double(), size=(size, size), mode="bilinear", align_corners=False)
        ref = ref[0].numpy().transpose(1, 2, 0)
        # PyTorch clamps positions half a pixel beyond the region to its edge; inside they sample the same points.
        inner = (slice(1, -1), slice(1, -1)) if top > 0 and left > 0 else (slice(2, -2), slice(2, -2))
        np.testing.assert_allclose(ours[inner], ref[inner], atol=2e-3)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rotation_and_flips_by_hand(self):
        size = 9
        image = _image(1, size)
        warp = self.variant(views.warp)
        full = _full_frame(size)
        np.testing.assert_allclose(np.asarray(warp(image, full)), image, atol=1e-4)  # the identity
        np.testing.assert_allclose(np.asarray(warp(image, dict(full, angle=np.pi / 2))), np.rot90(image, -1), atol=1e-3)
        np.testing.assert_allclose(np.asarray(warp(image, dict(full, hflip=True))), image[:, ::-1], atol=1e-3)
        np.testing.assert_allclose(np.asarray(warp(image, dict(full, vflip=True))), image[::-1], atol=1e-3)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((16, 0.6), (32, 1.3), (224, 2.0))
    def test_blur_matches_scipy_gaussian_filter(self, size, sigma):
        image = _image(2, size)
        radius = views.blur_radius(size)
        ours = np.asarray(self.variant(views.blur)(jnp.asarray(image), jnp.float32(sigma)))
        ref = np.stack(
            [
                scipy.ndimage.gaussian_filter(image[..., k].astype(np.float64), sigma, mode="reflect", radius=radius)
                for k in range(3)
            ],
            axis=-1,
        )
        np.testing.assert_allclose(ours, ref, atol=1e-3)

    @chex.variants(with_jit=True, without_jit=True)
    def test_colour_jitter_matches_pil_image_enhance(self):
        image = np.random.default_rng(3).integers(0, 256, (12, 12, 3)).astype(np.uint8)
        for brightness, contrast, saturation in ((1.3, 1.0, 1.0), (1.0, 0.7, 1.0), (1.0, 1.0, 0.8), (0.8, 1.2, 1.2)):
            d = dict(NOTHING, brightness=brightness, contrast=contrast, saturation=saturation)
            ours = np.asarray(self.variant(views.jitter)(jnp.asarray(image, jnp.float32), d))
            pil = Image.fromarray(image)
            for enhance, factor in (
                (ImageEnhance.Brightness, brightness),
                (ImageEnhance.Contrast, contrast),
                (ImageEnhance.Color, saturation),
            ):
                pil = enhance(pil).enhance(factor)
            # PIL rounds to uint8 after each step (and its grey levels too): half a level per rounding, grown by
            # the factors of the steps after it
            steps = sum(f != 1.0 for f in (brightness, contrast, saturation))
            np.testing.assert_allclose(ours, np.asarray(pil, np.float32), atol=1.5 * steps)


def test_grey_images_stay_grey_and_colour_is_never_rotated():
    """Every view of a grey image is grey (no hue jitter; saturation and greyscale change nothing), and the
    channel order of a colour image is never permuted: its mean colour stays red-dominant."""
    cfg = views.ViewConfig(jitter_prob=1.0, grayscale_prob=0.5, blur_prob=0.5)
    grey = np.repeat(_image(4, 16, channels=1), 3, axis=-1)
    red = np.stack([np.full((16, 16), 200.0), np.full((16, 16), 40.0), np.full((16, 16), 20.0)], -1)
    view = jax.jit(lambda x, k: views.apply(x, views.draw(k, cfg, 16), cfg))
    for seed in range(20):
        out = np.asarray(view(jnp.asarray(grey, jnp.float32), jax.random.key(seed)))
        np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-3)
        np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-3)
        colour = np.asarray(view(jnp.asarray(red, jnp.float32), jax.random.key(seed)))
        centre = colour[4:12, 4:12].reshape(-1, 3).mean(0)
        assert centre[0] >= centre[1] >= centre[2]


def test_flips_only_where_the_task_allows_them():
    draw = jax.jit(functools.partial(views.draw, size=16), static_argnums=1)
    keys = [jax.random.key(s) for s in range(64)]
    never = views.ViewConfig(hflip=False, vflip=False)
    assert not any(bool(draw(k, never)["hflip"]) or bool(draw(k, never)["vflip"]) for k in keys)
    both = views.ViewConfig(hflip=True, vflip=True)
    assert 16 < sum(bool(draw(k, both)["hflip"]) for k in keys) < 48
    assert 16 < sum(bool(draw(k, both)["vflip"]) for k in keys) < 48


def test_crop_draws_stay_in_their_ranges():
    cfg = views.ViewConfig(crop_scale=(0.3, 0.9), aspect=(0.8, 1.25), rotate_deg=15.0)
    draws = jax.vmap(lambda k: views.draw(k, cfg, 32))(jax.random.split(jax.random.key(0), 2000))
    area = np.asarray(draws["h"] * draws["w"]) / 32**2
    ratio = np.asarray(draws["w"] / draws["h"])
    assert area.min() >= 0.3 - 1e-5 and area.max() <= 0.9 + 1e-5
    assert ratio.min() >= 0.8 - 1e-5 and ratio.max() <= 1.25 + 1e-5
    assert np.all(np.asarray(draws["cx"] - draws["w"] / 2) >= -1e-4)  # the box lies inside the frame
    assert np.all(np.asarray(draws["cy"] + draws["h"] / 2) <= 32 + 1e-4)
    assert np.abs(np.rad2deg(np.asarray(draws["angle"]))).max() <= 15 + 1e-4


def test_two_views_are_the_same_on_one_and_eight_devices():
    """Each example's draws depend on its place in the global batch only, so splitting the batch over 8 devices
    changes nothing; the two views of an example differ, and differ from the other examples'."""
    cfg = views.ViewConfig()
    norm = preprocess.get_normalization("torchvision")
    images = np.random.default_rng(5).uniform(0, 1, (16, 16, 16, 3)).astype(np.float32)
    rng = jax.random.key(3)
    out = {}
    for n in (1, 8):
        mesh = partition.make_data_mesh(jax.devices()[:n])
        batch = jax.device_put(images, NamedSharding(mesh, P(partition.DATA_AXIS)))
        make = jax.jit(functools.partial(views.two_views, cfg, norm, mesh))
        out[n] = np.asarray(make(rng, batch))
    assert out[1].shape == (32, 16, 16, 3)
    np.testing.assert_allclose(out[1], out[8], atol=1e-5)
    assert not np.allclose(out[1][0], out[1][1])  # the two views of example 0
    # view 0 of example 3 is the single-view function of its own key, whatever else is in the batch
    alone = views.apply(jnp.asarray(images[3] * 255.0), views.draw(views.view_key(rng, 3, 0), cfg, 16), cfg)
    np.testing.assert_allclose(out[8][6], norm(np.asarray(alone)), atol=1e-4)
