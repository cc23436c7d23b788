"""The `Dataset`: index arithmetic for shuffling / resuming / padding, grain decoding of this process's share of
each global batch on the host, one jitted per-example device transform (augment, block shuffle, normalise)."""

import dataclasses
import functools
import logging
import zlib

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from transfusion_jax.data import local, preprocess, readers, resized, subsets, tasks

DATASET_NAMES = (
    "retina_folder",
    "retina_tfds",
    "chexpert_folder",
    "chexpert_tfds",
    "local_chexpert",
    "synthetic_retina",
    "synthetic_source",
    "image_folder",
    "unlabeled_folder",
    "tfds_classification",
    "imagenet_tfds",
    "resized",
)
# Used when config.data.normalization is '' and no checkpoint names one (the trainer takes it from the checkpoint).
DEFAULT_NORMALIZATION = "torchvision"
# Flips that keep each task's label (config.data.augment.flips='auto'): a fundus photo mirrored is a plausible other
# eye, so Retina flips left-right; a chest x-ray mirrored puts the heart on the wrong side, so CheXpert never flips.
TASK_FLIPS = {"retina": "horizontal", "chexpert": "none"}
FLIPS = {"none": (False, False), "horizontal": (True, False), "vertical": (False, True), "both": (True, True)}
# The paper's resolutions (docs/paper.md §1.1, §2): Retina 587 (Inception may use 299), CheXpert 224.
_PAPER_SIZE = {
    "retina": 587,
    "chexpert": 224,
    "synthetic_source": 224,
    "image_folder": 224,
    "unlabeled_folder": 224,
    "tfds_classification": 224,
    "imagenet_tfds": 224,
}


def default_data_config() -> ml_collections.ConfigDict:
    """Fields of `config.data`, with defaults and why (see also the package docstring)."""
    c = ml_collections.ConfigDict()
    c.name = "retina_folder"  # one of DATASET_NAMES
    c.root = ""  # folder readers: Kaggle DR folder / folder holding CheXpert-v1.0-small / a resized copy
    c.data_dir = ""  # TFDS readers: TFDS data_dir ('' = TFDS default, ~/tensorflow_datasets)
    c.tfds_config = "btgraham-300"  # retina_tfds builder config: original / 1M / 250K / btgraham-300
    c.tfds_name = ""  # tfds_classification: the TFDS builder, e.g. 'imagenet2012' (imagenet_tfds sets its own)
    c.image_key = "image"  # tfds_classification: feature holding the encoded image
    c.label_key = "label"  # tfds_classification: ClassLabel feature used as the softmax target
    c.image_size = 0  # 0 = the paper's: 587 Retina, 224 CheXpert (set 299 for Inception if wanted)
    c.resize_mode = ""  # '' = center_crop for Retina (round disc), squash for CheXpert and others
    # 3 = RGB (a grey image replicated); 1 = grey (PIL 'L'), one channel from the decoder to the first layer: a third
    # of the bytes and of the input transform's work. An RGB checkpoint's first layer is folded to one channel when
    # it is loaded (surgery.fit), normalised with preprocess.grey(the checkpoint's preset). CheXpert is grey.
    c.channels = 3
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
    )  # applied only when train=True, on the device, per example (preprocess.Augment)
    # Block-shuffled inputs (Neyshabur et al. 2020), every split: tiles of block_size x block_size pixels permuted;
    # 0 = off. One permutation (from seed) for all images, as the authors' code; per_example=True: each image its own
    # fixed permutation from (seed, example).
    c.block_shuffle = ml_collections.ConfigDict(dict(block_size=0, seed=0, per_example=False))
    c.on_bad_image = "raise"  # 'raise' (stop, naming the path) or 'skip' (count, log, valid=False)
    c.max_skip_fraction = 0.01  # under 'skip': a split with more bad images than this fraction stops the run
    c.num_workers = 2  # grain decoding workers (decode + resize only); 0 = decode in the calling thread
    c.worker_type = "thread"  # 'thread' (Pillow releases the GIL) or 'process' (grain worker processes)
    c.prefetch = 2  # batches decoded ahead
    # Keep each decoded, resized image in host memory after its first read (per dataset, i.e. per run and split):
    # for small splits at small sizes read many times, e.g. the miniature study's 32 px sets (2,300 images, 7 MB),
    # which otherwise decode each image again in every epoch and every evaluation. Off for real data.
    c.cache_decoded = False
    c.synthetic = ml_collections.ConfigDict(dict(num_examples=512, seed=0, native_size=128, num_classes=10))
    return c


