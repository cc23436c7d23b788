"""Single-channel input (`config.data.channels=1`): the grey normalisation's closed form, grey decoding through the
real pipeline (a generated CheXpert folder and colour fundus photos), and augmentation that treats one channel as
the RGB pipeline treats the same grey image replicated."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data_helpers import make_config
from PIL import Image

from transfusion_jax.data import build_dataset, preprocess


def test_grey_normalisation_closed_form():
    tv = preprocess.PRESETS["torchvision"]
    g = preprocess.grey(tv)
    inv = [1 / 0.229, 1 / 0.224, 1 / 0.225]
    m = (0.485 * inv[0] + 0.456 * inv[1] + 0.406 * inv[2]) / sum(inv)
    assert g.mean == pytest.approx((m,), abs=1e-12) and g.std == pytest.approx((3 / sum(inv),), abs=1e-12)
    assert g.mean[0] == pytest.approx(0.4488, abs=1e-4) and g.std[0] == pytest.approx(0.2260, abs=1e-4)
    # With equal stds m is the mean of the means and s the common std; Inception's preset is its own grey form.
    keras = preprocess.grey(preprocess.PRESETS["keras_resnet50"])
    assert keras.mean[0] == pytest.approx((103.939 + 116.779 + 123.68) / 3) and keras.std == (1.0,)
    assert preprocess.grey(preprocess.PRESETS["inception"]) == preprocess.Normalization((1.0,), (1.0,), 2.0, "RGB")
    assert preprocess.get_normalization("torchvision", channels=1) == g
    with pytest.raises(ValueError, match="channels must be 1"):
        preprocess.get_normalization("torchvision", channels=2)
    with pytest.raises(ValueError, match="needs an RGB"):
        preprocess.grey(g)


def test_grey_normalisation_is_the_replicated_rgb_one_for_equal_channel_statistics():
    """For a preset whose three channels share mean and std, grey(preset)(g) equals each channel of preset(g g g)."""
    px = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 1)).astype(np.float32)
    rgb = preprocess.PRESETS["inception"](np.repeat(px, 3, axis=-1))
    np.testing.assert_allclose(preprocess.grey(preprocess.PRESETS["inception"])(px), rgb[..., :1], rtol=1e-6)


@pytest.mark.parametrize("normalization", ["torchvision", "keras_resnet50"])
def test_chexpert_folder_decodes_one_grey_channel(chexpert_root, normalization):
    """The pipeline's one-channel images are the grey normalisation of PIL's 'L' decode, resized as the RGB path
    resizes; the RGB path's three channels are that same grey image (the x-rays are grey)."""
    config = make_config("chexpert_folder", root=chexpert_root, normalization=normalization, channels=1)
    mesh = jax.make_mesh((8,), ("data",))
    grey_ds = build_dataset(config, "valid", train=False)
    image = next(iter(grey_ds.batches(8, mesh=mesh)))["image"]
    assert image.shape == (8, 32, 32, 1) and image.dtype == jnp.float32
    first = grey_ds.source.load(int(grey_ds.indices[0]), 32)
    want = preprocess.resize(first, 32, "squash", channels=1)
    assert want.mode == "L"
    norm = preprocess.grey(preprocess.PRESETS[normalization])  # its closed form is tested above
    np.testing.assert_allclose(np.asarray(image)[0], norm(np.asarray(want)[..., None]), rtol=1e-5, atol=1e-5)
    config.channels = 3
    config.normalization = "none"
    rgb = np.asarray(next(iter(build_dataset(config, "valid", train=False).batches(8, mesh=mesh)))["image"])
    np.testing.assert_allclose(rgb[..., 0], rgb[..., 2])  # a grey x-ray replicated
    np.testing.assert_allclose(rgb[0, ..., 0], np.asarray(want) / 255.0, atol=1e-6)


def test_colour_photos_become_their_luma(kaggle_root):
    config = make_config("retina_folder", root=kaggle_root, channels=1)
    ds = build_dataset(config, "train", train=False)
    batch = next(iter(ds.batches(8, mesh=jax.make_mesh((8,), ("data",)))))
    image = ds.source.load(int(ds.indices[0]), 32)
    assert image.mode == "RGB"
    luma = np.asarray(preprocess.resize(image, 32, "center_crop", channels=1), np.float32) / 255.0
    np.testing.assert_allclose(np.asarray(batch["image"])[0, ..., 0], luma, atol=1e-6)


def test_bad_channel_count_is_named():
    with pytest.raises(ValueError, match="channels must be 1 .grey. or 3"):
        preprocess.resize(Image.new("RGB", (8, 8)), 8, "squash", channels=4)


@pytest.mark.parametrize("cfg", ["colour", "affine"])
def test_augmenting_one_channel_is_augmenting_the_replicated_image(cfg):
    """The same draws on a grey image and on it replicated to RGB give the same pixels (brightness, contrast about the
    grey level, flips, rotation, scale, shift), so a grey run sees what a replicated-RGB run sees."""
    augment = preprocess.Augment(
        hflip=True,
        vflip=False,
        rotate_deg=10.0 if cfg == "affine" else 0.0,
        translate=0.05 if cfg == "affine" else 0.0,
        scale_min=0.95 if cfg == "affine" else 1.0,
        scale_max=1.05 if cfg == "affine" else 1.0,
        brightness=0.1,
        contrast=0.1,
    )
    grey = jnp.asarray(np.random.default_rng(1).integers(0, 256, (24, 24, 1)), jnp.float32)
    run = jax.jit(functools.partial(preprocess.augment, cfg=augment))
    for seed in range(4):
        key = jax.random.key(seed)
        one, three = run(grey, key), run(jnp.repeat(grey, 3, axis=-1), key)
        assert one.shape == (24, 24, 1)
        np.testing.assert_allclose(three, jnp.repeat(one, 3, axis=-1), atol=1e-3)  # luma weights sum to 1 in float32
