"""Writers of miniature datasets in the exact on-disk formats of the real downloads, with learnable signals.

chexpert        OUT/CheXpert-v1.0-small/{train,valid}.csv + {train,valid}/patientNNNNN/studyN/viewN_<view>.jpg
kaggle_dr       OUT/trainLabels.csv (image,level) + OUT/train/<image>.jpeg
tfds_dr_manual  kaggle_dr plus OUT/test/<image>.jpeg, OUT/retinopathy_solution.csv (image,level,Usage) and
                OUT/sample/<image>.jpeg: the manual dir of TFDS `diabetic_retinopathy_detection`
source          OUT/{train,test}/class_NN/NNNNNN.jpeg: a natural-image stand-in for offline pretraining

Variants (synthetic.py says what each draws):
  Retina `lesions`: 'blobs' (default; Gaussian spots whose number and size grow with the grade, solved by any conv
  layer) or 'polarity' (the miniature study's target: the grade sets how many zero-mean centre-surround spots are
  bright- rather than dark-core; frozen random conv features do not solve it).
  Source `kind`: 'shapes' (default; 5 shapes x hues) or 'fractals' (the miniature study's source: one IFS fractal
  per class, FractalDB-style formula-driven images).
Study variants are saved at JPEG quality 95 without chroma subsampling, so a spot of a few pixels keeps its sign
and colour at the small sizes the study trains on.
"""

import csv
import os

import numpy as np
from PIL import Image

from transfusion_jax.data import synthetic, tasks

_JPEG_QUALITY = 90
# (quality, chroma subsampling) of the study variants: 4:4:4 keeps the colour of a 2-pixel spot.
_STUDY_JPEG = dict(quality=95, subsampling=0)
RETINA_LESIONS = {"blobs": synthetic.render_retina, "polarity": synthetic.render_retina_polarity}
SOURCE_KINDS = ("shapes", "fractals")


def _save(array: np.ndarray, path: str, size: tuple | None = None, jpeg: dict | None = None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    if size is not None and image.size != size:
        image = image.resize(size, Image.BILINEAR)
    image.save(path, **(jpeg or {"quality": _JPEG_QUALITY}))


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


def _check_choice(what: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; choose one of {', '.join(choices)}.")


def _retina_images(out: str, folder: str, names: list, grades: np.ndarray, rng, size: int, lesions: str = "blobs"):
    """Fundus discs on a black frame 4:3 wide, like the real camera images."""
    render = RETINA_LESIONS[lesions]
    jpeg = _STUDY_JPEG if lesions != "blobs" else None
    for name, grade in zip(names, grades):
        disc = render(rng, int(grade), size)
        frame = np.zeros((size, size * 4 // 3, 3), np.uint8)
        left = (frame.shape[1] - size) // 2
        frame[:, left : left + size] = disc
        _save(frame, os.path.join(out, folder, f"{name}.jpeg"), jpeg=jpeg)


def _eye_names(first_patient: int, count: int) -> list:
    return [f"{first_patient + i // 2}_{'left' if i % 2 == 0 else 'right'}" for i in range(count)]


def write_kaggle_dr(out: str, num: int, seed: int = 0, size: int = 96, lesions: str = "blobs") -> str:
    """`num` train images with trainLabels.csv; returns `out`."""
    _check_choice("lesions", lesions, RETINA_LESIONS)
    rng = np.random.default_rng(seed)
    names = _eye_names(10, num)
    grades = synthetic.sample_retina_grades(rng, num)
    _retina_images(out, "train", names, grades, rng, size, lesions)
    with open(os.path.join(out, "trainLabels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "level"])
        writer.writerows(zip(names, grades))
    return out


def write_tfds_dr_manual(
    out: str,
    num: int,
    seed: int = 0,
    size: int = 96,
    num_test: int | None = None,
    lesions: str = "blobs",
    public_fraction: float = 0.3,
) -> str:
    """The TFDS DR manual dir: the Kaggle train tree plus `num_test` test images labelled in
    retinopathy_solution.csv, the first `public_fraction` of them Usage=Public (TFDS 'validation'), the rest
    Private ('test'), and sample/ with up to 10 unlabelled images (TFDS 'sample'). Eye ids are consecutive across
    train, test and sample, so no id is in two splits."""
    num_test = max(8, num // 4) if num_test is None else num_test
    if not 0 < public_fraction < 1:
        raise ValueError(f"public_fraction must be in (0, 1), got {public_fraction}")
    write_kaggle_dr(out, num, seed, size, lesions)
    rng = np.random.default_rng([seed, 1])
    names = _eye_names(10 + num, num_test)
    grades = synthetic.sample_retina_grades(rng, num_test)
    _retina_images(out, "test", names, grades, rng, size, lesions)
    with open(os.path.join(out, "retinopathy_solution.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "level", "Usage"])
        for i, (name, grade) in enumerate(zip(names, grades)):
            writer.writerow([name, grade, "Public" if i < max(1, round(public_fraction * num_test)) else "Private"])
    sample = _eye_names(10 + num + num_test, min(10, num))  # Kaggle's sample.zip: 10 unlabelled images
    _retina_images(out, "sample", sample, synthetic.sample_retina_grades(rng, len(sample)), rng, size, lesions)
    return out


def write_source(
    out: str,
    num: int,
    seed: int = 0,
    size: int = 64,
    num_classes: int = 10,
    num_test: int | None = None,
    kind: str = "shapes",
) -> str:
    """`num` train and `num_test` test images over `num_classes` classes: synthetic.render_source ('shapes',
    classes drawn at random) or one IFS fractal per class, the systems drawn from `seed` (synthetic.render_fractal,
    'fractals', classes balanced: each split holds every class once `num` and `num_test` >= `num_classes`)."""
    _check_choice("source kind", kind, SOURCE_KINDS)
    num_test = max(num_classes, num // 5) if num_test is None else num_test
    rng = np.random.default_rng(seed)
    if kind == "fractals":
        systems = synthetic.sample_ifs_classes(np.random.default_rng([seed, 2]), num_classes)

        def render(label):
            return synthetic.render_fractal(rng, systems[label], size)

        jpeg = _STUDY_JPEG
    else:

        def render(label):
            return synthetic.render_source(rng, label, size)

        jpeg = None
    digits = max(2, len(str(num_classes - 1)))
    for split, count in (("train", num), ("test", num_test)):
        if kind == "fractals":  # balanced, so every split holds every class (folders name the classes)
            labels = rng.permutation(np.arange(count) % num_classes)
        else:
            labels = rng.integers(num_classes, size=count)
        for i, label in enumerate(labels):
            _save(render(int(label)), os.path.join(out, split, f"class_{label:0{digits}d}", f"{i:06d}.jpeg"), jpeg=jpeg)
    return out


WRITERS = {
    "chexpert": write_chexpert,
    "kaggle_dr": write_kaggle_dr,
    "tfds_dr_manual": write_tfds_dr_manual,
    "source": write_source,
}
