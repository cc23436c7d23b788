"""Batching contract: sharding, exact-once padded eval, seeded epochs, restart by index arithmetic, subsets,
parallel workers, multi-host shares, and every bad-input error."""

import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from data_helpers import make_config
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from transfusion_jax.data import (
    BadImageError,
    DatasetFormatError,
    TooManyBadImagesError,
    build_dataset,
    generate,
    pipeline,
    preprocess,
    readers,
    subsets,
    tasks,
)

MESH = None


def mesh():
    global MESH
    if MESH is None:
        MESH = jax.make_mesh((8,), ("data",))
    return MESH


class IndexSource(readers.Source):
    """Image i is constant with red = i % 256 and green = i // 256, so a batch tells which examples it holds."""

    def __init__(self, n, sigmoid=False, bad=()):
        self.calls, self.bad = 0, set(bad)
        if sigmoid:
            rng = np.random.default_rng(n)
            self.task = tasks.chexpert_task()
            self.labels = readers.sigmoid_labels(
                rng.integers(0, 2, (n, 5)).astype(np.float32), rng.integers(0, 2, (n, 5)).astype(np.float32)
            )
        else:
            self.task = tasks.retina_task("five_class", 2)
            self.labels = readers.softmax_labels(np.arange(n) % 5)

    def load(self, index, target_size):
        self.calls += 1
        if index in self.bad:
            raise BadImageError(f"{self.describe(index)}: cannot read image (test)")
        return Image.new("RGB", (8, 8), (index % 256, index // 256, 0))

    def describe(self, index):
        return f"index/{index}.jpeg"


def index_dataset(
    n,
    *,
    train,
    augment=None,
    sigmoid=False,
    bad=(),
    on_bad_image="raise",
    indices=None,
    prefetch=2,
    max_skip=0.5,
    **kwargs,
):
    return pipeline.Dataset(
        IndexSource(n, sigmoid, bad),
        train=train,
        image_size=8,
        resize_mode="squash",
        normalization="none",
        on_bad_image=on_bad_image,
        augment=augment,
        indices=indices,
        num_workers=kwargs.pop("num_workers", 0),
        prefetch=prefetch,
        max_skip_fraction=max_skip,
        **kwargs,
    )


def held(batch):
    """Example ids in a batch (from the constant image), -1 for rows with valid=False."""
    image = np.rint(np.asarray(batch["image"])[:, 0, 0] * 255).astype(int)
    ids = image[:, 0] + 256 * image[:, 1]
    return np.where(np.asarray(batch["valid"]), ids, -1)


def test_eval_covers_each_example_once_and_pads_last_batch():
    ds = index_dataset(13, train=False)
    batches = list(ds.batches(8, mesh=mesh()))
    assert len(batches) == ds.num_batches(8) == 2
    np.testing.assert_array_equal(np.concatenate([held(b) for b in batches]), list(range(13)) + [-1] * 3)
    last = batches[1]
    np.testing.assert_array_equal(np.asarray(last["valid"]), [True] * 5 + [False] * 3)
    np.testing.assert_array_equal(np.asarray(last["label"]), [8 % 5, 9 % 5, 10 % 5, 11 % 5, 12 % 5, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(last["label_mask"])[:, 0], [1] * 5 + [0] * 3)
    for key, (shape, dtype) in {
        "image": ((8, 8, 8, 3), np.float32),
        "label": ((8,), np.int32),
        "label_mask": ((8, 1), np.float32),
        "valid": ((8,), np.bool_),
    }.items():
        array = last[key]
        assert (array.shape, array.dtype) == (shape, dtype), key
        assert array.sharding.is_equivalent_to(NamedSharding(mesh(), P("data")), array.ndim), key
        assert [s.data.shape[0] for s in array.addressable_shards] == [1] * 8


def test_eval_sigmoid_labels_and_masks():
    ds = index_dataset(5, train=False, sigmoid=True)
    batch = next(ds.batches(8, mesh=mesh()))
    assert batch["label"].dtype == np.float32 and batch["label"].shape == (8, 5)
    np.testing.assert_array_equal(np.asarray(batch["label"])[:5], ds.source.labels.targets)
    np.testing.assert_array_equal(np.asarray(batch["label_mask"])[:5], ds.source.labels.mask)
    assert not np.asarray(batch["label_mask"])[5:].any() and not np.asarray(batch["label"])[5:].any()


def _take(iterator, k):
    return [next(iterator) for _ in range(k)]


def test_train_epochs_are_seeded_permutations():
    ds = index_dataset(12, train=True)
    ids = np.concatenate([held(b) for b in _take(ds.batches(8, mesh=mesh(), seed=3), 3)])
    first, second = ids[:12], ids[12:]
    assert sorted(first) == sorted(second) == list(range(12))  # each epoch holds every example once
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, np.random.default_rng([3, 0]).permutation(12))
    again = np.concatenate([held(b) for b in _take(ds.batches(8, mesh=mesh(), seed=3), 3)])
    other = np.concatenate([held(b) for b in _take(ds.batches(8, mesh=mesh(), seed=4), 3)])
    np.testing.assert_array_equal(ids, again)
    assert not np.array_equal(ids, other)


@pytest.mark.parametrize("cached", [False, True])
def test_batches_without_workers_equal_grains_element_by_element(cached):
    """With no decoding workers the host batches are built a batch at a time; grain's synchronous path (a dict per
    element, `grain.MapDataset.batch`) must give the same arrays, key by key and dtype by dtype: a training stream
    across epoch ends from a resumed step, an evaluation pass with padding rows, and a bad image skipped."""

    def compare(ds, stream, count):
        ours = ds._host_batches(stream)
        theirs = ds._grain_batches(stream, threads=0)
        for _ in range(count):
            want, got = next(theirs), next(ours)
            assert sorted(got) == sorted(want)
            for key in want:
                assert got[key].dtype == want[key].dtype, key
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        assert next(ours, None) is None or ds.train  # an evaluation pass ends where grain's does
        assert next(theirs, None) is None or ds.train

    train = index_dataset(13, train=True, bad=(4,), on_bad_image="skip", cache_decoded=cached)
    compare(train, train._stream(8, seed=3, epoch_start=1, start_step=2), 5)  # 40 rows: 4 epoch ends
    evaluation = index_dataset(13, train=False, bad=(12,), on_bad_image="skip", cache_decoded=cached)
    for start in (0, 1):
        compare(evaluation, evaluation._stream(8, seed=0, epoch_start=0, start_step=start), 2 - start)
    shuffled = index_dataset(13, train=False, indices=np.array([5, 3, 11, 0]), cache_decoded=cached)
    compare(shuffled, shuffled._stream(8, seed=0, epoch_start=0, start_step=0), 1)


def _augment():
    return preprocess.Augment(
        hflip=True,
        vflip=False,
        rotate_deg=20.0,
        translate=0.1,
        scale_min=0.9,
        scale_max=1.1,
        brightness=0.3,
        contrast=0.3,
    )


def test_restart_at_step_reproduces_the_stream_without_decoding_skipped_images():
    full = index_dataset(16, train=True, augment=_augment(), prefetch=1)
    reference = _take(full.batches(8, mesh=mesh(), seed=5), 6)
    resumed = index_dataset(16, train=True, augment=_augment(), prefetch=1)
    tail = _take(resumed.batches(8, mesh=mesh(), seed=5, start_step=3), 3)
    assert resumed.source.calls == 3 * 8  # the 24 skipped positions were never decoded
    for want, got in zip(reference[3:], tail):
        for key in want:
            np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)
    # epoch_start=1 begins where epoch 1 begins in the stream (16 examples = 2 steps per epoch)
    later = _take(index_dataset(16, train=True, augment=_augment()).batches(8, mesh=mesh(), seed=5, epoch_start=1), 2)
    for want, got in zip(reference[2:4], later):
        np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(want["image"]))


