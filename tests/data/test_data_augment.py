"""Device-side transforms against independent references: the augmentation's affine warp against
scipy.ndimage.affine_transform, its colour jitter against float64 NumPy and PIL's ImageEnhance, its random draws
against their ranges; block shuffling against a NumPy tile loop."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from absl.testing import parameterized
from PIL import Image, ImageEnhance

from transfusion_jax.data import preprocess

FULL = preprocess.Augment(
    hflip=True,
    vflip=True,
    rotate_deg=30.0,
    translate=0.1,
    scale_min=0.8,
    scale_max=1.2,
    brightness=0.3,
    contrast=0.3,
)
NOTHING = preprocess.Augment(
    hflip=False,
    vflip=False,
    rotate_deg=0.0,
    translate=0.0,
    scale_min=1.0,
    scale_max=1.0,
    brightness=0.0,
    contrast=0.0,
)
AFFINE_ONLY = NOTHING.__class__(**{**NOTHING.__dict__, "rotate_deg": 1.0})  # enables the warp stage


def _image(seed, size, channels=3):
    return np.random.default_rng(seed).uniform(0, 255, (size, size, channels)).astype(np.float32)


def reference_augment(image: np.ndarray, d: dict) -> np.ndarray:
    """float64 NumPy / scipy: brightness, then contrast about the mean ITU-R 601 luma, then flips, then the forward
    map p_out = s R(angle) (p_in - c) + c + t in screen coordinates (x right, y down; R turns clockwise on screen),
    inverted for scipy's output->input convention, bilinear with zeros outside ('grid-constant')."""
    x = np.clip(image.astype(np.float64) * d["brightness"], 0, 255)
    mean = (x @ np.array([0.299, 0.587, 0.114])).mean()
    x = np.clip(d["contrast"] * x + (1 - d["contrast"]) * mean, 0, 255)
    if d["hflip"]:
        x = x[:, ::-1]
    if d["vflip"]:
        x = x[::-1]
    size = x.shape[0]
    c = (size - 1) / 2
    cos, sin = np.cos(d["angle"]), np.sin(d["angle"])
    forward_xy = d["scale"] * np.array([[cos, -sin], [sin, cos]])
    forward_rc = forward_xy[::-1, ::-1]  # the same map on (row, col) = (y, x)
    inverse = np.linalg.inv(forward_rc)
    shift_rc = np.array([c + d["ty"], c + d["tx"]])
    offset = np.array([c, c]) - inverse @ shift_rc
    return np.stack(
        [
            scipy.ndimage.affine_transform(x[..., k], inverse, offset, order=1, mode="grid-constant", cval=0.0)
            for k in range(x.shape[-1])
        ],
        axis=-1,
    )


class AugmentMathsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(16, 17)
    def test_augment_matches_scipy_reference(self, size):
        augment = self.variant(functools.partial(preprocess.augment, cfg=FULL))
        draw = jax.jit(functools.partial(preprocess.draw_augment, cfg=FULL, size=size))
        flips = set()
        for seed in range(6):
            image, key = _image(seed, size), jax.random.key(seed)
            draws = {k: np.asarray(v).item() for k, v in draw(key).items()}
            flips.add((draws["hflip"], draws["vflip"]))
            np.testing.assert_allclose(
                np.asarray(augment(jnp.asarray(image), key)), reference_augment(image, draws), atol=2e-3
            )
        assert len(flips) > 1  # the keys exercised more than one flip combination

    @chex.variants(with_jit=True, without_jit=True)
    def test_affine_conventions_by_hand(self):
        """Exact-integer cases of the warp: +90 degrees turns content clockwise on screen, +tx moves it right,
        -ty moves it up, and the identity is exact."""
        size = 9
        a = _image(0, size, channels=1)
        expected = np.concatenate([a] * 3, axis=-1)
        image = jnp.asarray(expected)

        def warp(angle, tx, ty):
            draws = dict(hflip=False, vflip=False, angle=angle, scale=1.0, tx=tx, ty=ty, brightness=1.0, contrast=1.0)
            return np.asarray(self.variant(preprocess.apply_augment, static_argnums=2)(image, draws, AFFINE_ONLY))

        np.testing.assert_array_equal(warp(0.0, 0.0, 0.0), expected)
        np.testing.assert_allclose(warp(np.pi / 2, 0.0, 0.0), np.rot90(expected, -1), atol=1e-3)
        np.testing.assert_allclose(warp(0.0, 2.0, 0.0)[:, 2:], expected[:, :-2], atol=1e-3)
        assert not warp(0.0, 2.0, 0.0)[:, :2].any()  # uncovered columns are black
        np.testing.assert_allclose(warp(0.0, 0.0, -3.0)[:-3], expected[3:], atol=1e-3)


def test_flips_without_a_warp():
    flips_only = NOTHING.__class__(**{**NOTHING.__dict__, "hflip": True, "vflip": True})
    image = _image(2, 10)
    seen = set()
    for seed in range(8):
        key = jax.random.key(seed)
        d = preprocess.draw_augment(key, flips_only, 10)
        h, v = bool(d["hflip"]), bool(d["vflip"])
        seen.add((h, v))
        want = image[:, ::-1] if h else image
        want = want[::-1] if v else want
        np.testing.assert_array_equal(np.asarray(preprocess.augment(jnp.asarray(image), key, flips_only)), want)
    assert len(seen) > 2


def test_disabled_stages_leave_the_image_unchanged():
    image = jnp.asarray(_image(1, 12))
    np.testing.assert_array_equal(np.asarray(preprocess.augment(image, jax.random.key(3), NOTHING)), np.asarray(image))


