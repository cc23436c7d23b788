"""Random-access example sources: folder readers for the real downloads, TFDS ArrayRecord readers, synthetic sets.

A source knows every label up front (parsed from CSV or scanned from records without decoding images), so that
subsets, stratification and class balance never touch pixels; `load(i)` decodes one image on demand.
"""

import csv
import dataclasses
import io
import os
import re

import numpy as np
from PIL import Image

from transfusion_jax.data import synthetic, tasks


class BadImageError(Exception):
    """An image that is missing or cannot be decoded; the message starts with its path."""


class TooManyBadImagesError(BadImageError):
    """More of a split is missing or unreadable than config.data.max_skip_fraction allows under on_bad_image='skip'."""


class DatasetFormatError(ValueError):
    """A dataset whose files do not have the expected layout, columns or label values."""


@dataclasses.dataclass
class Labels:
    """targets: int32 [N] (softmax) or float32 [N, C] (sigmoid); mask: float32 [N, C] ([N, 1] for softmax);
    strata: int [N], the groups a stratified subset keeps in proportion."""

    targets: np.ndarray
    mask: np.ndarray
    strata: np.ndarray


def softmax_labels(targets: np.ndarray) -> Labels:
    targets = np.asarray(targets, np.int32)
    return Labels(targets, np.ones((len(targets), 1), np.float32), targets.astype(np.int64))


def sigmoid_labels(targets: np.ndarray, mask: np.ndarray) -> Labels:
    """Strata are the pattern of positive pathologies (a bit per pathology)."""
    bits = (targets > 0.5).astype(np.int64) @ (2 ** np.arange(targets.shape[1], dtype=np.int64))
    return Labels(targets.astype(np.float32), mask.astype(np.float32), bits)


def decode_image(data, path: str, target_size: int) -> Image.Image:
    """Decodes encoded bytes or a file path; `draft` lets libjpeg decode big JPEGs at a reduced scale (>= the
    target size) which is several times faster for full-resolution fundus photos."""
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        if image.format == "JPEG":
            image.draft(image.mode, (target_size, target_size))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    return image


