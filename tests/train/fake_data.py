"""A small in-memory dataset that follows transfusion_jax.data's Dataset contract (task, len, batches), with a
learnable signal, for training tests that must not depend on the data package's internals."""

import dataclasses

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    label_names: tuple
    num_outputs: int
    loss: str


class FakeDataset:
    """`n` images of `size`^2 whose label shifts the mean of some channels: a tiny CNN can learn it quickly.

    softmax: labels int [n] in 0..num_outputs-1. sigmoid: labels float [n, C], with `label_mask` zeroing a fixed
    pattern of entries. `nan_at_step`: the train batch of that step holds NaN pixels (to test the NaN stop).
    `learnable=False` shuffles the labels after drawing the images, so no model can score above chance on them.
    """

    def __init__(
        self,
        n,
        size=8,
        loss="softmax",
        num_outputs=2,
        train=True,
        seed=0,
        nan_at_step=None,
        name="fake",
        learnable=True,
    ):
        rng = np.random.default_rng(seed)
        self.train, self.nan_at_step, self.name = train, nan_at_step, name
        self.bad_images = {}
        self.task = Task("fake", tuple(f"c{i}" for i in range(num_outputs)), num_outputs, loss)
        self.images = rng.normal(size=(n, size, size, 3)).astype(np.float32)
        if loss == "softmax":
            self.labels = (np.arange(n) % num_outputs).astype(np.int32)
            rng.shuffle(self.labels)
            self.images[..., 0] += 1.5 * self.labels[:, None, None] / max(num_outputs - 1, 1)
            self.masks = np.ones((n, 1), np.float32)
        else:
            self.labels = (rng.uniform(size=(n, num_outputs)) < 0.5).astype(np.float32)
            for c in range(min(num_outputs, 3)):
                self.images[..., c] += 1.5 * self.labels[:, c, None, None]
            self.masks = (rng.uniform(size=(n, num_outputs)) < 0.8).astype(np.float32)
        if not learnable:
            self.labels = self.labels[rng.permutation(n)]

    def __len__(self):
        return len(self.images)

    @property
    def targets(self):
        return self.labels

    def example_ids(self):
        return [f"{self.name}/{i}" for i in range(len(self))]

    def check(self):
        """Nothing on disk to check."""

    def _batch(self, rows, valid, sharding):
        batch = {
            "image": self.images[rows],
            "label": self.labels[rows],
            "label_mask": self.masks[rows] * valid.reshape(-1, 1),
            "valid": valid,
        }
        return {k: jax.device_put(v, sharding) for k, v in batch.items()}

    def batches(self, global_batch_size, *, mesh, seed=0, start_step=0):
        sharding = NamedSharding(mesh, P("data"))
        n = len(self)
        if not self.train:
            for start in range(0, n, global_batch_size):
                positions = np.arange(start, start + global_batch_size)
                yield self._batch(np.minimum(positions, n - 1), positions < n, sharding)
            return
        step = start_step
        while True:
            positions = np.arange(step * global_batch_size, (step + 1) * global_batch_size)
            epoch = positions // n
            rows = np.array([np.random.default_rng([seed, e]).permutation(n)[p % n] for e, p in zip(epoch, positions)])
            batch = self._batch(rows, np.ones(global_batch_size, bool), sharding)
            if step == self.nan_at_step:
                batch["image"] = batch["image"] * np.nan
            yield batch
            step += 1


SPLITS = ("train", "validation", "test")  # the splits tiny_config's runs build


def route_build_dataset(monkeypatch, kwargs: dict | None = None):
    """Makes the trainer's build_dataset return FakeDatasets: 64 training and 40 evaluation examples of 8 px, each
    split its own draw (seed: its index in SPLITS) named after the split, so no example id is in two splits.
    `kwargs`, read when the trainer builds the datasets: a split's name as key holds that split's own extra
    FakeDataset kwargs, every other key applies to all splits."""
    from transfusion_jax.train import trainer  # noqa: PLC0415

    kwargs = {} if kwargs is None else kwargs

    def build(config, split, *, train):
        common = {k: v for k, v in kwargs.items() if k not in SPLITS}
        own = {"seed": SPLITS.index(split), "name": split, **common, **kwargs.get(split, {})}
        return FakeDataset(64 if train else 40, size=8, train=train, **own)

    monkeypatch.setattr(trainer.data_lib, "build_dataset", build)


def tiny_config(**changes):
    """A CBR of widths (4, 8) on FakeDataset (splits train / validation / test): 40 steps of batch 16, eval every 5,
    checkpoints every 20."""
    from transfusion_jax.train import config_lib  # noqa: PLC0415

    c = config_lib.base_config()
    c.model.name = "cbr_small"
    c.model.overrides.widths = (4, 8)
    c.batch_size = 16
    c.num_train_steps = 40
    c.log_every_steps = 5
    c.eval_every_steps = 5
    c.checkpoint_every_steps = 20
    c.progress_bar = False
    c.auc_threshold = 0.8
    c.data.image_size = 8  # what FakeDataset makes
    c.update(changes)
    return c
