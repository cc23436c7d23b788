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

Worker processes: `source_jobs` and `tfds_dr_manual_jobs` cut a set into independent jobs and `run_jobs` runs them
in a process pool; a job owns its random stream, so the files are the same bytes for any number of workers. By
default a split is one stream, drawn in order as it always was (source: one job; Retina: train, and test + sample);
`block=B` gives each run of B consecutive images its own stream (labels from a stream of their own), so a large set
splits into many jobs. A pool of processes rather than grain: grain turns records into training batches, while
this is a fixed list of jobs that write files and return nothing.
"""

import concurrent.futures
import csv
import functools
import multiprocessing
import os
from collections.abc import Callable

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
    _write_rows(os.path.join(out, "trainLabels.csv"), ["image", "level"], zip(names, grades))
    return out


def _write_rows(path: str, header: list, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _solution_rows(names: list, grades, public: int) -> list:
    return [[name, grade, "Public" if i < public else "Private"] for i, (name, grade) in enumerate(zip(names, grades))]


def _write_dr_test(out: str, num: int, seed: int, size: int, num_test: int, lesions: str, public: int) -> None:
    """test/ + retinopathy_solution.csv + sample/ from the one stream [seed, 1], in order."""
    rng = np.random.default_rng([seed, 1])
    names = _eye_names(10 + num, num_test)
    grades = synthetic.sample_retina_grades(rng, num_test)
    _retina_images(out, "test", names, grades, rng, size, lesions)
    _write_rows(os.path.join(out, "retinopathy_solution.csv"), ["image", "level", "Usage"],
                _solution_rows(names, grades, public))  # fmt: skip
    sample = _eye_names(10 + num + num_test, min(10, num))  # Kaggle's sample.zip: 10 unlabelled images
    _retina_images(out, "sample", sample, synthetic.sample_retina_grades(rng, len(sample)), rng, size, lesions)


def _retina_block(out: str, folder: str, names: list, grades, stream: list, size: int, lesions: str) -> None:
    _retina_images(out, folder, names, grades, np.random.default_rng(stream), size, lesions)


def _blocks(count: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(start + block, count)) for start in range(0, count, block)]


def tfds_dr_manual_jobs(
    out: str,
    num: int,
    seed: int = 0,
    size: int = 96,
    num_test: int | None = None,
    lesions: str = "blobs",
    public_fraction: float = 0.3,
    block: int = 0,
) -> list[Callable[[], None]]:
    """The jobs that write `write_tfds_dr_manual`'s set (module docstring: `block`). With `block`, each split's
    grades come from the stream [seed, 3, split] and its images b*block.. from [seed, 4, split, b]."""
    _check_choice("lesions", lesions, RETINA_LESIONS)
    num_test = max(8, num // 4) if num_test is None else num_test
    if not 0 < public_fraction < 1:
        raise ValueError(f"public_fraction must be in (0, 1), got {public_fraction}")
    if block < 0:
        raise ValueError(f"block must be >= 0 (0: one stream per split), got {block}")
    public = max(1, round(public_fraction * num_test))
    if not block:
        return [
            functools.partial(write_kaggle_dr, out, num, seed, size, lesions),
            functools.partial(_write_dr_test, out, num, seed, size, num_test, lesions, public),
        ]
    splits = [  # (split number, folder, names)
        (0, "train", _eye_names(10, num)),
        (1, "test", _eye_names(10 + num, num_test)),
        (2, "sample", _eye_names(10 + num + num_test, min(10, num))),  # Kaggle's sample.zip: 10 unlabelled images
    ]
    grades = {k: synthetic.sample_retina_grades(np.random.default_rng([seed, 3, k]), len(n)) for k, _, n in splits}
    jobs = [
        functools.partial(_write_rows, os.path.join(out, "trainLabels.csv"), ["image", "level"],
                          list(zip(splits[0][2], grades[0]))),
        functools.partial(_write_rows, os.path.join(out, "retinopathy_solution.csv"), ["image", "level", "Usage"],
                          _solution_rows(splits[1][2], grades[1], public)),
    ]  # fmt: skip
    for k, folder, names in splits:
        for b, (start, stop) in enumerate(_blocks(len(names), block)):
            jobs.append(functools.partial(_retina_block, out, folder, names[start:stop], grades[k][start:stop],
                                          [seed, 4, k, b], size, lesions))  # fmt: skip
    return jobs


def write_tfds_dr_manual(
    out: str,
    num: int,
    seed: int = 0,
    size: int = 96,
    num_test: int | None = None,
    lesions: str = "blobs",
    public_fraction: float = 0.3,
    block: int = 0,
    workers: int = 1,
) -> str:
    """The TFDS DR manual dir: the Kaggle train tree plus `num_test` test images labelled in
    retinopathy_solution.csv, the first `public_fraction` of them Usage=Public (TFDS 'validation'), the rest
    Private ('test'), and sample/ with up to 10 unlabelled images (TFDS 'sample'). Eye ids are consecutive across
    train, test and sample, so no id is in two splits. `block`, `workers`: module docstring."""
    run_jobs(tfds_dr_manual_jobs(out, num, seed, size, num_test, lesions, public_fraction, block), workers)
    return out


def _source_renderer(kind: str, systems, size: int):
    if kind == "fractals":
        return functools.partial(_render_fractal_of_class, systems, size), _STUDY_JPEG
    return functools.partial(_render_shape_of_class, size), None


def _render_fractal_of_class(systems, size: int, rng, label: int):
    return synthetic.render_fractal(rng, systems[label], size)


def _render_shape_of_class(size: int, rng, label: int):
    return synthetic.render_source(rng, label, size)


def _source_labels(rng, kind: str, count: int, num_classes: int) -> np.ndarray:
    if kind == "fractals":  # balanced, so every split holds every class (folders name the classes)
        return rng.permutation(np.arange(count) % num_classes)
    return rng.integers(num_classes, size=count)


def _source_files(out: str, split: str, first: int, labels, rng, render, jpeg, num_classes: int) -> None:
    digits = max(2, len(str(num_classes - 1)))
    for i, label in enumerate(labels, first):
        path = os.path.join(out, split, f"class_{label:0{digits}d}", f"{i:06d}.jpeg")
        _save(render(rng, int(label)), path, jpeg=jpeg)


def _write_source_one_stream(out, counts, seed, size, num_classes, kind, systems) -> None:
    """Both splits from the one stream `seed`, in order: labels of a split, then its images."""
    rng = np.random.default_rng(seed)
    render, jpeg = _source_renderer(kind, systems, size)
    for split, count in counts:
        labels = _source_labels(rng, kind, count, num_classes)
        _source_files(out, split, 0, labels, rng, render, jpeg, num_classes)


def _source_block(out, split, first, labels, stream, size, num_classes, kind, systems) -> None:
    render, jpeg = _source_renderer(kind, systems, size)
    _source_files(out, split, first, labels, np.random.default_rng(stream), render, jpeg, num_classes)


def source_jobs(
    out: str,
    num: int,
    seed: int = 0,
    size: int = 64,
    num_classes: int = 10,
    num_test: int | None = None,
    kind: str = "shapes",
    block: int = 0,
) -> list[Callable[[], None]]:
    """The jobs that write `write_source`'s set (module docstring: `block`). With `block`, each split's labels
    come from the stream [seed, 3, split] and its images b*block.. from [seed, 4, split, b]; the fractal classes'
    systems always from [seed, 2]."""
    _check_choice("source kind", kind, SOURCE_KINDS)
    if block < 0:
        raise ValueError(f"block must be >= 0 (0: one stream), got {block}")
    num_test = max(num_classes, num // 5) if num_test is None else num_test
    systems = None
    if kind == "fractals":
        systems = synthetic.sample_ifs_classes(np.random.default_rng([seed, 2]), num_classes)
    counts = (("train", num), ("test", num_test))
    if not block:
        return [functools.partial(_write_source_one_stream, out, counts, seed, size, num_classes, kind, systems)]
    jobs = []
    for k, (split, count) in enumerate(counts):
        labels = _source_labels(np.random.default_rng([seed, 3, k]), kind, count, num_classes)
        for b, (start, stop) in enumerate(_blocks(count, block)):
            jobs.append(functools.partial(_source_block, out, split, start, labels[start:stop], [seed, 4, k, b],
                                          size, num_classes, kind, systems))  # fmt: skip
    return jobs


def write_source(
    out: str,
    num: int,
    seed: int = 0,
    size: int = 64,
    num_classes: int = 10,
    num_test: int | None = None,
    kind: str = "shapes",
    block: int = 0,
    workers: int = 1,
) -> str:
    """`num` train and `num_test` test images over `num_classes` classes: synthetic.render_source ('shapes',
    classes drawn at random) or one IFS fractal per class, the systems drawn from `seed` (synthetic.render_fractal,
    'fractals', classes balanced: each split holds every class once `num` and `num_test` >= `num_classes`).
    `block`, `workers`: module docstring."""
    run_jobs(source_jobs(out, num, seed, size, num_classes, num_test, kind, block), workers)
    return out


def run_jobs(jobs: list[Callable[[], None]], workers: int = 1) -> None:
    """Runs every job, in this process (`workers` <= 1) or in a pool of that many processes (spawned: the caller
    may hold JAX's threads, which a fork would copy mid-flight). The first failure is raised."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            job()
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


WRITERS = {
    "chexpert": write_chexpert,
    "kaggle_dr": write_kaggle_dr,
    "tfds_dr_manual": write_tfds_dr_manual,
    "source": write_source,
}