# Enough steps for any run: the train stream is endless in practice, and grain needs a length.
_ENDLESS_STEPS = 2**40


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


@dataclasses.dataclass(frozen=True)
class _Stream:
    """This process's share of a batch stream as a random-access sequence: the source of grain's MapDataset.

    Element k is position p = (start_step + k // share) * batch_size + first + k % share of the global stream, and
    maps to (subset row, epoch, position in epoch). Train: row perm(seed, epoch)[p mod n] of epoch
    epoch_start + p // n, so batches run across epoch ends without gaps and step s starts at p = s * batch_size
    with nothing before it decoded. Eval: row p, or -1 (padding) past the end of the split.
    """

    n: int
    batch_size: int
    share: int  # examples of each global batch that this process decodes
    first: int  # where this process's share starts within a global batch
    start_step: int
    num_steps: int
    train: bool
    seed: int
    epoch_start: int

    def __len__(self):
        return self.num_steps * self.share

    def __getitem__(self, k: int) -> tuple[int, int, int]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        step, j = divmod(k, self.share)
        p = (self.start_step + step) * self.batch_size + self.first + j
        if self.train:
            epoch, position = self.epoch_start + p // self.n, p % self.n
            return int(_permutation(self.seed, epoch, self.n)[position]), epoch, position
        return (p if p < self.n else -1), 0, p

    def batch_items(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, epochs, positions) of elements step * share ... (step + 1) * share - 1, as `__getitem__` gives
        them one by one (int64 arrays)."""
        p = (self.start_step + step) * self.batch_size + self.first + np.arange(self.share, dtype=np.int64)
        if not self.train:
            return np.where(p < self.n, p, -1), np.zeros_like(p), p
        epochs, positions = self.epoch_start + p // self.n, p % self.n
        rows = np.empty_like(p)
        for epoch in np.unique(epochs):  # a batch spans at most two epochs
            here = epochs == epoch
            rows[here] = _permutation(self.seed, int(epoch), self.n)[positions[here]]
        return rows, epochs, positions


class _Load:
    """grain map: (row, epoch, position) -> this example's uint8 pixels at image_size and what the device transform
    needs. A bad image gives zeros and its error message (the main process raises or counts it). With `cache` (a
    dict), each example's pixels are kept after their first decode and served from it afterwards: for small splits
    read many times (every epoch, every evaluation), where decoding dominates the host's cost."""

    def __init__(
        self,
        source: readers.Source,
        indices: np.ndarray,
        image_size: int,
        resize_mode: str,
        cache: dict | None = None,
        channels: int = 3,
    ):
        self.source, self.indices, self.image_size, self.resize_mode = source, indices, image_size, resize_mode
        self.cache, self.channels = cache, channels

    def _pixels(self, index: int) -> np.ndarray:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        size = self.image_size
        image = preprocess.resize(self.source.load(index, size), size, self.resize_mode, self.channels)
        pixels = np.asarray(image, np.uint8).reshape(size, size, self.channels)
        if self.cache is not None:
            pixels.flags.writeable = False  # shared by every later read of this example
            self.cache[index] = pixels
        return pixels

    def batch(self, rows: np.ndarray, epochs: np.ndarray, positions: np.ndarray) -> dict:
        """The stacked elements of (row, epoch, position) triples: what grain's `.batch` makes of `__call__`'s
        dicts (the same keys, dtypes and values), without a dict per element."""
        size, count = self.image_size, len(rows)
        images, errors = np.zeros((count, size, size, self.channels), np.uint8), [""] * count
        valid = rows >= 0
        examples = np.zeros(count, np.int64)
        examples[valid] = self.indices[rows[valid]]
        for j in np.flatnonzero(valid):
            try:
                images[j] = self._pixels(int(examples[j]))
            except readers.BadImageError as e:
                errors[j] = str(e)
        return {
            "image": images,
            "row": rows.astype(np.int64),
            "example": examples.astype(np.int32),
            "epoch_position": np.stack([epochs, positions], axis=1).astype(np.uint32),
            "error": np.array(errors),
        }

    def __call__(self, item: tuple[int, int, int]) -> dict:
        row, epoch, position = item
        size = self.image_size
        pixels, error = np.zeros((size, size, self.channels), np.uint8), ""
        index = int(self.indices[row]) if row >= 0 else 0
        if row >= 0:
            try:
                pixels = self._pixels(index)
            except readers.BadImageError as e:
                error = str(e)
        return {
            "image": pixels,
            "row": np.int64(row),
            "example": np.int32(index),
            "epoch_position": np.array([epoch, position], np.uint32),
            "error": error,
        }


