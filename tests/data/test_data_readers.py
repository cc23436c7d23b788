"""The real readers (folders and TFDS builders) on generated miniature datasets in the exact real formats."""

import csv
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_helpers import make_config
from PIL import Image, ImageFilter
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from transfusion_jax.data import build_dataset, synthetic, tasks
from transfusion_jax.data.tasks import CHEXPERT_PATHOLOGIES


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# Independent reading of a CheXpert cell under U-Ignore: (target, mask).
_U_IGNORE = {"1.0": (1, 1), "0.0": (0, 1), "": (0, 1), "-1.0": (0, 0)}


def test_chexpert_csv_has_the_real_columns(chexpert_root):
    with open(os.path.join(chexpert_root, "CheXpert-v1.0-small", "train.csv")) as f:
        header = f.readline().strip()
    assert header == (
        "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
        "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
        "Pleural Effusion,Pleural Other,Fracture,Support Devices"
    )
    rows = _csv_rows(os.path.join(chexpert_root, "CheXpert-v1.0-small", "train.csv"))
    cells = {r[p] for r in rows for p in CHEXPERT_PATHOLOGIES}
    assert cells == {"1.0", "0.0", "-1.0", ""}  # uncertain and blank labels are present
    valid = _csv_rows(os.path.join(chexpert_root, "CheXpert-v1.0-small", "valid.csv"))
    assert {r[p] for r in valid for p in CHEXPERT_PATHOLOGIES} <= {"1.0", "0.0"}
    for r in rows:
        assert r["Path"].startswith("CheXpert-v1.0-small/train/patient")
        assert os.path.isfile(os.path.join(chexpert_root, r["Path"]))


@pytest.mark.parametrize("sub", ["", "CheXpert-v1.0-small"])
def test_chexpert_folder_labels_follow_csv(chexpert_root, sub):
    ds = build_dataset(
        make_config("chexpert_folder", root=os.path.join(chexpert_root, sub), uncertainty_policy="u_ignore"),
        "train",
        train=False,
    )
    rows = _csv_rows(os.path.join(chexpert_root, "CheXpert-v1.0-small", "train.csv"))
    want = np.array([[_U_IGNORE[r[p]] for p in CHEXPERT_PATHOLOGIES] for r in rows])
    assert len(ds) == len(rows) == 30
    assert ds.task.loss == "sigmoid" and ds.task.label_names == CHEXPERT_PATHOLOGIES
    np.testing.assert_array_equal(ds.targets, want[..., 0])
    np.testing.assert_array_equal(ds.masks, want[..., 1])


def test_chexpert_frontal_only_and_valid_split(chexpert_root):
    rows = _csv_rows(os.path.join(chexpert_root, "CheXpert-v1.0-small", "train.csv"))
    frontal = [r for r in rows if r["Frontal/Lateral"] == "Frontal"]
    assert 0 < len(frontal) < len(rows)
    ds = build_dataset(make_config("chexpert_folder", root=chexpert_root, frontal_only=True), "train", train=False)
    assert len(ds) == len(frontal)
    assert all("frontal" in p for p in ds.source.paths)
    assert len(build_dataset(make_config("chexpert_folder", root=chexpert_root), "valid", train=False)) == 9


def test_chexpert_slices_split_by_patient(chexpert_root):
    def patients(split):
        ds = build_dataset(make_config("chexpert_folder", root=chexpert_root), split, train=False)
        return [p.split(os.sep)[-3] for p in ds.source.paths]

    every = patients("train")
    assert every[14] == every[15]  # so a plain cut at 50 % (row 15) would split a patient
    head, tail = patients("train[:50%]"), patients("train[50%:]")
    assert head + tail == every and not set(head) & set(tail) and len(head) > 15