class Source:
    """Interface: `task`, `labels`, `len()`, `load(i) -> PIL.Image`, `describe(i) -> str` (a path or key, for
    messages), `example_id(i)` (the example's identity; `describe(i)` unless a source knows better)."""

    task: tasks.TaskInfo
    labels: Labels

    def __len__(self):
        return len(self.labels.targets)

    def load(self, index: int, target_size: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        raise NotImplementedError

    def example_id(self, index: int) -> str:
        """What identifies the example across splits and copies (Dataset.example_ids): its path or key."""
        return self.describe(index)

    def missing_files(self, indices) -> list[str]:
        """Paths of examples `indices` absent from disk; records of TFDS and in-memory sources always exist."""
        return []


class FileSource(Source):
    """A source whose example i is the image file `paths[i]`."""

    paths: list[str]

    def load(self, index, target_size):
        return decode_image(self.paths[index], self.paths[index], target_size)

    def describe(self, index):
        return self.paths[index]

    def missing_files(self, indices) -> list[str]:
        return [self.paths[i] for i in indices if not os.path.isfile(self.paths[i])]


@dataclasses.dataclass(frozen=True)
class SplitSlice:
    """The TFDS-style slice of a split name: '[:90%]' -> lo None, hi 90 (percent); '[10:50]' -> rows 10 to 50."""

    lo: int | None
    lo_percent: bool
    hi: int | None
    hi_percent: bool


def parse_split(split: str, where: str) -> tuple[str, SplitSlice | None]:
    """'train' -> ('train', None); 'train[:90%]' / 'train[90%:]' / 'train[10:50]' -> ('train', SplitSlice)."""
    m = re.fullmatch(r"(\w+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?", split)
    if not m:
        raise ValueError(f"{where}: cannot parse split {split!r}; use e.g. 'train' or 'train[:90%]'")
    base, lo, lo_pct, hi, hi_pct = m.groups()
    if lo is None:
        return base, None
    as_int = lambda v: int(v) if v not in ("", None) else None  # noqa: E731
    return base, SplitSlice(as_int(lo), bool(lo_pct), as_int(hi), bool(hi_pct))


def patient_slice(patients: list, part: SplitSlice | None) -> np.ndarray:
    """Sorted row indices of the slice `part` of rows whose patient ids are `patients`, cut between patients.

    Rows are first grouped by patient, wherever they are in the file (patients in order of first appearance, each
    patient's rows in file order); the slice's bounds are taken over that grouped order and move forward to the
    next patient's first row. So complementary slices ('[:90%]', '[90%:]') never share a patient even when a
    patient's rows are scattered. For a file already grouped by patient, a slice is a plain run of rows."""
    n = len(patients)
    if part is None:
        return np.arange(n)
    first_seen: dict = {}
    rank = np.array([first_seen.setdefault(p, len(first_seen)) for p in patients], np.int64)
    grouped = np.argsort(rank, kind="stable")
    ordered = rank[grouped]

    def bound(value, percent, default):
        if value is None:
            return default
        index = round(n * value / 100) if percent else value
        index = min(max(index + n if index < 0 else index, 0), n)
        while 0 < index < n and ordered[index] == ordered[index - 1]:
            index += 1
        return index

    return np.sort(grouped[bound(part.lo, part.lo_percent, 0) : bound(part.hi, part.hi_percent, n)])


def read_csv(path: str, required: tuple) -> list:
    """Rows of a CSV as dicts; a missing file or column raises naming both."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise DatasetFormatError(f"{path}: missing column(s) {missing}; found {columns}")
        return list(reader)


def _check_nonempty(n: int, what: str):
    if n == 0:
        raise DatasetFormatError(f"{what} has no examples; check the path, the split name and the filters.")


# ----------------------------------------------------------------------------------------------------- Retina


class RetinaFolderSource(FileSource):
    """The Kaggle layout: `root/trainLabels.csv` (image,level) with `root/train/<image>.jpeg`. Split 'test' /
    'validation' read `root/retinopathy_solution.csv` (image,level,Usage) with `root/test/<image>.jpeg`, keeping
    Usage Private / Public as the TFDS builder does."""

    _SPLITS = {
        "train": ("trainLabels.csv", "train", None),
        "validation": ("retinopathy_solution.csv", "test", "Public"),
        "test": ("retinopathy_solution.csv", "test", "Private"),
    }

    def __init__(self, root: str, split: str, task: tasks.TaskInfo):
        base, part = parse_split(split, root)
        if base not in self._SPLITS:
            raise ValueError(f"retina_folder split {split!r}: base must be one of {sorted(self._SPLITS)}")
        csv_name, image_dir, usage = self._SPLITS[base]
        csv_path = os.path.join(root, csv_name)
        if not os.path.isfile(csv_path):
            raise FileNotFoundError(
                f"{csv_path} not found: the Kaggle DR layout is ROOT/trainLabels.csv with "
                f"ROOT/train/<image>.jpeg (and ROOT/retinopathy_solution.csv with ROOT/test/ for "
                f"the test splits). Set config.data.root to that folder."
            )
        rows = read_csv(csv_path, ("image", "level") + (("Usage",) if usage else ()))
        if usage:
            rows = [r for r in rows if r["Usage"] == usage]
        rows = [rows[i] for i in patient_slice([r["image"].split("_")[0] for r in rows], part)]  # '<patient>_<eye>'
        grades = []
        for i, r in enumerate(rows):
            try:
                grades.append(int(r["level"]))
            except ValueError:
                raise DatasetFormatError(
                    f"{csv_path}: level {r['level']!r} of image {r['image']!r} is not an integer 0-4"
                )
        _check_nonempty(len(rows), f"{csv_path} split {split!r}")
        self.task = task
        self.names = [r["image"] for r in rows]
        self.paths = [os.path.join(root, image_dir, f"{name}.jpeg") for name in self.names]
        self.labels = softmax_labels(tasks.retina_targets(np.array(grades), task, csv_path))


class TfdsSource(Source):
    """Reads a prepared TFDS dataset (ArrayRecord) through `tfds.data_source`, images left encoded (SkipDecoding)
    so that the label scan at start-up decodes nothing and workers decode with Pillow: no TensorFlow.

    Subclasses that know each record's patient (`by_patient=True`) slice splits by patient themselves: 'train[:95%]'
    opens all of 'train' and keeps whole patients (`patient_slice`), since TFDS slices cut its own record order
    and would put one patient on both sides. Other slices go to TFDS unchanged."""

    def __init__(
        self, name: str, split: str, data_dir: str | None, image_key: str = "image", how_to_prepare="", by_patient=False
    ):
        import tensorflow_datasets as tfds

        base, self._part = parse_split(split, f"TFDS {name}") if by_patient else (split, None)
        self._name, self._split, self._opened, self._image_key = name, split, base, image_key
        how_to_prepare = how_to_prepare or (
            f"Prepare it once with `python -m transfusion_jax.data prepare {name} --manual_dir ... --data_dir ...`."
        )
        try:
            self._ds = tfds.data_source(
                name, split=self._opened, data_dir=data_dir or None, decoders={image_key: tfds.decode.SkipDecoding()}
            )
        except Exception as e:  # TFDS raises several types for a missing preparation; say what to do
            raise FileNotFoundError(
                f"TFDS dataset {name!r} split {split!r} not found under data_dir={data_dir!r} ({type(e).__name__}: "
                f"{e}). {how_to_prepare}"
            ) from e
        _check_nonempty(len(self._ds), f"TFDS {name} split {split!r}")
        self._keys = np.arange(len(self._ds))  # record index of each example

    def _records(self, keys, chunk: int = 1024):
        """Records in batched reads (ArrayRecord reads a batch in parallel). The start-up label scan reads every
        record once: seconds for btgraham-300 or CheXpert-small, long for the full-size 'original' DR config."""
        keys = [int(k) for k in keys]
        for start in range(0, len(keys), chunk):
            yield from self._ds.__getitems__(keys[start : start + chunk])

    def _keep(self, keep: np.ndarray, patients: list) -> np.ndarray:
        """Restricts the examples to positions `keep` of the current ones (e.g. frontal views), then to this split's
        patient slice; returns the positions kept, for the caller's per-example arrays."""
        keep = np.asarray(keep, np.int64)
        keep = keep[patient_slice([patients[i] for i in keep], self._part)]
        _check_nonempty(len(keep), f"TFDS {self._name} split {self._split!r}")
        self._keys = self._keys[keep]
        return keep

    def load(self, index, target_size):
        return decode_image(self._ds[int(self._keys[index])][self._image_key], self.describe(index), target_size)

    def describe(self, index):
        return f"tfds:{self._name}/{self._opened}[{int(self._keys[index])}]"


class RetinaTfdsSource(TfdsSource):
    """`diabetic_retinopathy_detection/<config>` with splits train / validation / test (label -1 = unlabelled);
    record names are '<patient>_<eye>', so slices keep both eyes of a patient together."""

    def __init__(self, config_name: str, split: str, data_dir, task: tasks.TaskInfo):
        super().__init__(f"diabetic_retinopathy_detection/{config_name}", split, data_dir, by_patient=True)
        records = [(int(r["label"]), r["name"].decode().split("_")[0]) for r in self._records(self._keys)]
        grades, patients = np.array([g for g, _ in records]), [p for _, p in records]
        grades = grades[self._keep(np.arange(len(records)), patients)]
        self.task = task
        self.labels = softmax_labels(tasks.retina_targets(grades, task, f"TFDS {self._name} split {split!r}"))


# ------------------------------------------------------------------------------------ TFDS classification

# Presets of `tfds_classification`: config.data.name -> (tfds_name, image_key, label_key, how to prepare it).
TFDS_CLASSIFICATION_PRESETS = {
    "imagenet_tfds": (
        "imagenet2012",
        "image",
        "label",
        (
            "Prepare it once with TFDS's own builder (needs TensorFlow: pip install tensorflow-cpu): put "
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in MANUAL_DIR, then run `tfds build imagenet2012 "
            "--manual_dir=MANUAL_DIR --data_dir=DATA_DIR --file_format=array_record`; set "
            "config.data.data_dir=DATA_DIR."
        ),
    ),
}


class TfdsClassificationSource(TfdsSource):
    """Any prepared TFDS single-label image dataset: encoded image under `image_key`, a ClassLabel under
    `label_key`. Label names come from the builder's ClassLabel (imagenet2012: WordNet ids; a ClassLabel made
    from num_classes alone names them '0', '1', ...)."""

    def __init__(self, tfds_name, split, data_dir, image_key, label_key, how_to_prepare=""):
        import tensorflow_datasets as tfds

        if not tfds_name:
            raise ValueError("config.data.tfds_name is empty: name the TFDS builder, e.g. 'imagenet2012'")
        hint = how_to_prepare or (
            f"Prepare it once with `tfds build {tfds_name} --data_dir=DATA_DIR --file_format=array_record`."
        )
        super().__init__(tfds_name, split, data_dir, image_key=image_key, how_to_prepare=hint)
        features = self._ds.dataset_info.features
        for key, field in ((image_key, "image_key"), (label_key, "label_key")):
            if key not in features:
                raise DatasetFormatError(
                    f"TFDS {tfds_name} has no feature {key!r}; its features are {sorted(features)}: "
                    f"set config.data.{field}"
                )
        label = features[label_key]
        if not isinstance(label, tfds.features.ClassLabel):
            raise DatasetFormatError(
                f"TFDS {tfds_name} feature {label_key!r} is a {type(label).__name__}, not a ClassLabel, so the "
                f"number of classes is unknown; pick a ClassLabel feature as config.data.label_key"
            )
        targets = np.array([int(r[label_key]) for r in self._records(range(len(self._ds)))])
        bad = np.flatnonzero((targets < 0) | (targets >= label.num_classes))
        if bad.size:
            raise DatasetFormatError(
                f"{self.describe(int(bad[0]))}: label {targets[bad[0]]} is outside 0-{label.num_classes - 1} "
                f"({bad.size} such records); split {split!r} looks unlabelled (imagenet2012's 'test' is): "
                f"train and evaluate on labelled splits"
            )
        self.task = tasks.TaskInfo(tfds_name, tuple(label.names), label.num_classes, "softmax")
        self.labels = softmax_labels(targets)


# --------------------------------------------------------------------------------------------------- CheXpert

_TFDS_CHEXPERT_CODES = np.array([tasks.UNCERTAIN, tasks.POSITIVE, tasks.NEGATIVE, tasks.BLANK])  # ClassLabel order


def _chexpert_labels(raw: np.ndarray, policy: str) -> Labels:
    return sigmoid_labels(*tasks.apply_uncertainty_policy(raw, policy))


def chexpert_patient(path: str) -> str:
    """The patient of a CheXpert Path: '.../train/patient00001/study1/view1_frontal.jpg' -> 'patient00001'."""
    return path.replace("\\", "/").split("/")[-3]


class ChexpertFolderSource(FileSource):
    """The official `CheXpert-v1.0-small/` download: train.csv / valid.csv whose Path column is relative to the
    folder *containing* CheXpert-v1.0-small. `root` may be either that parent or CheXpert-v1.0-small itself."""

    _SPLITS = {"train": "train.csv", "valid": "valid.csv", "validation": "valid.csv"}

    def __init__(self, root: str, split: str, policy: str, frontal_only: bool):
        base, part = parse_split(split, root)
        if base not in self._SPLITS:
            raise ValueError(f"chexpert_folder split {split!r}: base must be one of {sorted(self._SPLITS)}")
        folder = root if os.path.isfile(os.path.join(root, "train.csv")) else os.path.join(root, "CheXpert-v1.0-small")
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"{folder} not found: set config.data.root to the folder holding "
                f"CheXpert-v1.0-small/ (with train.csv, valid.csv, train/, valid/)."
            )
        csv_path = os.path.join(folder, self._SPLITS[base])
        required = ("Path", "Frontal/Lateral") + tasks.CHEXPERT_PATHOLOGIES
        rows = read_csv(csv_path, required)
        views = {r["Frontal/Lateral"] for r in rows}
        if not views <= {"Frontal", "Lateral"}:
            raise DatasetFormatError(
                f"{csv_path}: Frontal/Lateral has {sorted(views - {'Frontal', 'Lateral'})}; "
                f"expected 'Frontal' or 'Lateral'"
            )
        if frontal_only:
            rows = [r for r in rows if r["Frontal/Lateral"] == "Frontal"]
        rows = [rows[i] for i in patient_slice([chexpert_patient(r["Path"]) for r in rows], part)]
        _check_nonempty(len(rows), f"{csv_path} split {split!r} (frontal_only={frontal_only})")
        raw = np.array(
            [
                [
                    tasks.parse_chexpert_value(r[p], p, f"{csv_path} row Path={r['Path']}")
                    for p in tasks.CHEXPERT_PATHOLOGIES
                ]
                for r in rows
            ]
        )
        parent = os.path.dirname(os.path.abspath(folder))
        self.task = tasks.chexpert_task()
        self.raw = raw
        self.paths = [os.path.join(parent, r["Path"]) for r in rows]
        self.labels = _chexpert_labels(raw, policy)