class TextureSource(IndexSource):
    """Image i is uniform noise drawn from seed i, so flips and warps show."""

    def load(self, index, target_size):
        self.calls += 1
        return Image.fromarray(texture(index))


def texture(index):
    return np.random.default_rng(index).integers(0, 256, (8, 8, 3)).astype(np.uint8)


def texture_dataset(n, *, train, augment=None, block_shuffle=None, **kwargs):
    return pipeline.Dataset(
        TextureSource(n),
        train=train,
        image_size=8,
        resize_mode="squash",
        normalization="none",
        on_bad_image="raise",
        augment=augment,
        block_shuffle=block_shuffle,
        num_workers=kwargs.pop("num_workers", 0),
        **kwargs,
    )


def test_each_example_is_augmented_with_the_key_of_its_seed_epoch_and_position():
    """Batch 2 of 10 examples in batches of 8 spans epochs 1 and 2; every row must equal `preprocess.augment` of
    that example with key fold_in(fold_in(key(seed), epoch), position in epoch), then its block shuffle."""
    shuffle = preprocess.BlockShuffle(block_size=4, seed=9)
    ds = texture_dataset(10, train=True, augment=_augment(), block_shuffle=shuffle)
    image = np.asarray(_take(ds.batches(8, mesh=mesh(), seed=4), 3)[2]["image"])
    stream = ds._stream(8, seed=4, epoch_start=0, start_step=2)
    epochs = set()
    for j in range(8):
        row, epoch, position = stream[j]
        epochs.add(epoch)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(4), epoch), position)
        augmented = preprocess.augment(jnp.asarray(texture(row), jnp.float32), key, _augment())
        assert not np.allclose(np.asarray(augmented), texture(row), atol=10)  # it did transform the image
        want = preprocess.block_shuffle(augmented, shuffle.key(row), 4) / 255
        np.testing.assert_allclose(image[j], np.asarray(want), atol=1e-6)
    assert epochs == {1, 2}


