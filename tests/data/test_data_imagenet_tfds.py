"""`imagenet_tfds` / `tfds_classification` on ArrayRecords written by TFDS itself, without TensorFlow.

The imagenet2012 set is prepared by TFDS's official imagenet2012 builder (its features, 1000-name ClassLabel and
`_generate_examples`), fed tiny per-class tars in the ILSVRC2012 train layout instead of the manual download.
"""

import io
import tarfile

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_helpers import make_config
from PIL import Image
from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder as official

from transfusion_jax.data import DatasetFormatError, build_dataset

WNIDS = ("n01440764", "n01443537", "n15075141")  # label 0, 1 and 999 of imagenet2012
PER_CLASS = {"train": 3, "validation": 2}


def _jpeg(value: int, size=(30, 20)) -> bytes:
    """A flat colour JPEG: its decoded, resized pixels are known in closed form (up to JPEG rounding)."""
    buf = io.BytesIO()
    Image.new("RGB", size, (value, 255 - value, 128)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _colour(split, wnid, i):
    return 10 + 40 * WNIDS.index(wnid) + 10 * i + (5 if split == "validation" else 0)


def _archive(split):
    """The train tar's layout: one <wnid>.tar per class holding <wnid>_<n>.JPEG."""
    return [
        (f"{w}.tar", io.BytesIO(_tar([(f"{w}_{split}{i}.JPEG", _jpeg(_colour(split, w, i))) for i in range(n)])))
        for w in WNIDS
        for n in [PER_CLASS[split]]
    ]


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_imagenet"))
    with tfds.core.registered.skip_registration():

        class TinyImagenet2012(official.Builder):
            name = "imagenet2012"

            @classmethod
            def get_metadata(cls):
                return official.Builder.get_metadata()

            def _split_generators(self, dl_manager):
                return [tfds.core.SplitGenerator(name=s, gen_kwargs={"archive": _archive(s)}) for s in PER_CLASS]

    TinyImagenet2012(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def test_labels_names_and_images_match_what_was_written(imagenet_dir):
    ds = build_dataset(make_config("imagenet_tfds", data_dir=imagenet_dir, image_size=16), "train", train=False)
    assert len(ds) == 9 and ds.task.loss == "softmax" and ds.task.num_outputs == 1000
    assert ds.task.label_names[:2] == WNIDS[:2] and ds.task.label_names[999] == WNIDS[2]
    names = [ds.source._ds[i]["file_name"].decode() for i in range(len(ds))]
    assert sorted(names) == sorted(f"{w}_train{i}.JPEG" for w in WNIDS for i in range(3))
    want = [{WNIDS[0]: 0, WNIDS[1]: 1, WNIDS[2]: 999}[n.split("_")[0]] for n in names]  # TFDS shuffled the order
    np.testing.assert_array_equal(ds.targets, want)
    batch = next(ds.batches(16, mesh=jax.make_mesh((8,), ("data",))))
    image = np.asarray(batch["image"])
    assert image.shape == (16, 16, 16, 3) and image.dtype == np.float32
    for j, n in enumerate(names):  # normalization 'none' = pixels / 255
        w, i = n.split("_")[0], int(n[-6])
        np.testing.assert_allclose(
            image[j].mean((0, 1)),
            np.array([_colour("train", w, i), 255 - _colour("train", w, i), 128]) / 255,
            atol=4 / 255,
        )
    np.testing.assert_array_equal(np.asarray(batch["label"])[:9], want)


def test_eval_reads_every_example_once_with_padding(imagenet_dir):
    ds = build_dataset(make_config("imagenet_tfds", data_dir=imagenet_dir, image_size=0), "validation", train=False)
    assert len(ds) == 6 and ds.num_batches(8) == 1
    batch = next(ds.batches(8, mesh=jax.make_mesh((8,), ("data",))))
    valid = np.asarray(batch["valid"])
    np.testing.assert_array_equal(valid, [True] * 6 + [False] * 2)
    assert np.asarray(batch["image"]).shape == (8, 224, 224, 3)  # imagenet's default size
    np.testing.assert_array_equal(np.asarray(batch["label_mask"])[:, 0], valid)
    np.testing.assert_array_equal(np.sort(np.asarray(batch["label"])[:6]), [0, 0, 1, 1, 999, 999])
    red = np.sort(np.asarray(batch["image"])[:6, ..., 0].mean((1, 2)) * 255)  # each written image exactly once
    np.testing.assert_allclose(red, sorted(_colour("validation", w, i) for w in WNIDS for i in range(2)), atol=4)


def test_generic_reader_checks_keys(imagenet_dir):
    generic = make_config("tfds_classification", data_dir=imagenet_dir, tfds_name="imagenet2012")
    preset = make_config("imagenet_tfds", data_dir=imagenet_dir)
    np.testing.assert_array_equal(
        build_dataset(generic, "train", train=False).targets, build_dataset(preset, "train", train=False).targets
    )
    with pytest.raises(DatasetFormatError, match="no feature 'img'.*config.data.image_key"):
        build_dataset(
            make_config("tfds_classification", data_dir=imagenet_dir, tfds_name="imagenet2012", image_key="img"),
            "train",
            train=False,
        )
    with pytest.raises(DatasetFormatError, match="'file_name' is a Text, not a ClassLabel"):
        build_dataset(
            make_config("tfds_classification", data_dir=imagenet_dir, tfds_name="imagenet2012", label_key="file_name"),
            "train",
            train=False,
        )
    with pytest.raises(ValueError, match="tfds_name is empty"):
        build_dataset(make_config("tfds_classification", data_dir=imagenet_dir), "train", train=False)


def test_missing_preparation_names_data_dir_and_tfds_build(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        build_dataset(make_config("imagenet_tfds", data_dir=str(tmp_path)), "train", train=False)
    message = str(e.value)
    assert str(tmp_path) in message and "tfds build imagenet2012 --manual_dir" in message
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message


def test_imagenet_config_defaults_to_tfds():
    from configs import imagenet

    c = imagenet.get_config("cbr_small")
    assert (c.data.name, c.train_split, c.val_split, c.test_split) == ("imagenet_tfds", "train", "validation", "")
    assert imagenet.get_config("cbr_small,local").data.name == "synthetic_source"