class ChexpertTfdsSource(TfdsSource):
    """The TFDS `chexpert` builder: `label` is 14 ClassLabel ids (uncertain, positive, negative, unmentioned) in
    the CSV's observation order; `image_view` 0 = frontal, 1 = lateral; `name` is the CSV's Path, which names the
    patient. Splits train / validation (the official valid set; 'valid' as in the folder reader works too)."""

    def __init__(self, split: str, data_dir, policy: str, frontal_only: bool):
        split = re.sub(r"^valid(?=\[|$)", "validation", split)
        super().__init__("chexpert", split, data_dir, by_patient=True)
        columns = [tasks.CHEXPERT_OBSERVATIONS.index(p) for p in tasks.CHEXPERT_PATHOLOGIES]
        frontal, raw, patients = [], [], []
        for i, r in enumerate(self._records(self._keys)):
            label = np.asarray(r["label"])
            if label.shape != (len(tasks.CHEXPERT_OBSERVATIONS),):
                raise DatasetFormatError(
                    f"{self.describe(i)}: label has shape {label.shape}, expected "
                    f"({len(tasks.CHEXPERT_OBSERVATIONS)},) observations"
                )
            frontal.append(int(r["image_view"]) == 0)
            raw.append(_TFDS_CHEXPERT_CODES[label[columns]])
            patients.append(chexpert_patient(r["name"].decode()))
        keep = np.flatnonzero(frontal) if frontal_only else np.arange(len(raw))
        keep = self._keep(keep, patients)
        self.task = tasks.chexpert_task()
        self.raw = np.array(raw)[keep]
        self.labels = _chexpert_labels(self.raw, policy)


