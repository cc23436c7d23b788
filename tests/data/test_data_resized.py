"""`python -m transfusion_jax.data resize`: a resized ArrayRecord copy of generated datasets in the real formats,
read back as config.data.name='resized' with the same ids, labels and pixels as the original reader gives."""

import json
import os

import jax
import numpy as np
import pytest
from data_helpers import make_config

from transfusion_jax.data import BadImageError, DatasetFormatError, build_dataset, generate, resized
from transfusion_jax.data import __main__ as cli

MESH = None


def mesh():
    global MESH
    if MESH is None:
        MESH = jax.make_mesh((8,), ("data",))
    return MESH


def eval_pixels(config, split):
    dataset = build_dataset(config, split, train=False)
    return np.concatenate([np.asarray(b["image"])[np.asarray(b["valid"])] for b in dataset.batches(8, mesh=mesh())])


def test_retina_copy_keeps_ids_grades_and_exact_pixels(kaggle_root, tmp_path):
    out = str(tmp_path / "copy")
    args = ["resize", out, "--name", "retina_folder", "--root", kaggle_root, "--size", "24"]
    cli.main(args + ["--splits", "train,validation", "--format", "png", "--workers", "2", "--records_per_shard", "7"])
    metadata = resized.read_metadata(out)
    assert metadata["family"] == "retina" and metadata["image_size"] == 24 and metadata["encoding"] == "png"
    assert len(metadata["splits"]["train"]["shards"]) == 4  # 26 images, 7 per shard
    for split in ("train", "validation"):
        original = build_dataset(make_config("retina_folder", root=kaggle_root, image_size=24), split, train=False)
        copy = build_dataset(make_config("resized", root=out, image_size=0), split, train=False)
        assert copy.image_size == 24 and copy.task == original.task
        names = [os.path.splitext(os.path.basename(p))[0] for p in original.source.paths]
        assert [os.path.splitext(os.path.basename(i))[0] for i in copy.source.ids] == names
        assert copy.source.ids[0] == os.path.join("train" if split == "train" else "test", names[0] + ".jpeg")
        np.testing.assert_array_equal(copy.targets, original.targets)
        # PNG is lossless and the copy was cropped and resized as training does: the pixels are the same
        np.testing.assert_array_equal(
            eval_pixels(make_config("resized", root=out, image_size=0), split),
            eval_pixels(make_config("retina_folder", root=kaggle_root, image_size=24), split),
        )
    five = make_config("resized", root=out, retina_target="five_class")
    grades = build_dataset(
        make_config("retina_folder", root=kaggle_root, retina_target="five_class"), "train", train=False
    )
    np.testing.assert_array_equal(build_dataset(five, "train", train=False).targets, grades.targets)
    with pytest.raises(ValueError, match=r"has splits \['train', 'validation'\], not 'test'"):
        build_dataset(make_config("resized", root=out), "test", train=False)
    with pytest.raises(FileExistsError, match="already holds a resized copy"):
        cli.main(args)


def test_chexpert_copy_keeps_raw_labels_for_every_uncertainty_policy(chexpert_root, tmp_path):
    out = str(tmp_path / "copy")
    cli.main(["resize", out, "--name", "chexpert_folder", "--root", chexpert_root, "--size", "32"])
    for policy in ("u_ignore", "u_ones", "u_mixed"):
        original = build_dataset(
            make_config("chexpert_folder", root=chexpert_root, uncertainty_policy=policy), "train", train=False
        )
        copy = build_dataset(make_config("resized", root=out, uncertainty_policy=policy), "train", train=False)
        assert copy.task == original.task
        np.testing.assert_array_equal(copy.targets, original.targets)
        np.testing.assert_array_equal(copy.masks, original.masks)
    assert (copy.source.raw == -1).any() and np.isnan(copy.source.raw).any()  # uncertain and blank survived
    # JPEG quality 95, 4:4:4: close to the original pipeline's pixels, not equal
    got = eval_pixels(make_config("resized", root=out), "train")
    want = eval_pixels(make_config("chexpert_folder", root=chexpert_root, image_size=32), "train")
    assert np.abs(got - want).mean() * 255 < 2.0
    with pytest.raises(ValueError, match="write it with --frontal_only"):
        build_dataset(make_config("resized", root=out, frontal_only=True), "train", train=False)