def test_slices_keep_patients_together_when_the_csv_is_not_grouped(chexpert_root, tmp_path):
    """A CSV whose rows are not grouped by patient (here shuffled) is still cut between patients: every row of a
    patient lands on the same side, wherever it is in the file."""
    shutil.copytree(os.path.join(chexpert_root, "CheXpert-v1.0-small"), tmp_path / "CheXpert-v1.0-small")
    train_csv = tmp_path / "CheXpert-v1.0-small" / "train.csv"
    header, *rows = train_csv.read_text().splitlines()
    order = np.random.default_rng(0).permutation(len(rows))
    train_csv.write_text("\n".join([header] + [rows[i] for i in order]) + "\n")

    def patients(split):
        ds = build_dataset(make_config("chexpert_folder", root=str(tmp_path)), split, train=False)
        return [p.split(os.sep)[-3] for p in ds.source.paths]

    every = patients("train")
    runs = [p for i, p in enumerate(every) if i == 0 or every[i - 1] != p]  # one entry per run of a patient's rows
    assert len(runs) > len(set(every))  # some patient's rows are scattered over the file
    head, tail = patients("train[:50%]"), patients("train[50%:]")
    assert not set(head) & set(tail)
    assert sorted(head + tail) == sorted(every) and 0.3 < len(head) / len(every) < 0.7


def test_tfds_slices_keep_patients_together(chexpert_root, kaggle_root, tfds_dir):
    """TFDS stores records in its own (hashed) order; our slices of the CheXpert and DR builders group by the
    patient in each record's name, so no patient is on both sides of a cut."""
    head = build_dataset(make_config("chexpert_tfds", data_dir=tfds_dir), "train[:50%]", train=False)
    tail = build_dataset(make_config("chexpert_tfds", data_dir=tfds_dir), "train[50%:]", train=False)
    every = build_dataset(make_config("chexpert_tfds", data_dir=tfds_dir), "train", train=False)

    def names(ds):
        return [ds.source._ds[int(k)]["name"].decode() for k in ds.source._keys]

    patient = lambda name: name.split("/")[-3]  # noqa: E731
    assert not {patient(n) for n in names(head)} & {patient(n) for n in names(tail)}
    assert sorted(names(head) + names(tail)) == sorted(names(every))
    assert len(head) + len(tail) == len(every) and sorted(head.example_ids() + tail.example_ids()) == sorted(
        every.example_ids()
    )
    valid = build_dataset(make_config("chexpert_tfds", data_dir=tfds_dir), "valid", train=False)  # as the folder's
    assert len(valid) == 9
    dr = dict(data_dir=tfds_dir, tfds_config="original")
    eyes = [build_dataset(make_config("retina_tfds", **dr), s, train=False) for s in ("train[:50%]", "train[50%:]")]
    sides = [{n.split("_")[0] for n in names(ds)} for ds in eyes]
    assert not sides[0] & sides[1] and sum(map(len, eyes)) == 26


def test_chexpert_images_are_gray_replicated_and_resized(chexpert_root):
    ds = build_dataset(make_config("chexpert_folder", root=chexpert_root), "valid", train=False)
    mesh = jax.make_mesh((8,), ("data",))
    batch = next(ds.batches(8, mesh=mesh))
    image = np.asarray(batch["image"])
    assert image.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    for j in range(8):  # against a plain Pillow decode + squash of the file, on the [0, 1] scale
        ref = np.asarray(Image.open(ds.source.paths[j]).resize((32, 32), Image.BILINEAR), np.float64) / 255
        assert np.abs(image[j, ..., 0] - ref).mean() < 0.02


def test_retina_folder_labels_and_splits(kaggle_root):
    rows = _csv_rows(os.path.join(kaggle_root, "trainLabels.csv"))
    ds = build_dataset(make_config("retina_folder", root=kaggle_root), "train", train=False)
    np.testing.assert_array_equal(ds.targets, [int(r["level"]) >= 2 for r in rows])
    assert ds.task.num_outputs == 2
    five = build_dataset(
        make_config("retina_folder", root=kaggle_root, retina_target="five_class"), "train", train=False
    )
    np.testing.assert_array_equal(five.targets, [int(r["level"]) for r in rows])
    solution = _csv_rows(os.path.join(kaggle_root, "retinopathy_solution.csv"))
    for split, usage in (("validation", "Public"), ("test", "Private")):
        part = build_dataset(make_config("retina_folder", root=kaggle_root), split, train=False)
        assert len(part) == sum(r["Usage"] == usage for r in solution)
    head = build_dataset(make_config("retina_folder", root=kaggle_root), "train[:50%]", train=False)
    tail = build_dataset(make_config("retina_folder", root=kaggle_root), "train[50%:]", train=False)
    assert (len(head), len(tail)) == (14, 12)  # row 13 is 16_right, so the cut moves past patient 16
    assert not {n.split("_")[0] for n in head.source.names} & {n.split("_")[0] for n in tail.source.names}
    np.testing.assert_array_equal(np.concatenate([head.targets, tail.targets]), ds.targets)


