"""Normalisation presets against closed forms and the reference libraries; resizing. (Augmentation and block
shuffling: test_data_augment.py.)"""

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


@pytest.mark.parametrize("name", sorted(preprocess.PRESETS))
def test_device_normalisation_matches_host(name):
    import jax.numpy as jnp

    x = _pixels(4)
    norm = preprocess.get_normalization(name)
    np.testing.assert_allclose(np.asarray(norm(x, xp=jnp)), norm(x), rtol=1e-6, atol=1e-5)