@pytest.mark.parametrize("b, c", [(1.3, 0.7), (0.8, 1.25), (1.0, 1.0)])
def test_colour_jitter_matches_pil_image_enhance(b, c):
    pixels = np.random.default_rng(5).integers(0, 256, (20, 20, 3)).astype(np.uint8)
    want = np.asarray(
        ImageEnhance.Contrast(ImageEnhance.Brightness(Image.fromarray(pixels)).enhance(b)).enhance(c), np.float64
    )
    draws = dict(hflip=False, vflip=False, angle=0.0, scale=1.0, tx=0.0, ty=0.0, brightness=b, contrast=c)
    colour_only = NOTHING.__class__(**{**NOTHING.__dict__, "brightness": 0.5, "contrast": 0.5})
    got = np.asarray(preprocess.apply_augment(jnp.asarray(pixels, jnp.float32), draws, colour_only))
    assert np.abs(got - want).max() <= 2.5  # PIL rounds to integers after each of its two blends; we do not


def test_draws_cover_their_ranges_and_follow_the_key():
    size = 100
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = jax.vmap(lambda k: preprocess.draw_augment(k, FULL, size))(keys)
    d = {k: np.asarray(v) for k, v in draws.items()}
    for name in ("hflip", "vflip"):
        assert abs(d[name].mean() - 0.5) < 4 * np.sqrt(0.25 / len(keys)), name  # fair coin within 4 sigma
    assert abs(np.corrcoef(d["hflip"], d["vflip"])[0, 1]) < 0.1  # independent draws
    for name, lo, hi in (
        ("angle", -np.deg2rad(30), np.deg2rad(30)),
        ("scale", 0.8, 1.2),
        ("tx", -10, 10),
        ("ty", -10, 10),
        ("brightness", 0.7, 1.3),
        ("contrast", 0.7, 1.3),
    ):
        assert lo <= d[name].min() and d[name].max() <= hi, name
        span = hi - lo
        assert d[name].min() < lo + 0.01 * span and d[name].max() > hi - 0.01 * span, name  # fills the range
    assert not jax.vmap(lambda k: preprocess.draw_augment(k, NOTHING, size))(keys)["hflip"].any()
    again = preprocess.draw_augment(keys[7], FULL, size)
    chex.assert_trees_all_equal(again, jax.tree.map(lambda v: v[7], draws))


def test_augment_config_errors():
    with pytest.raises(ValueError, match="scale_min <= scale_max"):
        NOTHING.__class__(**{**NOTHING.__dict__, "scale_min": 1.2, "scale_max": 1.1})
    with pytest.raises(ValueError, match=">= 0"):
        NOTHING.__class__(**{**NOTHING.__dict__, "rotate_deg": -5.0})
    with pytest.raises(ValueError, match="<= 1"):
        NOTHING.__class__(**{**NOTHING.__dict__, "brightness": 1.5})


# ------------------------------------------------------------------------------------------------ block shuffle


def reference_block_shuffle(image: np.ndarray, perm: np.ndarray, b: int) -> np.ndarray:
    """Output tile j (row-major, b x b pixels) is input tile perm[j]."""
    g = image.shape[0] // b
    out = np.empty_like(image)
    for j, source in enumerate(perm):
        (r, c), (sr, sc) = divmod(j, g), divmod(int(source), g)
        out[r * b : (r + 1) * b, c * b : (c + 1) * b] = image[sr * b : (sr + 1) * b, sc * b : (sc + 1) * b]
    return out


class BlockShuffleTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(1, 2, 3, 4, 6)
    def test_block_shuffle_matches_numpy_tiles(self, b):
        image = _image(b, 12)
        key = jax.random.key(b)
        shuffle = self.variant(preprocess.block_shuffle, static_argnums=2)
        got = np.asarray(shuffle(jnp.asarray(image), key, b))
        perm = np.asarray(jax.random.permutation(key, (12 // b) ** 2))
        assert not np.array_equal(perm, np.arange(len(perm)))
        np.testing.assert_array_equal(got, reference_block_shuffle(image, perm, b))

    @chex.variants(with_jit=True, without_jit=True)
    def test_whole_image_block_is_the_identity(self):
        image = _image(0, 12)
        np.testing.assert_array_equal(
            np.asarray(self.variant(preprocess.block_shuffle, static_argnums=2)(image, jax.random.key(1), 12)), image
        )


def test_block_shuffle_keys_per_example_or_shared():
    per_example = preprocess.BlockShuffle(block_size=4, seed=3, per_example=True)
    shared = preprocess.BlockShuffle(block_size=4, seed=3)  # the default, as the authors' code

    def perm(key):
        return tuple(np.asarray(jax.random.permutation(key, 9)))

    assert perm(per_example.key(5)) == perm(per_example.key(5))
    assert len({perm(per_example.key(i)) for i in range(8)}) == 8
    assert len({perm(shared.key(i)) for i in range(8)}) == 1
    assert perm(preprocess.BlockShuffle(block_size=4, seed=4, per_example=True).key(5)) != perm(per_example.key(5))
    assert perm(preprocess.BlockShuffle(block_size=4, seed=4).key(5)) != perm(shared.key(5))


def test_block_shuffle_size_errors():
    with pytest.raises(ValueError, match="does not tile image_size 587.*576 or 608"):
        preprocess.BlockShuffle(block_size=32).check(587)
    with pytest.raises(ValueError, match="must be positive"):
        preprocess.BlockShuffle(block_size=-2).check(224)
    preprocess.BlockShuffle(block_size=32).check(224)