def test_retina_folder_image_is_center_crop(kaggle_root):
    ds = build_dataset(make_config("retina_folder", root=kaggle_root, image_size=40), "train", train=False)
    batch = next(ds.batches(8, mesh=jax.make_mesh((8,), ("data",))))
    raw = np.asarray(Image.open(ds.source.paths[0]).convert("RGB"), np.float64) / 255  # 40 x 53 frame
    left = (raw.shape[1] - 40) // 2
    assert np.abs(np.asarray(batch["image"])[0] - raw[:, left : left + 40]).mean() < 0.01


def test_tfds_chexpert_prepared_without_tf_matches_folder(chexpert_root, tfds_dir):
    folder = build_dataset(
        make_config("chexpert_folder", root=chexpert_root, uncertainty_policy="u_ones"), "train", train=False
    )
    ds = build_dataset(
        make_config("chexpert_tfds", data_dir=tfds_dir, uncertainty_policy="u_ones"), "train", train=False
    )
    assert len(ds) == len(folder) and ds.task == folder.task
    by_path = {os.path.relpath(p, chexpert_root): i for i, p in enumerate(folder.source.paths)}
    for i in range(len(ds)):
        record = ds.source._ds[int(ds.source._keys[i])]
        j = by_path[record["name"].decode()]
        np.testing.assert_array_equal(ds.targets[i], folder.targets[j])
        np.testing.assert_array_equal(ds.source.raw[i], folder.source.raw[j])
        with open(folder.source.paths[j], "rb") as f:
            assert record["image"] == f.read()  # the builder stored the JPEG bytes unchanged
    frontal = build_dataset(make_config("chexpert_tfds", data_dir=tfds_dir, frontal_only=True), "train", train=False)
    assert len(frontal) == len(
        build_dataset(make_config("chexpert_folder", root=chexpert_root, frontal_only=True), "train", train=False)
    )
    assert len(build_dataset(make_config("chexpert_tfds", data_dir=tfds_dir), "validation", train=False)) == 9


def test_tfds_retina_prepared_without_tf_matches_folder(kaggle_root, tfds_dir):
    for split in ("train", "validation", "test"):
        folder = build_dataset(
            make_config("retina_folder", root=kaggle_root, retina_target="five_class"), split, train=False
        )
        ds = build_dataset(
            make_config("retina_tfds", data_dir=tfds_dir, tfds_config="original", retina_target="five_class"),
            split,
            train=False,
        )
        by_name = dict(zip(folder.source.names, folder.targets))
        names = [ds.source._ds[i]["name"].decode() for i in range(len(ds))]
        assert sorted(names) == sorted(by_name)
        np.testing.assert_array_equal(ds.targets, [by_name[n] for n in names])
    image = np.asarray(next(ds.batches(8, mesh=jax.make_mesh((8,), ("data",))))["image"])
    assert image.shape == (8, 32, 32, 3) and image.max() > 0.3
    sample = tfds.data_source("diabetic_retinopathy_detection/original", split="sample", data_dir=tfds_dir)
    assert sorted(r["name"].decode() for r in sample) == sorted(
        f[:-5] for f in os.listdir(os.path.join(kaggle_root, "sample"))
    )
    assert {int(r["label"]) for r in sample} == {-1} and len(sample) == 10
    with pytest.raises(ValueError, match="DR grade -1 at row 0 is outside 0-4"):  # unlabelled: not for training
        build_dataset(make_config("retina_tfds", data_dir=tfds_dir, tfds_config="original"), "sample", train=False)


