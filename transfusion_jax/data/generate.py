"""Writers of miniature datasets in the exact on-disk formats of the real downloads, with learnable signals.

chexpert        OUT/CheXpert-v1.0-small/{train,valid}.csv + {train,valid}/patientNNNNN/studyN/viewN_<view>.jpg
kaggle_dr       OUT/trainLabels.csv (image,level) + OUT/train/<image>.jpeg
tfds_dr_manual  kaggle_dr plus OUT/test/<image>.jpeg, OUT/retinopathy_solution.csv (image,level,Usage) and
                OUT/sample/<image>.jpeg: the manual dir of TFDS `diabetic_retinopathy_detection`
source          OUT/{train,test}/class_NN/NNNNNN.jpeg: a natural-image stand-in for offline pretraining
"""

import csv
import os

import numpy as np
from PIL import Image

from transfusion_jax.data import synthetic, tasks

_JPEG_QUALITY = 90


def _save(array: np.ndarray, path: str, size: tuple | None = None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    if size is not None and image.size != size:
        image = image.resize(size, Image.BILINEAR)
    image.save(path, quality=_JPEG_QUALITY)


def _cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.1f}"


def write_chexpert(out: str, num: int, seed: int = 0, size: int = 96, num_valid: int | None = None) -> str:
    """`num` train and `num_valid` valid images; returns the CheXpert-v1.0-small folder. Images are grayscale
    JPEGs, `size` wide and 1.2 * size tall like the real downsampled set (320 x ~390). Train labels include
    uncertain (-1.0) and blank cells; valid labels are 0.0 / 1.0 only, as in the real valid.csv. About a fifth of
    the images are the lateral second view of a study."""
    num_valid = max(8, num // 5) if num_valid is None else num_valid
    root = os.path.join(out, "CheXpert-v1.0-small")
    rng = np.random.default_rng(seed)
    pathology_columns = [tasks.CHEXPERT_OBSERVATIONS.index(p) for p in tasks.CHEXPERT_PATHOLOGIES]
    patient = 0
    for split, count, certain_only in (("train", num, False), ("valid", num_valid, True)):
        raw = synthetic.sample_chexpert_raw(rng, count, len(tasks.CHEXPERT_OBSERVATIONS), certain_only)
        rows, study, view, sex, age = [], 0, 0, "", 0
        for i in range(count):
            if view == 1 and rng.uniform() < 0.3:  # a lateral view of the same study
                view, lateral = 2, True
            else:
                lateral = False
                if i == 0 or rng.uniform() < 0.5:  # new patient
                    patient, study = patient + 1, 1
                    sex, age = rng.choice(["Male", "Female"]), int(rng.integers(18, 91))
                else:  # new study of the same patient
                    study += 1
                view = 1
            if not lateral:  # both views of a study share the labels of its one report
                labels = raw[i]
                no_finding = not np.any(labels[1:] == 1.0)
                labels[0] = 1.0 if no_finding else (0.0 if certain_only else np.nan)
            kind = "lateral" if lateral else "frontal"
            rel = f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study{study}/view{view}_{kind}.jpg"
            pixels = synthetic.render_chest_xray(
                rng, {p: labels[c] for p, c in zip(tasks.CHEXPERT_PATHOLOGIES, pathology_columns)}, size
            )
            _save(pixels, os.path.join(out, rel), (size, round(size * 1.2)))
            rows.append(
                [rel, sex, str(age), "Lateral" if lateral else "Frontal", "" if lateral else rng.choice(["AP", "PA"])]
                + [_cell(v) for v in labels]
            )
        with open(os.path.join(root, f"{split}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(tasks.CHEXPERT_COLUMNS)
            writer.writerows(rows)
    return root


def _retina_images(out: str, folder: str, names: list, grades: np.ndarray, rng, size: int):
    """Fundus discs on a black frame 4:3 wide, like the real camera images."""
    for name, grade in zip(names, grades):
        disc = synthetic.render_retina(rng, int(grade), size)
        frame = np.zeros((size, size * 4 // 3, 3), np.uint8)
        left = (frame.shape[1] - size) // 2
        frame[:, left : left + size] = disc
        _save(frame, os.path.join(out, folder, f"{name}.jpeg"))


def _eye_names(first_patient: int, count: int) -> list:
    return [f"{first_patient + i // 2}_{'left' if i % 2 == 0 else 'right'}" for i in range(count)]


def write_kaggle_dr(out: str, num: int, seed: int = 0, size: int = 96) -> str:
    """`num` train images with trainLabels.csv; returns `out`."""
    rng = np.random.default_rng(seed)
    names = _eye_names(10, num)
    grades = synthetic.sample_retina_grades(rng, num)
    _retina_images(out, "train", names, grades, rng, size)
    with open(os.path.join(out, "trainLabels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "level"])
        writer.writerows(zip(names, grades))
    return out


def write_tfds_dr_manual(out: str, num: int, seed: int = 0, size: int = 96, num_test: int | None = None) -> str:
    """The TFDS DR manual dir: the Kaggle train tree plus `num_test` test images labelled in
    retinopathy_solution.csv, the first ~30 % Usage=Public (TFDS 'validation'), the rest Private ('test'), and
    sample/ with up to 10 unlabelled images (TFDS 'sample')."""
    num_test = max(8, num // 4) if num_test is None else num_test
    write_kaggle_dr(out, num, seed, size)
    rng = np.random.default_rng([seed, 1])
    names = _eye_names(10 + num, num_test)
    grades = synthetic.sample_retina_grades(rng, num_test)
    _retina_images(out, "test", names, grades, rng, size)
    with open(os.path.join(out, "retinopathy_solution.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "level", "Usage"])
        for i, (name, grade) in enumerate(zip(names, grades)):
            writer.writerow([name, grade, "Public" if i < max(1, round(0.3 * num_test)) else "Private"])
    sample = _eye_names(10 + num + num_test, min(10, num))  # Kaggle's sample.zip: 10 unlabelled images
    _retina_images(out, "sample", sample, synthetic.sample_retina_grades(rng, len(sample)), rng, size)
    return out


def write_source(
    out: str, num: int, seed: int = 0, size: int = 64, num_classes: int = 10, num_test: int | None = None
) -> str:
    """`num` train and `num_test` test images over `num_classes` classes (synthetic.render_source)."""
    num_test = max(num_classes, num // 5) if num_test is None else num_test
    rng = np.random.default_rng(seed)
    for split, count in (("train", num), ("test", num_test)):
        labels = rng.integers(num_classes, size=count)
        for i, label in enumerate(labels):
            _save(
                synthetic.render_source(rng, int(label), size),
                os.path.join(out, split, f"class_{label:02d}", f"{i:06d}.jpeg"),
            )
    return out


WRITERS = {
    "chexpert": write_chexpert,
    "kaggle_dr": write_kaggle_dr,
    "tfds_dr_manual": write_tfds_dr_manual,
    "source": write_source,
}
