"""Normalisation presets against closed forms and the reference libraries; resize and augmentation geometry."""

import types

import numpy as np
import pytest
from PIL import Image

from transfusion_jax.data import preprocess


def _pixels(seed=0, shape=(2, 5, 7, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_presets_match_closed_forms():
    x = _pixels().astype(np.float64)
    imagenet_mean, imagenet_std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = {
        "torchvision": (x / 255 - imagenet_mean) / imagenet_std,
        "keras_resnet50": x[..., ::-1] - np.array([103.939, 116.779, 123.68]),
        "inception": x / 127.5 - 1,
        "none": x / 255,
    }
    for name, want in expected.items():
        got = preprocess.get_normalization(name)(x.astype(np.uint8))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-5, err_msg=name)


def test_keras_presets_match_keras_applications():
    keras = pytest.importorskip("keras")
    x = _pixels(1).astype(np.float32)
    np.testing.assert_allclose(
        preprocess.get_normalization("keras_resnet50")(x),
        np.asarray(keras.applications.resnet50.preprocess_input(x.copy())),
        atol=1e-4,
    )
    np.testing.assert_allclose(
        preprocess.get_normalization("inception")(x),
        np.asarray(keras.applications.inception_v3.preprocess_input(x.copy())),
        atol=1e-6,
    )


def test_torchvision_preset_matches_torchvision_transforms():
    transforms = pytest.importorskip("torchvision.transforms")
    image = _pixels(2, (6, 9, 3))
    normalize = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    )
    want = normalize(Image.fromarray(image)).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(preprocess.get_normalization("torchvision")(image), want, atol=1e-5)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="'inception'.*'keras_resnet50'.*'none'.*'torchvision'"):
        preprocess.get_normalization("imagenet")
    with pytest.raises(ValueError, match="channel_order"):
        preprocess.Normalization((0, 0, 0), (1, 1, 1), 1.0, "RGBA")


def test_resize_center_crop_and_gray_replication():
    wide = np.zeros((6, 12), np.uint8)
    wide[:, 3:9] = 200  # the central 6x6 square is bright, the sides dark
    out = np.asarray(preprocess.resize(Image.fromarray(wide), 6, "center_crop"))
    assert out.shape == (6, 6, 3)
    assert (out == 200).all()  # crop kept exactly the centre; gray -> 3 equal channels
    squashed = np.asarray(preprocess.resize(Image.fromarray(wide), 6, "squash"))
    assert squashed[:, 0].max() < 100 and squashed[:, 3].min() == 200
    with pytest.raises(ValueError, match="resize mode"):
        preprocess.resize(Image.fromarray(wide), 6, "pad")


@pytest.mark.parametrize("size", [9, 10])
def test_affine_geometry_matches_numpy(size):
    a = np.random.default_rng(size).integers(0, 255, (size, size)).astype(np.uint8)
    image = Image.fromarray(a)

    def warp(angle, scale, tx, ty):
        return np.asarray(
            image.transform(
                (size, size),
                Image.AFFINE,
                preprocess._inverse_affine(angle, scale, tx, ty, size),
                resample=Image.NEAREST,
            )
        )

    np.testing.assert_array_equal(warp(0, 1, 0, 0), a)
    np.testing.assert_array_equal(warp(np.pi / 2, 1, 0, 0), np.rot90(a, -1))  # +angle: clockwise on screen
    np.testing.assert_array_equal(warp(0, 1, 2, 0)[:, 2:], a[:, :-2])  # +tx moves content right
    np.testing.assert_array_equal(warp(0, 1, 0, -3)[:-3], a[3:])  # -ty moves content up
    zoom = warp(0, 2, 0, 0)  # x2 about the centre: each central pixel becomes a 2x2 block
    c = size // 2
    np.testing.assert_array_equal(zoom[c - 2 : c + 2 : 2, c - 2 : c + 2 : 2], a[c - 1 : c + 1, c - 1 : c + 1])


def _augment_cfg(**overrides):
    cfg = dict(
        hflip=False,
        vflip=False,
        rotate_deg=0.0,
        translate=0.0,
        scale_min=1.0,
        scale_max=1.0,
        brightness=0.0,
        contrast=0.0,
    )
    cfg.update(overrides)
    return types.SimpleNamespace(**cfg)


def test_augment_identity_flip_and_determinism():
    image = Image.fromarray(_pixels(3, (16, 16, 3)))
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(np.asarray(preprocess.augment(image, rng, _augment_cfg())), np.asarray(image))
    flips = {
        tuple(np.asarray(preprocess.augment(image, np.random.default_rng(s), _augment_cfg(hflip=True))).ravel())
        for s in range(20)
    }
    assert flips == {tuple(np.asarray(image).ravel()), tuple(np.asarray(image)[:, ::-1].ravel())}
    full = _augment_cfg(
        hflip=True, rotate_deg=15.0, translate=0.05, scale_min=0.9, scale_max=1.1, brightness=0.2, contrast=0.2
    )
    one = np.asarray(preprocess.augment(image, np.random.default_rng(7), full))
    two = np.asarray(preprocess.augment(image, np.random.default_rng(7), full))
    other = np.asarray(preprocess.augment(image, np.random.default_rng(8), full))
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, other)


@pytest.mark.parametrize("name", sorted(preprocess.PRESETS))
def test_device_normalisation_matches_host(name):
    import jax.numpy as jnp

    x = _pixels(4)
    norm = preprocess.get_normalization(name)
    np.testing.assert_allclose(np.asarray(norm(x, xp=jnp)), norm(x), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("b, c", [(1.3, 0.7), (0.8, 1.25), (1.0, 1.0)])
def test_brightness_contrast_table_matches_image_enhance(b, c):
    from PIL import ImageEnhance

    image = Image.fromarray(_pixels(5, (20, 24, 3)))
    want = np.asarray(ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(b)).enhance(c), np.int64)
    got = np.asarray(preprocess.brightness_contrast(image, b, c), np.int64)
    assert np.abs(got - want).max() <= 2  # PIL truncates each blend, we round