def test_every_seed_shares_one_compiled_transform_and_keeps_its_own_key():
    """The seed is an argument of the compiled transform (stacked runs of different seeds compile it once); each
    seed, one above 2**31 included, still augments with jax.random.key(seed); a seed jax cannot key is refused."""
    ds = texture_dataset(8, train=True, augment=_augment())
    for seed in (4, 2**31 + 3):
        image = np.asarray(next(iter(ds.batches(8, mesh=mesh(), seed=seed)))["image"])
        row, epoch, position = ds._stream(8, seed=seed, epoch_start=0, start_step=0)[0]
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), epoch), position)
        want = preprocess.augment(jnp.asarray(texture(row), jnp.float32), key, _augment()) / 255
        np.testing.assert_allclose(image[0], np.asarray(want), atol=1e-6)
    assert pipeline._compiled_transform(ds.transform, mesh())._cache_size() == 1
    with pytest.raises(ValueError, match="must fit 32 bits"):
        next(iter(ds.batches(8, mesh=mesh(), seed=2**32)))


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_batches_do_not_depend_on_devices_or_workers(worker_type):
    """Augmented batches are the same on 8 devices decoded inline and on 1 device decoded by 2 grain workers."""
    one_device = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    inline = _take(texture_dataset(12, train=True, augment=_augment()).batches(8, mesh=mesh(), seed=2), 3)
    ds = texture_dataset(12, train=True, augment=_augment(), num_workers=2, worker_type=worker_type)
    with ds.batches(8, mesh=one_device, seed=2) as batches:
        workers = _take(batches, 3)
    for want, got in zip(inline, workers):
        for key in want:
            np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), atol=1e-6, err_msg=key)


@pytest.mark.parametrize("train", [True, False])
def test_cached_decoding_gives_the_same_batches_and_decodes_each_image_once(train):
    """cache_decoded: two epochs / two evaluation passes equal the uncached ones, and each image is decoded once."""
    n, steps = 12, 3  # 3 batches of 8 = two training epochs; an evaluation pass is 2 batches

    def passes(ds):
        if train:
            return [_take(ds.batches(8, mesh=mesh(), seed=1), steps)]
        return [list(ds.batches(8, mesh=mesh())) for _ in range(2)]

    plain = texture_dataset(n, train=train, augment=_augment() if train else None)
    cached = texture_dataset(n, train=train, augment=_augment() if train else None, cache_decoded=True)
    for want, got in zip(passes(plain), passes(cached)):
        for a, b in zip(want, got):
            for key in a:
                np.testing.assert_array_equal(np.asarray(b[key]), np.asarray(a[key]), err_msg=key)
    assert plain.source.calls == (steps * 8 if train else 2 * n)
    assert cached.source.calls == n