def _allow_grain_worker_processes():
    """grain 0.2.18's worker processes read absl flags (--grain_*) and raise UnparsedFlagAccessError unless the
    program parsed them, i.e. whenever the caller is not an absl app (a notebook, pytest, a library user). Marking
    the flags parsed leaves every flag at its default, as an absl app without --grain_* arguments would."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


@dataclasses.dataclass(frozen=True)
class _DeviceTransform:
    """uint8 pixels -> model input, per example on the device: augmentation (train), block shuffle, normalisation.
    Block shuffle comes after augmentation, as in the authors' code, so tiles keep sharp edges."""

    normalization: preprocess.Normalization
    augment: preprocess.Augment | None
    block_shuffle: preprocess.BlockShuffle | None

    def example(self, seed: int, pixels, example, epoch_position):
        x = pixels.astype(jnp.float32)
        if self.augment is not None:
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), epoch_position[0]), epoch_position[1])
            x = preprocess.augment(x, key, self.augment)
        if self.block_shuffle is not None:
            x = preprocess.block_shuffle(x, self.block_shuffle.key(example), self.block_shuffle.block_size)
        return self.normalization(x, xp=jnp)


@functools.lru_cache(maxsize=16)
def _compiled_transform(transform: _DeviceTransform, mesh: jax.sharding.Mesh):
    """jit(seed, pixels, example, epoch_position) of the per-example transform over a batch sharded on 'data': each
    device transforms its own rows (shard_map: no communication). The seed is an argument, not a constant, so runs
    of different seeds (a study's stacked runs) share one compiled program."""

    def local(seed, pixels, example, epoch_position):
        return jax.vmap(functools.partial(transform.example, seed))(pixels, example, epoch_position)

    specs = (P(), P("data"), P("data"), P("data"))
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P("data")))


def _seed_argument(seed: int) -> np.uint32:
    """`seed` as the transform's argument: jax.random.key(uint32(seed mod 2**32)) is jax.random.key(seed) for every
    seed jax takes as a 32-bit integer."""
    if not -(2**31) <= seed < 2**32:
        raise ValueError(f"The data order seed must fit 32 bits (-2**31 <= seed < 2**32), got {seed}.")
    return np.uint32(seed % 2**32)


