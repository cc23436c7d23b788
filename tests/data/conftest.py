"""Miniature datasets in the real formats, generated once per session."""

import pytest

from transfusion_jax.data import generate, prepare


@pytest.fixture(scope="session")
def chexpert_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("chexpert")
    generate.write_chexpert(str(out), 30, seed=1, size=40, num_valid=9)
    return str(out)


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("kaggle_dr")
    generate.write_tfds_dr_manual(str(out), 26, seed=2, size=40, num_test=10)
    return str(out)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory, chexpert_root, kaggle_root):
    """Both TFDS builders prepared from the generated manual dirs without TensorFlow."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    prepare.prepare("chexpert", chexpert_root, data_dir, use_tensorflow=False)
    prepare.prepare("diabetic_retinopathy_detection/original", kaggle_root, data_dir, use_tensorflow=False)
    return data_dir
