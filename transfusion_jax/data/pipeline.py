"""The `Dataset`: index arithmetic for shuffling / resuming / padding, parallel decoding, global sharded batches."""

import collections
import concurrent.futures
import dataclasses
import functools
import logging
import multiprocessing
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from transfusion_jax.data import preprocess, readers, subsets, tasks

DATASET_NAMES = (
    "retina_folder",
    "retina_tfds",
    "chexpert_folder",
    "chexpert_tfds",
    "synthetic_retina",
    "synthetic_source",
    "image_folder",
    "tfds_classification",
    "imagenet_tfds",
)
# Used when config.data.normalization is '' and no checkpoint names one (the trainer takes it from the checkpoint).
DEFAULT_NORMALIZATION = "torchvision"
# Flips that keep each task's label (config.data.augment.flips='auto'): a fundus photo mirrored is a plausible other
# eye, so Retina flips left-right; a chest x-ray mirrored puts the heart on the wrong side, so CheXpert never flips.
TASK_FLIPS = {"retina": "horizontal", "chexpert": "none"}
FLIPS = {"none": (False, False), "horizontal": (True, False), "vertical": (False, True), "both": (True, True)}
# The paper's resolutions (PAPER.md 1.1 / 2): Retina 587 (Inception may use 299), CheXpert 224.
_PAPER_SIZE = {
    "retina": 587,
    "chexpert": 224,
    "synthetic_source": 224,
    "image_folder": 224,
    "tfds_classification": 224,
    "imagenet_tfds": 224,
}


def default_data_config() -> ml_collections.ConfigDict:
    """Fields of `config.data`, with defaults and why (see also the package docstring)."""
    c = ml_collections.ConfigDict()
    c.name = "retina_folder"  # one of DATASET_NAMES
    c.root = ""  # folder readers: Kaggle DR folder / folder holding CheXpert-v1.0-small
    c.data_dir = ""  # TFDS readers: TFDS data_dir ('' = TFDS default, ~/tensorflow_datasets)
    c.tfds_config = "btgraham-300"  # retina_tfds builder config: original / 1M / 250K / btgraham-300
    c.tfds_name = ""  # tfds_classification: the TFDS builder, e.g. 'imagenet2012' (imagenet_tfds sets its own)
    c.image_key = "image"  # tfds_classification: feature holding the encoded image
    c.label_key = "label"  # tfds_classification: ClassLabel feature used as the softmax target
    c.image_size = 0  # 0 = the paper's: 587 Retina, 224 CheXpert (set 299 for Inception if wanted)
    c.resize_mode = ""  # '' = center_crop for Retina (round disc), squash for CheXpert and others
    # preset name in preprocess.PRESETS; '' = the checkpoint's (config.pretrained's metadata; the trainer resolves
    # it and refuses a different explicit value), else DEFAULT_NORMALIZATION
    c.normalization = ""
    c.retina_target = "binary"  # 'binary' (grade >= retina_threshold) or 'five_class'
    c.retina_threshold = 2  # paper: "moderate DR" = grade >= 2 on the 0-4 scale
    c.uncertainty_policy = "u_mixed"  # u_ones / u_zeros / u_ignore / u_mixed (see tasks.apply_uncertainty_policy)
    c.frontal_only = False  # the paper's ~223k images are nearly all 224k, i.e. both views
    c.subset_size = 0  # training examples (0 = all); paper's small-data regime: 5000 of Retina; eval splits stay whole
    c.subset_seed = -1  # -1 = config.seed, so each seed trains on its own subset; >= 0 fixes one subset for all seeds
    c.stratified = True  # keep class proportions exactly in a subset (softmax class / positive pattern)
    c.augment = ml_collections.ConfigDict(
        dict(
            enabled=True,
            flips="auto",  # auto (per task: TASK_FLIPS) | none | horizontal | vertical | both
            rotate_deg=10.0,
            translate=0.05,
            scale_min=0.95,
            scale_max=1.05,
            brightness=0.1,
            contrast=0.1,
        )
    )  # applied only when train=True
    c.on_bad_image = "raise"  # 'raise' (stop, naming the path) or 'skip' (count, log, valid=False)
    c.max_skip_fraction = 0.01  # under 'skip': a split with more bad images than this fraction stops the run
    c.num_workers = 2  # decoding workers; 0 = decode in the calling thread
    c.worker_type = "thread"  # 'thread' (Pillow releases the GIL) or 'process'
    c.prefetch = 2  # batches decoded ahead
    c.synthetic = ml_collections.ConfigDict(dict(num_examples=512, seed=0, native_size=128, num_classes=10))
    return c


@dataclasses.dataclass(frozen=True)
class Augment:
    """A picklable copy of `config.data.augment` for worker processes."""

    hflip: bool
    vflip: bool
    rotate_deg: float
    translate: float
    scale_min: float
    scale_max: float
    brightness: float
    contrast: float


