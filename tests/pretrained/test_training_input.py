"""End to end: an image file read through the training data path, normalised as the run resolves it from the
checkpoint's metadata (train.preflight), through the converted weights, gives the reference framework's logits for
its own preprocessing of the same file: Keras ResNet50 + `preprocess_input` (caffe: BGR, mean subtraction),
torchvision ResNet-50 + its ImageNet transforms, torchvision Inception-v3 (transform_input=True) + the same
transforms. Random weights with randomised BatchNorm, so a wrong channel order or scale cannot go unnoticed; the
config's default normalisation ('' = the checkpoint's) is what makes it right: forcing another preset breaks it."""

import os

import jax
import numpy as np
import pytest
from PIL import Image
from pretrained_testlib import TOL, rel_err

from transfusion_jax import data as data_lib
from transfusion_jax import pretrained
from transfusion_jax.train import config_lib, preflight

SIZE = 80  # >= Inception-v3's smallest input (75); the file is written at this size so no resize is involved


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """root/test/class_00/photo.jpeg: one JPEG photo-like image (smooth colours plus texture)."""
    root = tmp_path_factory.mktemp("input")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    pixels = np.stack([200 * yy, 180 * xx, 120 * (1 - yy)], -1) + rng.normal(0, 25, (SIZE, SIZE, 3))
    path = root / "test" / "class_00" / "photo.jpeg"
    os.makedirs(path.parent)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=95)
    return str(root), str(path)


def _training_input(root: str, checkpoint: str, normalization: str = "") -> np.ndarray:
    """The image as a training run sees it: the run's config resolved (normalisation from the checkpoint), the
    dataset built and batched by the data pipeline, normalised on device."""
    c = config_lib.base_config()
    c.pretrained, c.data.normalization = checkpoint, normalization
    c.data.update(name="image_folder", root=root, image_size=SIZE, num_workers=0)
    c = preflight.resolve(c)
    ds = data_lib.build_dataset(c, "test", train=False)
    batch = next(ds.batches(8, mesh=jax.make_mesh((8,), ("data",))))
    return np.asarray(batch["image"])[:1]


def _our_logits(checkpoint: str, x: np.ndarray) -> np.ndarray:
    variables, metadata = pretrained.load(checkpoint)
    model = pretrained.model_from_metadata(metadata)
    return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False)[0])(variables, x))


def _check(checkpoint, root, reference_logits, wrong_preset):
    assert rel_err(_our_logits(checkpoint, _training_input(root, checkpoint)), reference_logits) < TOL
    # The same run with another preset forced (what a config that ignores the checkpoint would feed) is refused ...
    with pytest.raises(preflight.ConfigError, match="expects"):
        _training_input(root, checkpoint, wrong_preset)
    # ... and would indeed be wrong: the logits are far off.
    variables, metadata = pretrained.load(checkpoint)
    wrong = data_lib.get_normalization(wrong_preset)
    raw = np.asarray(Image.open(os.path.join(root, "test", "class_00", "photo.jpeg")).convert("RGB"))[None]
    assert rel_err(_our_logits(checkpoint, np.asarray(wrong(raw))), reference_logits) > 100 * TOL


def test_keras_resnet50_on_a_file(image_root, tmp_path):
    keras = pytest.importorskip("keras")
    from test_keras import randomise

    root, path = image_root
    keras.utils.set_random_seed(0)
    ref = keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    randomise(ref, seed=1)
    ref.save_weights(tmp_path / "resnet.weights.h5")
    checkpoint = str(tmp_path / "keras_resnet50.npz")
    pretrained.convert("keras", "resnet50", str(tmp_path / "resnet.weights.h5"), checkpoint)
    x = keras.utils.img_to_array(keras.utils.load_img(path))[None]
    expected = np.asarray(ref(keras.applications.resnet50.preprocess_input(x), training=False))
    _check(checkpoint, root, expected, wrong_preset="torchvision")


def _torchvision_reference(model, path):
    import torch
    import torchvision

    transforms = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()  # ImageNet mean / std
    x = torchvision.transforms.functional.to_tensor(Image.open(path).convert("RGB"))
    x = torchvision.transforms.functional.normalize(x, transforms.mean, transforms.std)[None]
    with torch.no_grad():
        return model(x).numpy()


def _convert_torch(model, arch, tmp_path) -> str:
    import torch

    torch.save(model.state_dict(), tmp_path / f"{arch}.pth")
    checkpoint = str(tmp_path / f"{arch}.npz")
    pretrained.convert("torchvision", arch, str(tmp_path / f"{arch}.pth"), checkpoint)
    return checkpoint


def test_torchvision_resnet50_on_a_file(image_root, tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from test_torchvision import randomise_bn

    root, path = image_root
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None)
    randomise_bn(ref, seed=1)
    expected = _torchvision_reference(ref, path)
    _check(_convert_torch(ref, "resnet50", tmp_path), root, expected, wrong_preset="keras_resnet50")


def test_torchvision_inception_v3_on_a_file(image_root, tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from test_torchvision import randomise_bn

    root, path = image_root
    torch.manual_seed(0)
    # As torchvision's pretrained Inception-v3: transform_input=True maps ImageNet-normalised input to [-1, 1].
    ref = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True, transform_input=True)
    randomise_bn(ref, seed=2)
    expected = _torchvision_reference(ref, path)
    _check(_convert_torch(ref, "inception_v3", tmp_path), root, expected, wrong_preset="torchvision")