class Dataset:
    """A split ready for training or evaluation. See the package docstring for the batch contract."""

    def __init__(
        self,
        source: readers.Source,
        *,
        train: bool,
        image_size: int,
        resize_mode: str,
        normalization: str,
        on_bad_image: str,
        augment: preprocess.Augment | None = None,
        block_shuffle: preprocess.BlockShuffle | None = None,
        indices: np.ndarray | None = None,
        num_workers: int = 2,
        worker_type: str = "thread",
        prefetch: int = 2,
        max_skip_fraction: float = 0.01,
        name: str = "",
        cache_decoded: bool = False,
        channels: int = 3,
    ):
        if on_bad_image not in ("skip", "raise"):
            raise ValueError(f"on_bad_image must be 'skip' or 'raise', got {on_bad_image!r}")
        if worker_type not in ("thread", "process"):
            raise ValueError(f"worker_type must be 'thread' or 'process', got {worker_type!r}")
        if num_workers < 0 or prefetch < 0:
            raise ValueError(f"num_workers and prefetch must be >= 0, got {num_workers} and {prefetch}")
        if resize_mode not in ("center_crop", "squash"):
            raise ValueError(f"resize mode must be 'center_crop' or 'squash', got {resize_mode!r}")
        if block_shuffle is not None:
            block_shuffle.check(image_size)
        self.source, self.train = source, train
        self.image_size, self.resize_mode = image_size, resize_mode
        self.task: tasks.TaskInfo = source.task
        self.channels = channels
        self.transform = _DeviceTransform(
            preprocess.get_normalization(normalization, channels), augment if train else None, block_shuffle
        )
        self.on_bad_image, self.max_skip_fraction = on_bad_image, max_skip_fraction
        self.name = name or type(source).__name__
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)
        self.num_workers, self.worker_type, self.prefetch = num_workers, worker_type, max(1, prefetch)
        # One loader for every pass over the split, so that its cache (cache_decoded) outlives each iterator.
        self._load = _Load(source, self.indices, image_size, resize_mode, {} if cache_decoded else None, channels)
        self.bad_images: dict = {}  # path -> error, every image skipped so far
        labels = source.labels
        self.targets, self.masks = labels.targets[self.indices], labels.mask[self.indices]
        self.class_balance = subsets.class_balance(self.targets, self.masks, self.task.label_names)

    def __len__(self):
        return len(self.indices)

    def num_batches(self, global_batch_size: int) -> int:
        """Batches in one eval pass (the last one padded)."""
        return -(-len(self) // global_batch_size)

    def batches(
        self,
        global_batch_size: int,
        *,
        mesh: jax.sharding.Mesh,
        seed: int = 0,
        epoch_start: int = 0,
        start_step: int = 0,
    ) -> "BatchIterator":
        """Iterator of dicts of global jax.Arrays sharded over mesh axis 'data' (see package docstring)."""
        data_devices = mesh.shape["data"]
        if global_batch_size <= 0 or global_batch_size % data_devices or global_batch_size % jax.process_count():
            raise ValueError(
                f"global_batch_size {global_batch_size} must be a positive multiple of the data axis size "
                f"({data_devices}) and of the process count ({jax.process_count()})"
            )
        return BatchIterator(self, global_batch_size, mesh, seed, epoch_start, start_step)

    def _stream(self, batch_size: int, seed: int, epoch_start: int, start_step: int) -> _Stream:
        share = batch_size // jax.process_count()
        num_steps = _ENDLESS_STEPS if self.train else max(self.num_batches(batch_size) - start_step, 0)
        return _Stream(
            n=len(self),
            batch_size=batch_size,
            share=share,
            first=jax.process_index() * share,
            start_step=start_step,
            num_steps=num_steps,
            train=self.train,
            seed=seed,
            epoch_start=epoch_start,
        )

    def _host_batches(self, stream: _Stream):
        """This process's rows decoded in stream order, `share` per batch: by grain's worker threads or processes, or
        with no workers in the calling thread, batch by batch. grain's synchronous path gives the same arrays
        (tests/data/test_data_pipeline.py) through a dict and bookkeeping per element: for the miniature study's
        batches of 32 px images from the decoded cache, one per run and step, 1.1 ms of host time per batch
        against 0.07 ms here (`benchmarks/bench_host_batches.py`)."""
        if not self.num_workers:
            return (self._load.batch(*stream.batch_items(step)) for step in range(stream.num_steps))
        return self._grain_batches(stream)

    def _grain_batches(self, stream: _Stream, threads: int | None = None):
        """grain's batches of `stream` (`threads`: override num_workers, for the tests' comparison)."""
        dataset = grain.MapDataset.source(stream).map(self._load)
        ahead = self.prefetch * stream.share
        if self.worker_type == "process" and self.num_workers and threads is None:
            _allow_grain_worker_processes()
            workers = grain.MultiprocessingOptions(
                self.num_workers, per_worker_buffer_size=-(-ahead // self.num_workers)
            )
            iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
            iterable = iterable.mp_prefetch(workers)
        else:
            threads = self.num_workers if threads is None else threads
            iterable = dataset.to_iter_dataset(
                grain.ReadOptions(num_threads=threads, prefetch_buffer_size=ahead if threads else 0)
            )
        return iter(iterable.batch(stream.share))

    def _assemble(self, local: dict, global_batch_size: int, mesh, seed: int) -> dict:
        """This process's decoded share -> the global batch: labels and masks looked up by row, bad images raised or
        counted, arrays made global, the device transform applied."""
        rows = local["row"]
        valid = rows >= 0
        for j in np.flatnonzero(local["error"] != ""):
            self._bad_image(int(self.indices[rows[j]]), str(local["error"][j]))
            valid[j] = False
        rows = np.maximum(rows, 0)
        label = self.targets[rows]
        label = np.where(valid, label, 0) if label.ndim == 1 else label * valid[:, None]
        host = {
            "image": local["image"],
            "example": local["example"],
            "epoch_position": local["epoch_position"],
            "label": label,
            "label_mask": (self.masks[rows] * valid[:, None]).astype(np.float32),
            "valid": valid,
        }
        sharding = NamedSharding(mesh, P("data"))
        batch = {
            k: jax.make_array_from_process_local_data(sharding, v, (global_batch_size,) + v.shape[1:])
            for k, v in host.items()
        }
        transform = _compiled_transform(self.transform, mesh)
        batch["image"] = transform(
            _seed_argument(seed), batch["image"], batch.pop("example"), batch.pop("epoch_position")
        )
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
        """Each example's identity (path or record key; a resized copy's original id), in the order of `indices`
        (eval order)."""
        return [self.source.example_id(int(i)) for i in self.indices]

    def check(self) -> None:
        """Checks the split as training will read it, before step 1: every image file exists (missing ones raise
        under on_bad_image='raise', count as skipped under 'skip', within max_skip_fraction), and the first
        readable example decodes and resizes through the host path grain's workers run (`_Load`); the device
        transform after it reads no files."""
        missing = set(self.source.missing_files(self.indices))
        if missing and self.on_bad_image == "raise":
            raise readers.BadImageError(
                f"{self.name}: {len(missing)} of {len(self)} image files are missing, e.g. {sorted(missing)[:3]}. "
                f"Set config.data.on_bad_image='skip' to skip them (at most config.data.max_skip_fraction)."
            )
        for path in sorted(missing):
            self.bad_images[path] = f"{path}: file not found"
        self._check_skip_rate()
        # reads the file, never a cache
        load = _Load(self.source, self.indices, self.image_size, self.resize_mode, channels=self.channels)
        for row, index in enumerate(self.indices):
            if self.source.describe(int(index)) in missing:
                continue
            error = load((row, 0, 0))["error"]
            if not error:
                return
            self._bad_image(int(index), error)  # raises under 'raise' or once too many fail


class BatchIterator:
    """The global batches of `Dataset.batches`, decoded by grain. Checkpointable: `get_state()` is a small dict
    (the next step and the stream's identity) and `set_state(state)` continues from it, exactly as
    `batches(..., start_step=state['step'])` would. The state is ours, not grain's iterator state, because grain's
    records per-worker positions and breaks when num_workers changes between runs; ours depends only on the step.
    `close()` (or garbage collection) stops grain's workers."""

    def __init__(self, dataset: Dataset, global_batch_size: int, mesh, seed: int, epoch_start: int, start_step: int):
        self._dataset, self._mesh = dataset, mesh
        self._batch_size, self._seed, self._epoch_start = global_batch_size, seed, epoch_start
        self._host = None
        self._open(start_step)

    def _open(self, step: int):
        self.close()
        self._step = step
        self._host = self._dataset._host_batches(
            self._dataset._stream(self._batch_size, self._seed, self._epoch_start, step)
        )

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        local = next(self._host)  # StopIteration ends an eval pass
        batch = self._dataset._assemble(local, self._batch_size, self._mesh, self._seed)
        self._step += 1
        return batch

    def get_state(self) -> dict:
        return {
            "step": self._step,
            "seed": self._seed,
            "epoch_start": self._epoch_start,
            "global_batch_size": self._batch_size,
        }

    def set_state(self, state: dict):
        mine = self.get_state()
        different = {
            k: (state.get(k), mine[k]) for k in ("seed", "epoch_start", "global_batch_size") if state.get(k) != mine[k]
        }
        if different:
            raise ValueError(f"iterator state is from another stream: (saved, this) = {different}")
        self._open(int(state["step"]))

    def close(self):
        if self._host is not None and hasattr(self._host, "close"):
            self._host.close()
        self._host = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        self.close()


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
    if name == "local_chexpert":  # generated on first use (local.py): what ',local' CheXpert configs read
        return readers.ChexpertFolderSource(local.chexpert_root(), split, c.uncertainty_policy, c.frontal_only)
    if name == "image_folder":
        return readers.ImageFolderSource(c.root, split)
    if name == "unlabeled_folder":
        return readers.UnlabeledFolderSource(c.root, split)
    if name == "tfds_classification":
        return readers.TfdsClassificationSource(c.tfds_name, split, c.data_dir, c.image_key, c.label_key)
    if name in readers.TFDS_CLASSIFICATION_PRESETS:
        tfds_name, image_key, label_key, how_to_prepare = readers.TFDS_CLASSIFICATION_PRESETS[name]
        return readers.TfdsClassificationSource(tfds_name, split, c.data_dir, image_key, label_key, how_to_prepare)
    if name == "resized":
        return resized.ResizedSource(c.root, split, c)
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
    """'retina', 'chexpert' or the reader's name: what task defaults (size, resize, flips) are keyed by. A resized
    copy has the family of the dataset it was written from (its metadata.json)."""
    if c.name == "resized":
        return resized.read_metadata(c.root)["family"]
    return "retina" if "retina" in c.name else "chexpert" if "chexpert" in c.name else c.name


def image_size(config) -> int:
    """The square input size a run uses: config.data.image_size or, when 0, the paper's for the dataset (a resized
    copy's stored size)."""
    c = _data_config(config)
    size = c.image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(
            f"config.data.image_size must be a whole number of pixels >= 0 (0 = the paper's), got {size!r}"
        )
    if size:
        return size
    return resized.read_metadata(c.root)["image_size"] if c.name == "resized" else _PAPER_SIZE[dataset_family(c)]


def _augment(c, family: str) -> preprocess.Augment:
    """config.data.augment as preprocess.Augment, its `flips` choice ('auto': the task's) spelled as hflip / vflip."""
    flips = TASK_FLIPS.get(family, "horizontal") if c.augment.flips == "auto" else c.augment.flips
    if flips not in FLIPS:
        raise ValueError(f"config.data.augment.flips must be 'auto' or one of {sorted(FLIPS)}, got {flips!r}")
    hflip, vflip = FLIPS[flips]
    fields = {k: v for k, v in c.augment.items() if k not in ("enabled", "flips")}
    return preprocess.Augment(hflip=hflip, vflip=vflip, **fields)


def subset_seed(config) -> int:
    """config.data.subset_seed, or the run's seed when it is -1 (each seed draws its own small-data subset)."""
    c = _data_config(config)
    if c.subset_seed >= 0:
        return c.subset_seed
    if "seed" not in config:
        raise ValueError("config.data.subset_seed=-1 follows config.seed: pass the experiment config, or fix the seed")
    return config.seed


# Which readers read each reader-specific field of config.data (nested fields by their group); a field set away from
# its default for a reader that does not read it is refused before any work (`unused_fields`).
_RETINA_READERS = ("retina_folder", "retina_tfds", "synthetic_retina", "resized")
_CHEXPERT_READERS = ("chexpert_folder", "chexpert_tfds", "local_chexpert", "resized")
_READ_BY = {
    "root": ("retina_folder", "chexpert_folder", "image_folder", "resized", "unlabeled_folder"),
    "data_dir": ("retina_tfds", "chexpert_tfds", "tfds_classification", *readers.TFDS_CLASSIFICATION_PRESETS),
    "tfds_config": ("retina_tfds",),
    "tfds_name": ("tfds_classification",),
    "image_key": ("tfds_classification",),
    "label_key": ("tfds_classification",),
    "retina_target": _RETINA_READERS,
    "retina_threshold": _RETINA_READERS,
    "uncertainty_policy": _CHEXPERT_READERS,
    "frontal_only": _CHEXPERT_READERS,
    "synthetic": ("synthetic_retina", "synthetic_source"),
}


def _changed(c, default, field: str) -> bool:
    return c.get(field) != default.get(field)


def unused_fields(c) -> list[str]:
    """What in `c` (config.data) is set away from its default but would not be read by this run, each as a
    sentence naming the field and why: a setting silently ignored would be recorded in config.json as if used."""
    default, out = default_data_config(), []
    for field, names in _READ_BY.items():
        if _changed(c, default, field) and c.name not in names:
            out.append(f"config.data.{field} is not read by config.data.name={c.name!r} (read by: {', '.join(names)})")
    switched_off = (  # (group, its defaults, its name, fields read only when `on`, on, what turns them on)
        (c, default, "", ("subset_seed", "stratified"), c.subset_size, "subset_size > 0"),
        (c.block_shuffle, default.block_shuffle, "block_shuffle.", ("seed", "per_example"), c.block_shuffle.block_size,
         "block_shuffle.block_size > 0"),
        (c.augment, default.augment, "augment.", [f for f in c.augment if f != "enabled"], c.augment.enabled,
         "augment.enabled=True"),
        (c, default, "", ("max_skip_fraction",), c.on_bad_image == "skip", "on_bad_image='skip'"),
    )  # fmt: skip
    for group, defaults, prefix, fields, on, when in switched_off:
        if not on:
            out += [f"config.data.{prefix}{f} is only read with {when}" for f in fields if _changed(group, defaults, f)]
    return out


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
    block_shuffle = preprocess.BlockShuffle(**c.block_shuffle) if c.block_shuffle.block_size else None
    indices, seed = None, None
    if c.subset_size and train:
        seed = subset_seed(config)
        indices = subsets.select_subset(source.labels.strata, c.subset_size, seed, c.stratified)
    dataset = Dataset(
        source,
        train=train,
        image_size=size,
        resize_mode=resize_mode,
        normalization=c.normalization or DEFAULT_NORMALIZATION,
        on_bad_image=c.on_bad_image,
        augment=augment,
        block_shuffle=block_shuffle,
        indices=indices,
        num_workers=c.num_workers,
        worker_type=c.worker_type,
        prefetch=c.prefetch,
        max_skip_fraction=c.max_skip_fraction,
        name=f"{c.name}/{split}",
        cache_decoded=c.cache_decoded,
        channels=c.get("channels", 3),  # configs saved before the field existed are RGB
    )
    subset = f", training subset of seed {seed}" if seed is not None else ""
    subsets.log_balance(f"{c.name}/{split} ({len(dataset)} examples{subset})", dataset.class_balance)
    return dataset
