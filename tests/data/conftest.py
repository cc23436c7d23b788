"""Miniature datasets in the real formats, generated once per session, and a config helper."""
import pytest

from transfusion_jax.data import default_data_config, generate, prepare


@pytest.fixture(scope='session')
def chexpert_root(tmp_path_factory):
  out = tmp_path_factory.mktemp('chexpert')
  generate.write_chexpert(str(out), 30, seed=1, size=40, num_valid=9)
  return str(out)


@pytest.fixture(scope='session')
def kaggle_root(tmp_path_factory):
  out = tmp_path_factory.mktemp('kaggle_dr')
  generate.write_tfds_dr_manual(str(out), 26, seed=2, size=40, num_test=10)
  return str(out)


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory, chexpert_root, kaggle_root):
  """Both TFDS builders prepared from the generated manual dirs without TensorFlow."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  prepare.prepare('chexpert', chexpert_root, data_dir, use_tensorflow=False)
  prepare.prepare('diabetic_retinopathy_detection/original', kaggle_root, data_dir, use_tensorflow=False)
  return data_dir


def make_config(name, **fields):
  """A data config for tests: small images, decoding in the calling thread unless asked otherwise."""
  c = default_data_config()
  c.name = name
  c.image_size = 32
  c.num_workers = 0
  c.normalization = 'none'
  for key, value in fields.items():
    target = c
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c
