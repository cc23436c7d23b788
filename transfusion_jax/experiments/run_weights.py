"""A finished run's weights at initialisation and after training, and its eval images: the analyses' inputs.

Works for any workdir written by `train_and_evaluate` with `config.export_pretrained=True` (quickstart runs and
sweep runs alike): the final weights are its pretrained.npz; the initial ones are recomputed from its config.json
exactly as the trainer drew them (same init scheme, same checkpoint, same key `jax.random.key(config.seed)`).
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np


def load_config(workdir: str):
    """The run's config.json as a ConfigDict (lists where the original had tuples)."""
    import ml_collections  # noqa: PLC0415

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


class RunWeights:
    def __init__(self, workdir: str):
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        from transfusion_jax import pretrained  # noqa: PLC0415
        from transfusion_jax.train import state as state_lib  # noqa: PLC0415

        self.workdir = workdir
        self.config = load_config(workdir)
        path = os.path.join(workdir, "pretrained.npz")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: train with --config.export_pretrained=True to analyse a run.")
        self._final, metadata = pretrained.load(path)
        self.model = state_lib.build_model(self.config, metadata["num_classes"])
        self.apply = functools.partial(self.model.apply, train=False)
        self._jax, self._jnp, self._state = jax, jnp, state_lib

    @property
    def blocks(self) -> tuple:
        from transfusion_jax.models import block_names  # noqa: PLC0415

        return block_names(self.config.model.name, **dict(self.config.model.overrides))

    def initial(self) -> dict:
        size = self.config.data.image_size or 224
        sample = self._jnp.zeros((1, size, size, 3), self._jnp.float32)
        return self._state.init_variables(self.config, self.model, self._jax.random.key(self.config.seed), sample)

    def final(self) -> dict:
        return self._final


def eval_batches(config, batch_size: int, max_images: int | None = None) -> list[np.ndarray]:
    """The run's evaluation images (padding dropped, at most `max_images`) as host batches of `batch_size`."""
    import jax  # noqa: PLC0415

    from transfusion_jax import data as data_lib  # noqa: PLC0415
    from transfusion_jax.train import partition  # noqa: PLC0415

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
