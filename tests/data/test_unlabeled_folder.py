"""The unlabeled folder reader (self-supervised pretraining's input): every image file at any depth, in sorted path
order, sliceable; anything else in the folder ignored; bad roots and splits named."""

import os

import jax
import numpy as np
import pytest
from data_helpers import make_config
from PIL import Image

from transfusion_jax.data import DatasetFormatError, build_dataset
from transfusion_jax.train import partition

# (relative path, grey level) of the images written; other files are noise the reader must skip.
IMAGES = [("a.png", 10), ("sub/b.JPG", 60), ("sub/deeper/c.jpeg", 110), ("d.tif", 160), ("z/e.bmp", 210)]


@pytest.fixture
def folder(tmp_path):
    for rel, level in IMAGES:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 16, 3), level, np.uint8)).save(path)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub" / "labels.csv").write_text("a,b\n")
    return str(tmp_path)


def _config(root):
    return make_config("unlabeled_folder", root=root, image_size=8)  # normalisation 'none': pixels / 255


def test_reads_every_image_at_any_depth_in_path_order(folder):
    ds = build_dataset(_config(folder), "train", train=False)
    assert ds.example_ids() == sorted(os.path.join(folder, rel) for rel, _ in IMAGES)
    assert ds.task.num_outputs == 1 and not np.any(ds.targets)  # a placeholder class, never read
    mesh = partition.make_data_mesh(jax.devices()[:1])
    (batch,) = list(ds.batches(8, mesh=mesh))
    levels = np.asarray(batch["image"])[np.asarray(batch["valid"])].mean(axis=(1, 2, 3)) * 255
    order = sorted(IMAGES, key=lambda item: os.path.join(folder, item[0]))
    np.testing.assert_allclose(levels, [level for _, level in order], atol=1.5)  # JPEG rounds a little


def test_slices_cut_the_sorted_list(folder):
    config = _config(folder)
    first = build_dataset(config, "train[:60%]", train=False).example_ids()
    rest = build_dataset(config, "train[60%:]", train=False).example_ids()
    assert len(first) == 3 and first + rest == build_dataset(config, "train", train=False).example_ids()


def test_bad_roots_and_splits_are_named(folder, tmp_path_factory):
    with pytest.raises(ValueError, match="one split, 'train'"):
        build_dataset(_config(folder), "validation", train=False)
    with pytest.raises(FileNotFoundError, match="unlabeled_folder reads every image file"):
        build_dataset(_config(os.path.join(folder, "missing")), "train", train=False)
    empty = tmp_path_factory.mktemp("empty")
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(DatasetFormatError, match="has no examples"):
        build_dataset(_config(str(empty)), "train", train=False)