def test_iterator_state_resumes_the_stream():
    reference = _take(texture_dataset(12, train=True, augment=_augment()).batches(8, mesh=mesh(), seed=5), 5)
    batches = texture_dataset(12, train=True, augment=_augment()).batches(8, mesh=mesh(), seed=5)
    _take(batches, 3)
    state = json.loads(json.dumps(batches.get_state()))  # a plain, JSON-able dict
    assert state == {"step": 3, "seed": 5, "epoch_start": 0, "global_batch_size": 8}
    fresh = texture_dataset(12, train=True, augment=_augment())
    restored = fresh.batches(8, mesh=mesh(), seed=5)
    restored.set_state(state)
    for want, got in zip(reference[3:], _take(restored, 2)):
        np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(want["image"]))
    assert fresh.source.calls == 2 * 8  # only the two batches taken after the restored step were decoded
    with pytest.raises(ValueError, match="another stream.*'seed': \\(5, 6\\)"):
        fresh.batches(8, mesh=mesh(), seed=6).set_state(state)


def test_block_shuffle_is_one_fixed_permutation_per_example_in_every_split():
    shuffle = preprocess.BlockShuffle(block_size=2, seed=1, per_example=True)
    plain = np.asarray(next(texture_dataset(8, train=False).batches(8, mesh=mesh()))["image"])
    eval_batch = next(texture_dataset(8, train=False, block_shuffle=shuffle).batches(8, mesh=mesh()))
    shuffled_eval = np.asarray(eval_batch["image"])
    for i in range(8):
        np.testing.assert_array_equal(
            shuffled_eval[i], np.asarray(preprocess.block_shuffle(plain[i], shuffle.key(i), 2))
        )
    assert not np.array_equal(shuffled_eval, plain)
    train = texture_dataset(8, train=True, block_shuffle=shuffle)
    rows = [train._stream(8, seed=3, epoch_start=0, start_step=0)[j][0] for j in range(8)]
    shuffled_train = next(train.batches(8, mesh=mesh(), seed=3))["image"]
    np.testing.assert_array_equal(np.asarray(shuffled_train), shuffled_eval[rows])  # same per example


def test_block_shuffle_size_is_checked_when_the_dataset_is_built():
    c = make_config("synthetic_retina", image_size=18, **{"block_shuffle.block_size": 4})
    with pytest.raises(ValueError, match="block_size 4 does not tile image_size 18.*16 or 20"):
        build_dataset(c, "train", train=False)
    c.image_size = 16
    assert build_dataset(c, "train", train=False).transform.block_shuffle == preprocess.BlockShuffle(4)


def test_process_shares_partition_each_global_batch(monkeypatch):
    ds = index_dataset(13, train=False)
    shares = []
    for p in range(2):
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda p=p: p)
        stream = ds._stream(8, seed=0, epoch_start=0, start_step=0)
        assert len(stream) == 2 * 4
        shares.append(np.reshape([stream[k][0] for k in range(len(stream))], (2, 4)))
    np.testing.assert_array_equal(shares[0], [[0, 1, 2, 3], [8, 9, 10, 11]])
    np.testing.assert_array_equal(shares[1], [[4, 5, 6, 7], [12, -1, -1, -1]])


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_parallel_workers_match_inline_decoding(worker_type):
    c = make_config("synthetic_retina", **{"synthetic.num_examples": 16, "synthetic.native_size": 24, "image_size": 16})
    inline = _take(build_dataset(c, "train", train=True).batches(8, mesh=mesh(), seed=1), 3)
    c.num_workers, c.worker_type = 2, worker_type
    parallel = _take(build_dataset(c, "train", train=True).batches(8, mesh=mesh(), seed=1), 3)
    for want, got in zip(inline, parallel):
        np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(want["image"]))


# ---------------------------------------------------------------------------------------------------- subsets