def test_missing_tfds_preparation_says_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m transfusion_jax.data prepare"):
        build_dataset(make_config("chexpert_tfds", data_dir=str(tmp_path)), "train", train=False)


def test_synthetic_sets_are_seeded_and_splits_differ():
    c = make_config("synthetic_retina", **{"synthetic.num_examples": 6, "synthetic.native_size": 32})
    a, b = build_dataset(c, "train", train=False), build_dataset(c, "train", train=False)
    test = build_dataset(c, "test", train=False)
    np.testing.assert_array_equal(np.asarray(a.source.load(3, 32)), np.asarray(b.source.load(3, 32)))
    assert not np.array_equal(np.asarray(a.source.load(3, 32)), np.asarray(test.source.load(3, 32)))
    src = build_dataset(make_config("synthetic_source", **{"synthetic.num_examples": 5}), "train", train=False)
    assert src.task.num_outputs == 10 and len(src) == 5


def test_generated_source_folder(tmp_path):
    from transfusion_jax.data import generate

    generate.write_source(str(tmp_path), 12, size=16, num_classes=3, num_test=4)
    ds = build_dataset(make_config("image_folder", root=str(tmp_path)), "train", train=False)
    assert len(ds) == 12 and ds.task.label_names == ("class_00", "class_01", "class_02")
    for path, target in zip(ds.source.paths, ds.targets):
        assert f"class_{target:02d}" in path
    assert len(build_dataset(make_config("image_folder", root=str(tmp_path)), "test", train=False)) == 4
    # A split without some class keeps the class indices of the others (the union of every split's classes).
    os.makedirs(tmp_path / "val" / "class_02")
    generate._save(np.zeros((16, 16, 3), np.uint8), str(tmp_path / "val" / "class_02" / "000000.jpeg"))
    val = build_dataset(make_config("image_folder", root=str(tmp_path)), "val", train=False)
    assert val.task == ds.task and list(val.targets) == [2]


def _local_features(a: np.ndarray) -> np.ndarray:
    """Coarse pixels + pooled high-pass energy: a fixed, shift-tolerant stand-in for a small conv net."""
    image = Image.fromarray(a).convert("RGB")
    high = np.abs(np.asarray(image, np.float32) - np.asarray(image.filter(ImageFilter.GaussianBlur(3)), np.float32))
    coarse = np.asarray(image.convert("L").resize((16, 16), Image.BOX), np.float32)
    pooled = np.asarray(Image.fromarray(high.astype(np.uint8)).resize((24, 24), Image.BOX), np.float32)
    return np.concatenate([coarse.ravel(), pooled.ravel()]) / 255


def _held_out_auc(x, y):
    model = LogisticRegression(C=0.1, max_iter=3000).fit(x[:300], y[:300])
    return roc_auc_score(y[300:], model.decision_function(x[300:]))


def test_generated_signal_is_learnable():
    """A linear model on fixed local features separates the generated classes (AUC > 0.9 on held-out images), so
    the miniature sets can validate training end to end."""
    rng = np.random.default_rng(0)
    grades = synthetic.sample_retina_grades(rng, 450)
    x = np.stack([_local_features(synthetic.render_retina(rng, int(g), 64)) for g in grades])
    assert _held_out_auc(x, grades >= 2) > 0.9
    raw = synthetic.sample_chexpert_raw(rng, 450, 5, certain_only=False)
    x = np.stack(
        [_local_features(synthetic.render_chest_xray(rng, dict(zip(CHEXPERT_PATHOLOGIES, r)), 64)) for r in raw]
    )
    targets, mask = tasks.apply_uncertainty_policy(raw, "u_ignore")
    for k, name in enumerate(CHEXPERT_PATHOLOGIES):
        keep = mask[:, k] > 0
        assert _held_out_auc(x[keep], targets[keep, k]) > 0.9, name