def test_copy_ids_are_the_originals_so_overlapping_splits_are_seen(chexpert_root, tmp_path):
    """Example ids of a copy are the original ones in every split: a slice written as its own split still shares its
    ids with the whole split (what the trainer's preflight compares), and complementary slices share none."""
    out = str(tmp_path / "copy")
    cli.main(["resize", out, "--name", "chexpert_folder", "--root", chexpert_root, "--size", "16"]
             + ["--splits", "train,train[:50%],train[50%:]"])  # fmt: skip
    ids = {s: build_dataset(make_config("resized", root=out), s, train=False).example_ids() for s in
           ("train", "train[:50%]", "train[50%:]")}  # fmt: skip
    original = build_dataset(make_config("chexpert_folder", root=chexpert_root), "train", train=False)
    assert ids["train"] == [os.path.relpath(p, chexpert_root) for p in original.source.paths]
    assert set(ids["train[50%:]"]) < set(ids["train"]) and not set(ids["train[:50%]"]) & set(ids["train[50%:]"])


def test_classification_copy_keeps_class_names(tmp_path):
    generate.write_source(str(tmp_path / "source"), 12, seed=0, size=20, num_classes=3, num_test=3)
    out = str(tmp_path / "copy")
    cli.main(["resize", out, "--name", "image_folder", "--root", str(tmp_path / "source"), "--size", "16"])
    original = build_dataset(make_config("image_folder", root=str(tmp_path / "source")), "train", train=False)
    copy = build_dataset(make_config("resized", root=out), "train", train=False)
    assert copy.task.label_names == original.task.label_names and copy.task.loss == "softmax"
    np.testing.assert_array_equal(copy.targets, original.targets)


def test_bad_images_are_raised_or_left_out_and_listed(tmp_path):
    root = str(tmp_path / "dr")
    generate.write_kaggle_dr(root, 6, seed=3, size=24)
    bad = os.path.join(root, "train", "11_left.jpeg")
    with open(bad, "w") as f:
        f.write("not a jpeg")
    args = ["resize", str(tmp_path / "copy"), "--name", "retina_folder", "--root", root, "--size", "16"]
    with pytest.raises(BadImageError, match="11_left.jpeg: cannot read image.*--on_bad_image skip"):
        cli.main(args)
    assert not os.path.exists(tmp_path / "copy" / "metadata.json")  # the interrupted copy is not a copy
    with pytest.raises(FileNotFoundError, match="interrupted write leaves no metadata.json"):
        build_dataset(make_config("resized", root=str(tmp_path / "copy")), "train", train=False)
    cli.main(args + ["--on_bad_image", "skip"])
    metadata = resized.read_metadata(str(tmp_path / "copy"))
    assert list(metadata["splits"]["train"]["skipped"]) == [os.path.join("train", "11_left.jpeg")]
    copy = build_dataset(make_config("resized", root=str(tmp_path / "copy")), "train", train=False)
    original = build_dataset(make_config("retina_folder", root=root), "train", train=False)
    assert len(copy) == 5
    np.testing.assert_array_equal(copy.targets, np.delete(original.targets, 2))


def test_damaged_copy_says_what_is_wrong(kaggle_root, tmp_path):
    out = str(tmp_path / "copy")
    cli.main(
        ["resize", out, "--name", "retina_folder", "--root", kaggle_root, "--size", "16", "--records_per_shard", "10"]
    )
    metadata = resized.read_metadata(out)
    shard = os.path.join(out, metadata["splits"]["train"]["shards"][1])
    os.remove(shard)
    with pytest.raises(DatasetFormatError, match=f"split 'train' lacks \\['{shard}'\\]"):
        build_dataset(make_config("resized", root=out), "train", train=False)
    index = os.path.join(out, "split0.json")
    with open(index) as f:
        ids = json.load(f)
    ids["ids"], ids["labels"] = ids["ids"][:-1], ids["labels"][:-1]
    with open(index, "w") as f:
        json.dump(ids, f)
    metadata["splits"]["train"]["shards"] = metadata["splits"]["train"]["shards"][:1]
    with open(os.path.join(out, "metadata.json"), "w") as f:
        json.dump(metadata, f)
    with pytest.raises(DatasetFormatError, match="is damaged: 10 records, 25 ids, 26 in metadata.json"):
        build_dataset(make_config("resized", root=out), "train", train=False)