# ------------------------------------------------------------------------------------------------- synthetic


class SyntheticSource(Source):
    """In-memory procedural images (synthetic.py): example i is rendered from rng (seed, i); nothing on disk."""

    def __init__(
        self, kind: str, num_examples: int, seed: int, native_size: int, task: tasks.TaskInfo, num_classes: int = 10
    ):
        if num_examples <= 0:
            raise DatasetFormatError(f"synthetic dataset needs num_examples > 0, got {num_examples}")
        rng = np.random.default_rng([seed, 0])
        self.kind, self.seed, self.native_size, self.task = kind, seed, native_size, task
        if kind == "retina":
            self.grades = synthetic.sample_retina_grades(rng, num_examples)
            self.labels = softmax_labels(tasks.retina_targets(self.grades, task, "synthetic_retina"))
        elif kind == "source":
            self.classes = rng.integers(num_classes, size=num_examples)
            self.labels = softmax_labels(self.classes)
        else:
            raise ValueError(f"unknown synthetic kind {kind!r}")

    def load(self, index, target_size):
        rng = np.random.default_rng([self.seed, 1, index])
        if self.kind == "retina":
            return Image.fromarray(synthetic.render_retina(rng, int(self.grades[index]), self.native_size))
        return Image.fromarray(synthetic.render_source(rng, int(self.classes[index]), self.native_size))

    def describe(self, index):
        return f"synthetic_{self.kind}(seed={self.seed})[{index}]"


