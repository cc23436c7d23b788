"""A finished run's weights at initialisation and after training, and its evaluation images: the analyses' inputs.

Works for any workdir written by `train_and_evaluate` (quickstart runs and sweep runs alike): the trainer saves the
variables step 1 started from as init.npz and, with `config.export_pretrained=True`, the final ones as
pretrained.npz; config.json rebuilds the model that applies them.
"""

import functools
import json
import os
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from transfusion_jax import data as data_lib
from transfusion_jax import pretrained
from transfusion_jax.models import block_names
from transfusion_jax.train import partition, rundir
from transfusion_jax.train import state as state_lib

RUN_FILES = (rundir.CONFIG, rundir.INIT, rundir.FINAL, rundir.SUMMARY)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's config.json as a ConfigDict (lists where the original had tuples)."""
    path = os.path.join(workdir, rundir.CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


class RunWeights:
    """One finished run: `config`, `apply(variables, images) -> (logits, features)`, `blocks`, `initial()`,
    `final()`. Raises FileNotFoundError naming what is missing when `workdir` is not a finished training run."""

    def __init__(self, workdir: str):
        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"run {workdir} is not a directory: pass training workdirs")
        missing = [name for name in RUN_FILES if not os.path.isfile(os.path.join(workdir, name))]
        if missing:
            raise FileNotFoundError(
                f"run {workdir} is not a finished training workdir: missing {', '.join(missing)} (train to the end "
                f"with --config.export_pretrained=True; runs started before init.npz existed must be retrained)"
            )
        self.workdir = workdir
        self.config = load_config(workdir)
        self._final, metadata = pretrained.load(os.path.join(workdir, rundir.FINAL))
        self.model = state_lib.build_model(self.config, metadata["num_classes"])
        self.apply = functools.partial(self.model.apply, train=False)

    @property
    def blocks(self) -> tuple:
        return block_names(self.config.model.name, **dict(self.config.model.overrides))

    def initial(self) -> dict:
        """The variables training started from, as the trainer saved them at step 0."""
        return pretrained.load(os.path.join(self.workdir, rundir.INIT))[0]

    def final(self) -> dict:
        return self._final


def check_same_architecture(loaded: Sequence[RunWeights]) -> None:
    """Raises naming the first run whose model differs from the first run's (activations go through one apply)."""
    first = loaded[0].config.model.to_dict()
    for run in loaded[1:]:
        if run.config.model.to_dict() != first:
            raise ValueError(
                f"run {run.workdir} has model {run.config.model.to_dict()} but {loaded[0].workdir} has {first}: "
                "compare runs of the same architecture"
            )


def load_runs(workdirs: Sequence[str]) -> list[RunWeights]:
    """RunWeights of each workdir; all must share one architecture."""
    loaded = [RunWeights(str(w)) for w in workdirs]
    check_same_architecture(loaded)
    return loaded


def eval_batches(config, batch_size: int, max_images: int | None = None) -> list[np.ndarray]:
    """The run's evaluation images (its test split, or its validation split when it has none; padding dropped, at
    most `max_images`) as host batches of `batch_size`."""
    dataset = data_lib.build_dataset(config, config.test_split or config.val_split, train=False)
    images, count = [], 0
    for batch in dataset.batches(batch_size, mesh=partition.make_data_mesh()):
        valid = np.asarray(jax.device_get(batch["valid"])).astype(bool)
        images.append(np.asarray(jax.device_get(batch["image"]))[valid])
        count += int(valid.sum())
        if max_images is not None and count >= max_images:
            break
    images = np.concatenate(images)[:max_images]
    return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