@dataclasses.dataclass(frozen=True)
class _Decode:
    """How one example becomes pixels; shared by every worker."""

    image_size: int
    resize_mode: str
    augment: Augment | None


def _load_pixels(source, decode: _Decode, index: int, aug_key: tuple):
    """(uint8 [H, W, 3], None) or (None, message) for a bad image. Augmentation draws from rng(aug_key), a
    function of (seed, epoch, position in the epoch) only, so output does not depend on worker scheduling."""
    try:
        image = source.load(index, decode.image_size)
        image = preprocess.resize(image, decode.image_size, decode.resize_mode)
        if decode.augment is not None:
            image = preprocess.augment(image, np.random.default_rng(aug_key), decode.augment)
        return np.asarray(image, np.uint8), None
    except readers.BadImageError as e:
        return None, str(e)


_WORKER = {}


def _init_worker(source, decode):
    _WORKER["source"], _WORKER["decode"] = source, decode


def _load_in_worker(index, aug_key):
    return _load_pixels(_WORKER["source"], _WORKER["decode"], index, aug_key)


class Dataset:
    """A split ready for training or evaluation. See the package docstring for the batch contract."""

    def __init__(
        self,
        source: readers.Source,
        *,
        train: bool,
        decode: _Decode,
        normalization: str,
        on_bad_image: str,
        indices: np.ndarray | None = None,
        num_workers: int = 2,
        worker_type: str = "thread",
        prefetch: int = 2,
        max_skip_fraction: float = 0.01,
        name: str = "",
    ):
        if on_bad_image not in ("skip", "raise"):
            raise ValueError(f"on_bad_image must be 'skip' or 'raise', got {on_bad_image!r}")
        if worker_type not in ("thread", "process"):
            raise ValueError(f"worker_type must be 'thread' or 'process', got {worker_type!r}")
        self.source, self.train, self.decode = source, train, decode
        self.task: tasks.TaskInfo = source.task
        self.normalize = preprocess.get_normalization(normalization)
        self.on_bad_image, self.max_skip_fraction = on_bad_image, max_skip_fraction
        self.name = name or type(source).__name__
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)
        self.num_workers, self.worker_type, self.prefetch = num_workers, worker_type, max(1, prefetch)
        self.bad_images: dict = {}  # path -> error, every image skipped so far
        labels = source.labels
        self.targets, self.masks = labels.targets[self.indices], labels.mask[self.indices]
        self.class_balance = subsets.class_balance(self.targets, self.masks, self.task.label_names)

    def __len__(self):
        return len(self.indices)

    # ----------------------------------------------------------------------------------- index arithmetic

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    def _plan(self, batch_size: int, seed: int, epoch_start: int, start_step: int):
        """Yields, per global batch, this process's share: a list of (subset row or -1 for padding,
        augmentation key). Train: position p of the endless stream is row perm(seed, epoch)[p mod n] of
        epoch epoch_start + p // n, so step s starts at p = s * batch_size with no decoding of what came before."""
        n = len(self)
        per_process = batch_size // jax.process_count()
        first = jax.process_index() * per_process
        perms = collections.OrderedDict()
        step = start_step
        while self.train or step * batch_size < n:
            share = []
            for p in range(step * batch_size + first, step * batch_size + first + per_process):
                if self.train:
                    epoch = epoch_start + p // n
                    if epoch not in perms:
                        perms[epoch] = self._permutation(seed, epoch)
                        if len(perms) > 2:
                            perms.popitem(last=False)
                    share.append((int(perms[epoch][p % n]), (seed, epoch, p % n)))
                else:
                    share.append((p if p < n else -1, ()))
            yield share
            step += 1

    # -------------------------------------------------------------------------------------------- batches

    def batches(
        self,
        global_batch_size: int,
        *,
        mesh: jax.sharding.Mesh,
        seed: int = 0,
        epoch_start: int = 0,
        start_step: int = 0,
    ):
        """Iterator of dicts of global jax.Arrays sharded over mesh axis 'data' (see package docstring)."""
        data_devices = mesh.shape["data"]
        if global_batch_size <= 0 or global_batch_size % data_devices or global_batch_size % jax.process_count():
            raise ValueError(
                f"global_batch_size {global_batch_size} must be a positive multiple of the data axis size "
                f"({data_devices}) and of the process count ({jax.process_count()})"
            )
        sharding = NamedSharding(mesh, P("data"))
        decode = _Decode(self.decode.image_size, self.decode.resize_mode, self.decode.augment if self.train else None)
        plan = self._plan(global_batch_size, seed, epoch_start, start_step)
        with self._executor(decode) as pool:
            pending = collections.deque()
            for share in plan:
                pending.append((share, [self._submit(pool, decode, row, key) for row, key in share]))
                if len(pending) < self.prefetch:
                    continue
                yield self._assemble(*pending.popleft(), global_batch_size, sharding)
            while pending:  # finite (eval) plans end here
                yield self._assemble(*pending.popleft(), global_batch_size, sharding)

    def _executor(self, decode):
        if self.num_workers == 0:
            return _InlineExecutor()
        if self.worker_type == "thread":
            return concurrent.futures.ThreadPoolExecutor(self.num_workers)
        # spawn: forking a process that already runs XLA threads is unsafe
        return concurrent.futures.ProcessPoolExecutor(
            self.num_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.source, decode),
        )

    def _submit(self, pool, decode, row, key):
        if row < 0:
            return None
        index = int(self.indices[row])
        if isinstance(pool, concurrent.futures.ProcessPoolExecutor):
            return pool.submit(_load_in_worker, index, key)
        return pool.submit(_load_pixels, self.source, decode, index, key)

    def _assemble(self, share, futures, global_batch_size, sharding):
        size = self.decode.image_size
        n_local = len(share)
        pixels = np.zeros((n_local, size, size, 3), np.uint8)
        valid = np.zeros((n_local,), bool)
        for j, ((row, _), future) in enumerate(zip(share, futures)):
            if future is None:
                continue
            image, error = future.result()
            if error is not None:
                self._bad_image(int(self.indices[row]), error)
                continue
            pixels[j], valid[j] = image, True
        rows = np.array([max(row, 0) for row, _ in share])
        mask = self.masks[rows] * valid[:, None]
        label = self.targets[rows]
        label = np.where(valid, label, 0) if label.ndim == 1 else label * valid[:, None]
        local = {"image": pixels, "label": label, "label_mask": mask.astype(np.float32), "valid": valid}
        batch = {
            k: jax.make_array_from_process_local_data(sharding, v, (global_batch_size,) + v.shape[1:])
            for k, v in local.items()
        }
        batch["image"] = _normalize_on_device(self.normalize, batch["image"])
        return batch

    def _bad_image(self, index, error):
        if self.on_bad_image == "raise":
            raise readers.BadImageError(f"{error}. Set config.data.on_bad_image='skip' to skip and count such images.")
        path = self.source.describe(index)
        if path not in self.bad_images:
            logging.warning("skipping bad image (%d so far): %s", len(self.bad_images) + 1, error)
        self.bad_images[path] = error
        self._check_skip_rate()

    def _check_skip_rate(self):
        """A run whose split is mostly unreadable must stop, not train or score on what is left (or on nothing)."""
        if len(self.bad_images) > self.max_skip_fraction * len(self):
            examples = "; ".join(list(self.bad_images.values())[:3])  # each message starts with its path
            raise readers.TooManyBadImagesError(
                f"{self.name}: {len(self.bad_images)} of {len(self)} images are missing or unreadable, more than "
                f"config.data.max_skip_fraction={self.max_skip_fraction:g} of the split. First ones: {examples}"
            )

    def example_ids(self) -> list[str]:
        """Each example's path or record key, in the order of `indices` (eval order)."""
        return [self.source.describe(int(i)) for i in self.indices]

    def check(self) -> None:
        """Checks the split as training will read it, before step 1: every image file exists (missing ones raise
        under on_bad_image='raise', count as skipped under 'skip', within max_skip_fraction), and the first
        readable example decodes, resizes (and augments, for training) through the real decode path."""
        missing = set(self.source.missing_files(self.indices))
        if missing and self.on_bad_image == "raise":
            raise readers.BadImageError(
                f"{self.name}: {len(missing)} of {len(self)} image files are missing, e.g. {sorted(missing)[:3]}. "
                f"Set config.data.on_bad_image='skip' to skip them (at most config.data.max_skip_fraction)."
            )
        for path in sorted(missing):
            self.bad_images[path] = f"{path}: file not found"
        self._check_skip_rate()
        for index in self.indices:
            if self.source.describe(int(index)) in missing:
                continue
            _, error = _load_pixels(self.source, self.decode, int(index), (0, 0, 0))
            if error is None:
                return
            self._bad_image(int(index), error)  # raises under 'raise' or once too many fail

    def num_batches(self, global_batch_size: int) -> int:
        """Batches in one eval pass (the last one padded)."""
        return -(-len(self) // global_batch_size)


@functools.partial(jax.jit, static_argnums=0)
def _normalize_on_device(normalization, pixels):
    return normalization(pixels, xp=jnp)


class _InlineExecutor:
    """Runs each submission at once in the calling thread (num_workers=0)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        future = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future


def _data_config(config):
    return config.data if "data" in config else config


def _source(c, split: str) -> readers.Source:
    name = c.name
    retina = lambda: tasks.retina_task(c.retina_target, c.retina_threshold)  # noqa: E731
    if name == "retina_folder":
        return readers.RetinaFolderSource(c.root, split, retina())
    if name == "retina_tfds":
        return readers.RetinaTfdsSource(c.tfds_config, split, c.data_dir, retina())
    if name == "chexpert_folder":
        return readers.ChexpertFolderSource(c.root, split, c.uncertainty_policy, c.frontal_only)
    if name == "chexpert_tfds":
        return readers.ChexpertTfdsSource(split, c.data_dir, c.uncertainty_policy, c.frontal_only)
    if name == "image_folder":
        return readers.ImageFolderSource(c.root, split)
    if name == "tfds_classification":
        return readers.TfdsClassificationSource(c.tfds_name, split, c.data_dir, c.image_key, c.label_key)
    if name in readers.TFDS_CLASSIFICATION_PRESETS:
        tfds_name, image_key, label_key, how_to_prepare = readers.TFDS_CLASSIFICATION_PRESETS[name]
        return readers.TfdsClassificationSource(tfds_name, split, c.data_dir, image_key, label_key, how_to_prepare)
    s = c.synthetic
    split_seed = [s.seed, zlib.crc32(split.encode())]
    seed = int(np.random.default_rng(split_seed).integers(2**31))  # train and test splits differ
    if name == "synthetic_retina":
        return readers.SyntheticSource("retina", s.num_examples, seed, s.native_size, retina())
    if name == "synthetic_source":
        task = tasks.TaskInfo(
            "synthetic_source", tuple(f"class_{k}" for k in range(s.num_classes)), s.num_classes, "softmax"
        )
        return readers.SyntheticSource("source", s.num_examples, seed, s.native_size, task, s.num_classes)
    raise ValueError(f"config.data.name must be one of {DATASET_NAMES}, got {name!r}")


def dataset_family(c) -> str:
    """'retina', 'chexpert' or the reader's name: what task defaults (size, resize, flips) are keyed by."""
    return "retina" if "retina" in c.name else "chexpert" if "chexpert" in c.name else c.name


def image_size(config) -> int:
    """The square input size a run uses: config.data.image_size, or the paper's for the dataset when 0."""
    c = _data_config(config)
    size = c.image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(
            f"config.data.image_size must be a whole number of pixels >= 0 (0 = the paper's), got {size!r}"
        )
    return size or _PAPER_SIZE[dataset_family(c)]


def _augment(c, family: str) -> Augment:
    flips = TASK_FLIPS.get(family, "horizontal") if c.augment.flips == "auto" else c.augment.flips
    if flips not in FLIPS:
        raise ValueError(f"config.data.augment.flips must be 'auto' or one of {sorted(FLIPS)}, got {flips!r}")
    hflip, vflip = FLIPS[flips]
    fields = {k: v for k, v in c.augment.items() if k not in ("enabled", "flips")}
    return Augment(hflip=hflip, vflip=vflip, **fields)


def subset_seed(config) -> int:
    """config.data.subset_seed, or the run's seed when it is -1 (each seed draws its own small-data subset)."""
    c = _data_config(config)
    if c.subset_seed >= 0:
        return c.subset_seed
    if "seed" not in config:
        raise ValueError("config.data.subset_seed=-1 follows config.seed: pass the experiment config, or fix the seed")
    return config.seed


def build_dataset(config, split: str, *, train: bool) -> Dataset:
    """`config` is the experiment ConfigDict (fields under `config.data`) or the data ConfigDict itself.

    train=True: endless, augmented, and restricted to `subset_size` examples when set; train=False (validation,
    test): the whole split, always."""
    c = _data_config(config)
    source = _source(c, split)
    family = dataset_family(c)
    size = image_size(config)
    resize_mode = c.resize_mode or ("center_crop" if family == "retina" else "squash")
    augment = _augment(c, family) if (train and c.augment.enabled) else None
    indices, seed = None, None
    if c.subset_size and train:
        seed = subset_seed(config)
        indices = subsets.select_subset(source.labels.strata, c.subset_size, seed, c.stratified)
    dataset = Dataset(
        source,
        train=train,
        decode=_Decode(size, resize_mode, augment),
        normalization=c.normalization or DEFAULT_NORMALIZATION,
        on_bad_image=c.on_bad_image,
        indices=indices,
        num_workers=c.num_workers,
        worker_type=c.worker_type,
        prefetch=c.prefetch,
        max_skip_fraction=c.max_skip_fraction,
        name=f"{c.name}/{split}",
    )
    subset = f", training subset of seed {seed}" if seed is not None else ""
    subsets.log_balance(f"{c.name}/{split} ({len(dataset)} examples{subset})", dataset.class_balance)
    return dataset