def _subdirs(folder: str) -> list[str]:
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


class ImageFolderSource(FileSource):
    """`root/<split>/<class>/*.jpeg` (the generated "source" pretraining set). The classes are the sorted union of
    the class folders of every split under root, so a class index means the same class in every split even where a
    small split lacks some classes."""

    def __init__(self, root: str, split: str):
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder} not found: image_folder expects ROOT/<split>/<class>/<image>.jpeg")
        classes = sorted({c for s in _subdirs(root) for c in _subdirs(os.path.join(root, s))})
        self.paths, targets = [], []
        for c, name in enumerate(classes):
            if not os.path.isdir(os.path.join(folder, name)):
                continue
            files = sorted(
                f for f in os.listdir(os.path.join(folder, name)) if f.lower().endswith((".jpeg", ".jpg", ".png"))
            )
            self.paths += [os.path.join(folder, name, f) for f in files]
            targets += [c] * len(files)
        _check_nonempty(len(self.paths), folder)
        self.task = tasks.TaskInfo(
            f"image_folder:{os.path.basename(os.path.normpath(root))}", tuple(classes), len(classes), "softmax"
        )
        self.labels = softmax_labels(np.array(targets))


# Files an unlabeled folder reads (what Pillow decodes and medical exports commonly are).
UNLABELED_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp")