def test_allocate_largest_remainder_by_hand():
    np.testing.assert_array_equal(subsets.allocate(np.array([5, 3, 2]), 5), [3, 1, 1])  # 2.5, 1.5, 1.0
    np.testing.assert_array_equal(subsets.allocate(np.array([70, 30]), 10), [7, 3])
    np.testing.assert_array_equal(subsets.allocate(np.array([1, 1, 1]), 2), [1, 1, 0])


def test_subsets_are_seeded_and_stratified():
    strata = np.array([0] * 70 + [1] * 30)
    a = subsets.select_subset(strata, 10, seed=1, stratified=True)
    np.testing.assert_array_equal(a, subsets.select_subset(strata, 10, seed=1, stratified=True))
    assert not np.array_equal(a, subsets.select_subset(strata, 10, seed=2, stratified=True))
    assert len(set(a)) == 10 and np.bincount(strata[a]).tolist() == [7, 3]
    plain = subsets.select_subset(strata, 10, seed=1, stratified=False)
    assert len(set(plain)) == 10 and np.all(np.diff(plain) > 0)
    with pytest.raises(ValueError, match=r"subset_size must be in 1\.\.100"):
        subsets.select_subset(strata, 101, seed=0, stratified=True)


def test_subset_is_for_training_only_and_logs_its_balance(caplog):
    c = make_config("synthetic_retina", subset_size=20, subset_seed=7, **{"synthetic.num_examples": 60})
    with caplog.at_level(logging.INFO):
        ds = build_dataset(c, "train", train=True)
    full = build_dataset(make_config("synthetic_retina", **{"synthetic.num_examples": 60}), "train", train=False)
    assert len(ds) == 20
    positives = int(full.targets.sum())
    assert int(ds.targets.sum()) in (positives * 20 // 60, -(-positives * 20 // 60))  # proportion kept
    assert ds.class_balance == {"grade < 2": int((ds.targets == 0).sum()), "grade >= 2": int(ds.targets.sum())}
    assert "class balance" in caplog.text and "training subset of seed 7" in caplog.text
    np.testing.assert_array_equal(build_dataset(c, "train", train=True).indices, ds.indices)
    experiment = ml_collections.ConfigDict({"data": c, "seed": 0})  # the experiment config, fields under config.data
    np.testing.assert_array_equal(build_dataset(experiment, "train", train=True).indices, ds.indices)
    # Evaluation always scores the whole split, whatever the training subset.
    assert len(build_dataset(c, "train", train=False)) == len(build_dataset(c, "test", train=False)) == 60


def test_each_seed_draws_its_own_subset_unless_subset_seed_is_fixed():
    data = make_config("synthetic_retina", subset_size=20, **{"synthetic.num_examples": 60})
    assert data.subset_seed == -1  # the default follows the run's seed

    def subset(seed, subset_seed=-1):
        experiment = ml_collections.ConfigDict({"data": data.copy_and_resolve_references(), "seed": seed})
        experiment.data.subset_seed = subset_seed
        return build_dataset(experiment, "train", train=True).indices

    strata = build_dataset(data, "train", train=False).source.labels.strata
    np.testing.assert_array_equal(subset(1), subsets.select_subset(strata, 20, seed=1, stratified=True))
    assert not np.array_equal(subset(1), subset(2))
    np.testing.assert_array_equal(subset(1, subset_seed=5), subset(2, subset_seed=5))
    with pytest.raises(ValueError, match="subset_seed=-1 follows config.seed"):
        build_dataset(data, "train", train=True)


# ------------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def small_kaggle(tmp_path):
    generate.write_kaggle_dr(str(tmp_path), 6, seed=3, size=24)
    return str(tmp_path)


def _write_csv(path, text):
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_bad_image_raises_or_is_skipped_and_counted(small_kaggle, damage):
    path = os.path.join(small_kaggle, "train", "11_left.jpeg")  # the third row
    if damage == "corrupt":
        _write_csv(path, "not a jpeg")
    else:
        os.remove(path)
    c = make_config("retina_folder", root=small_kaggle)
    with pytest.raises(BadImageError, match=f"{path}: cannot read image.*on_bad_image='skip'"):
        list(build_dataset(c, "train", train=False).batches(8, mesh=mesh()))
    c.on_bad_image = "skip"  # 1 bad image of 6 is over the default limit (1 %) ...
    with pytest.raises(TooManyBadImagesError, match=r"retina_folder/train: 1 of 6 images .*max_skip_fraction=0.01"):
        list(build_dataset(c, "train", train=False).batches(8, mesh=mesh()))
    c.max_skip_fraction = 0.2  # ... and within a limit of 20 %
    ds = build_dataset(c, "train", train=False)
    (batch,) = list(ds.batches(8, mesh=mesh()))
    np.testing.assert_array_equal(np.asarray(batch["valid"]), [1, 1, 0, 1, 1, 1, 0, 0])
    assert np.asarray(batch["label_mask"])[2, 0] == 0
    assert list(ds.bad_images) == [path]


def test_bad_image_in_index_source_is_skipped_in_training():
    ds = index_dataset(8, train=True, bad={3}, on_bad_image="skip")
    batch = next(ds.batches(8, mesh=mesh(), seed=0))
    assert sorted(held(batch)) == [-1, 0, 1, 2, 4, 5, 6, 7]
    assert list(ds.bad_images) == ["index/3.jpeg"]


def test_check_before_step_one_finds_missing_and_unreadable_images(small_kaggle):
    c = make_config("retina_folder", root=small_kaggle)
    build_dataset(c, "train", train=True).check()  # a sound split passes (decoding and resizing one image)
    os.remove(os.path.join(small_kaggle, "train", "12_right.jpeg"))
    ds = build_dataset(c, "train", train=False)
    with pytest.raises(BadImageError, match=r"retina_folder/train: 1 of 6 image files are missing, e.g. \[.*12_right"):
        ds.check()
    c.on_bad_image, c.max_skip_fraction = "skip", 0.2
    ds = build_dataset(c, "train", train=False)
    ds.check()  # within the limit: counted as skipped, nothing raised
    assert list(ds.bad_images) == [os.path.join(small_kaggle, "train", "12_right.jpeg")]
    for name in os.listdir(os.path.join(small_kaggle, "train")):  # every image gone: a run with nothing to learn
        os.remove(os.path.join(small_kaggle, "train", name))
    with pytest.raises(TooManyBadImagesError, match="6 of 6 images are missing or unreadable"):
        build_dataset(c, "train", train=True).check()


def test_check_decodes_the_first_image(small_kaggle):
    _write_csv(os.path.join(small_kaggle, "train", "10_left.jpeg"), "not a jpeg")  # the first row
    ds = build_dataset(make_config("retina_folder", root=small_kaggle), "train", train=False)
    with pytest.raises(BadImageError, match="10_left.jpeg: cannot read image"):
        ds.check()


def test_skip_rate_limit_applies_to_training_streams():
    ds = index_dataset(8, train=True, bad={3, 5}, on_bad_image="skip", max_skip=0.2)
    with pytest.raises(TooManyBadImagesError, match="2 of 8 images"):
        next(ds.batches(8, mesh=mesh(), seed=0))


def test_image_size_is_validated():
    for bad in (-5, 2.5, "224"):
        c = make_config("synthetic_retina")
        with c.ignore_type():  # as a command-line override may set it
            c.image_size = bad
        with pytest.raises(ValueError, match=r"config.data.image_size must be a whole number of pixels >= 0"):
            build_dataset(c, "train", train=False)
    assert pipeline.image_size(make_config("chexpert_folder", image_size=0)) == 224


def test_flips_follow_the_task(chexpert_root):
    def flips(name, **fields):
        ds = build_dataset(make_config(name, **fields), "train", train=True)
        return ds.transform.augment.hflip, ds.transform.augment.vflip

    assert make_config("chexpert_folder").augment.flips == "auto"
    assert flips("chexpert_folder", root=chexpert_root) == (False, False)  # a mirrored chest has its heart on the right
    assert flips("synthetic_retina", **{"synthetic.num_examples": 4}) == (True, False)  # a mirrored eye is an eye
    assert flips("synthetic_retina", **{"synthetic.num_examples": 4, "augment.flips": "both"}) == (True, True)
    with pytest.raises(ValueError, match="augment.flips must be 'auto' or one of"):
        flips("synthetic_retina", **{"synthetic.num_examples": 4, "augment.flips": "diagonal"})


def test_example_ids_name_each_example_in_eval_order(small_kaggle):
    ds = build_dataset(make_config("retina_folder", root=small_kaggle), "train", train=False)
    assert ds.example_ids() == ds.source.paths and len(set(ds.example_ids())) == 6
    sub = build_dataset(
        make_config("retina_folder", root=small_kaggle, subset_size=3, subset_seed=0), "train", train=True
    )
    assert sub.example_ids() == [ds.source.paths[i] for i in sub.indices]


def test_csv_errors_name_the_file_and_the_problem(small_kaggle, chexpert_root, tmp_path):
    labels = os.path.join(small_kaggle, "trainLabels.csv")
    c = make_config("retina_folder", root=small_kaggle)
    _write_csv(labels, "image,grade\n10_left,1\n")
    with pytest.raises(DatasetFormatError, match=r"trainLabels\.csv: missing column\(s\) \['level'\]"):
        build_dataset(c, "train", train=False)
    _write_csv(labels, "image,level\n10_left,1\n10_right,7\n")
    with pytest.raises(ValueError, match=r"trainLabels\.csv: DR grade 7 at row 1 is outside 0-4"):
        build_dataset(c, "train", train=False)
    _write_csv(labels, "image,level\n10_left,mild\n")
    with pytest.raises(DatasetFormatError, match="level 'mild' of image '10_left'"):
        build_dataset(c, "train", train=False)
    _write_csv(labels, "image,level\n")
    with pytest.raises(DatasetFormatError, match=r"trainLabels\.csv split 'train' has no examples"):
        build_dataset(c, "train", train=False)
    with pytest.raises(FileNotFoundError, match="trainLabels.csv with"):
        build_dataset(make_config("retina_folder", root=str(tmp_path / "nowhere")), "train", train=False)

    cx = tmp_path / "cx"
    shutil.copytree(os.path.join(chexpert_root, "CheXpert-v1.0-small"), cx / "CheXpert-v1.0-small")
    valid = cx / "CheXpert-v1.0-small" / "valid.csv"
    text = valid.read_text().splitlines()
    header = text[0].split(",")
    edema = header.index("Edema")
    row = text[1].split(",")
    row[edema] = "2.0"
    _write_csv(valid, "\n".join([text[0], ",".join(row)]) + "\n")
    c = make_config("chexpert_folder", root=str(cx))
    with pytest.raises(ValueError, match=f"valid.csv row Path={row[0]}: column 'Edema' has '2.0'"):
        build_dataset(c, "valid", train=False)
    _write_csv(valid, ",".join(h for h in header if h != "Edema") + "\n")
    with pytest.raises(DatasetFormatError, match=r"valid\.csv: missing column\(s\) \['Edema'\]"):
        build_dataset(c, "valid", train=False)
    row = text[1].split(",")
    row[header.index("Frontal/Lateral")] = "Lateral"
    _write_csv(valid, "\n".join([text[0], ",".join(row)]) + "\n")
    c.frontal_only = True
    with pytest.raises(DatasetFormatError, match=r"\(frontal_only=True\) has no examples"):
        build_dataset(c, "valid", train=False)
    row[header.index("Frontal/Lateral")] = "Oblique"
    _write_csv(valid, "\n".join([text[0], ",".join(row)]) + "\n")
    with pytest.raises(DatasetFormatError, match="Frontal/Lateral has \\['Oblique'\\]"):
        build_dataset(c, "valid", train=False)


def test_config_errors():
    with pytest.raises(ValueError, match="config.data.name must be one of.*'retina_folder'"):
        build_dataset(make_config("retina"), "train", train=False)
    with pytest.raises(ValueError, match="on_bad_image must be 'skip' or 'raise'"):
        build_dataset(make_config("synthetic_retina", on_bad_image="ignore"), "train", train=False)
    ds = index_dataset(4, train=False)
    with pytest.raises(ValueError, match=r"multiple of the data axis size \(8\)"):
        next(ds.batches(12, mesh=mesh()))
    with pytest.raises(ValueError, match="split"):
        build_dataset(make_config("chexpert_folder", root="."), "test", train=False)