class UnlabeledFolderSource(FileSource):
    """Every image file under `root`, at any depth, in sorted path order: unlabeled images for self-supervised
    pretraining (transfusion_jax.ssl). Labels are a placeholder (one class, every example 0) that nothing reads. The
    one split is 'train'; a slice of it ('train[:90%]', 'train[100:]') cuts the sorted list of files."""

    def __init__(self, root: str, split: str):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root} not found: unlabeled_folder reads every image file under config.data.root")
        base, part = parse_split(split, root)
        if base != "train":
            raise ValueError(f"unlabeled_folder has one split, 'train' (sliceable, e.g. 'train[:90%]'); got {split!r}")
        found = sorted(
            os.path.join(folder, f)
            for folder, _, files in os.walk(root, followlinks=True)
            for f in files
            if f.lower().endswith(UNLABELED_SUFFIXES)
        )
        _check_nonempty(len(found), f"{root} ({'/'.join(UNLABELED_SUFFIXES)} files at any depth)")
        self.paths = [found[i] for i in patient_slice(found, part)]  # each file its own "patient": a plain slice
        _check_nonempty(len(self.paths), f"{root} split {split!r}")
        self.task = tasks.TaskInfo(
            f"unlabeled_folder:{os.path.basename(os.path.normpath(root))}", ("unlabeled",), 1, "softmax"
        )
        self.labels = softmax_labels(np.zeros(len(self.paths), np.int32))
