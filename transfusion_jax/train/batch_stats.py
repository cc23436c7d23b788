"""BatchNorm running statistics recomputed from training batches: each BN layer's statistics as a train-mode forward
pass sees the network.

Two uses: the statistics a run starts from, which its init.npz records (`initial_batch_stats`: "at init" means the
network as the first training step sees it, not with the placeholder statistics mean 0 / var 1 of a fresh
initialiser, under which an eval-mode forward computes a function the network never computed), and the statistics
of interpolated weights (analysis.interpolation).

How: forward passes in train mode over a fixed list of training batches; each BN layer's statistics are the average
over those batches of the batch mean and the (biased, as Flax keeps it) batch variance, as
`torch.optim.swa_utils.update_bn` does with a cumulative average. Each batch runs from zeroed statistics, so Flax's
update leaves (1 - momentum) x the batch's statistics; dividing by (1 - momentum) of that module (read while tracing)
recovers them, whatever momentum a model uses. Blocks a fine-tuning protocol runs in eval mode run so here too
(`protocols.eval_mode`), so the layers above see what they will see in training. How many batches:
`DEFAULT_BN_BATCHES` = 16 (512 images at batch 32) give every channel of ResNet-50's last block (7 x 7 positions at
224 px) ~25,000 samples, a ~1 % relative error on its variance.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transfusion_jax.surgery import tree
from transfusion_jax.train import partition, protocols

DEFAULT_BN_BATCHES = 16


def bn_momenta(model: nn.Module, variables: Mapping, images) -> dict[tuple[str, ...], float]:
    """Momentum of every BatchNorm module, by module path, read while tracing one train-mode call (once per
    architecture and shapes in a process: Flax modules compare and hash by their fields)."""
    leaves, treedef = jax.tree_util.tree_flatten(dict(variables))
    key = (model, treedef, tuple(map(_spec, leaves)), _spec(images))
    return dict(_bn_momenta(*key) if _hashable(key) else _bn_momenta.__wrapped__(*key))


def _hashable(key) -> bool:
    try:
        hash(key)
    except TypeError:  # a module with an unhashable field: traced every time
        return False
    return True


def _spec(x) -> tuple:
    return tuple(jnp.shape(x)), jnp.result_type(x)


@functools.lru_cache(maxsize=64)
def _bn_momenta(model: nn.Module, treedef, leaf_specs: tuple, image_spec: tuple) -> tuple:
    variables = treedef.unflatten([jax.ShapeDtypeStruct(*spec) for spec in leaf_specs])
    images = jax.ShapeDtypeStruct(*image_spec)
    momenta: dict[tuple[str, ...], float] = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            momenta[tuple(context.module.path)] = float(context.module.momentum)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}),
            variables,
            images,
        )
    return tuple(momenta.items())


def _all_valid(valid) -> bool:
    """Whether no row is padding; a global array is checked on this process's shards (each process checks its own)."""
    if isinstance(valid, jax.Array):
        return all(bool(np.all(np.asarray(shard.data))) for shard in valid.addressable_shards)
    return bool(np.all(np.asarray(valid)))


def _images(batch):
    if isinstance(batch, Mapping):
        if "valid" in batch and not _all_valid(batch["valid"]):
            raise ValueError("BN statistics need full training batches; this batch has padding rows (valid=False)")
        return batch["image"]
    return batch


def _stats_from_zero(model, eval_blocks, params, zeros, images):
    with protocols.eval_mode(eval_blocks):
        _, new = model.apply(
            {"params": params, "batch_stats": zeros},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)},
        )
    return new["batch_stats"]


@functools.lru_cache(maxsize=64)
def _stats_program(model: nn.Module, eval_blocks: tuple[str, ...], mesh):
    """The jitted statistics pass of an architecture: one per model (by value), frozen blocks and mesh in a process,
    so a study's runs of one model trace it once."""
    step = functools.partial(_stats_from_zero, model, eval_blocks)
    if mesh is None:
        return jax.jit(step)
    # batches split over the mesh's 'data' axis (every process its share): statistics replicated
    rep, data = partition.replicated(mesh), partition.data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, rep, data), out_shardings=rep)


class BatchStatsRecomputer:
    """(params, batch_stats like) -> BatchNorm running statistics of `params` over a fixed list of training batches
    (the module docstring); traced once per architecture, frozen blocks, mesh and input shape in a process
    (`_stats_program`)."""

    def __init__(self, model: nn.Module, batches: Iterable, eval_blocks: Sequence[str] = (), mesh=None):
        self.model, self.eval_blocks = model, tuple(eval_blocks)
        self.batches = [_images(b) for b in batches]
        if not self.batches:
            raise ValueError("no batches to recompute BatchNorm statistics from")
        self._momenta: dict[tuple[str, ...], float] | None = None
        key = (model, self.eval_blocks, mesh)
        self._stats = _stats_program(*key) if _hashable(key) else _stats_program.__wrapped__(*key)

    def __call__(self, params: Mapping, like: Mapping) -> dict:
        zeros = jax.tree_util.tree_map(jnp.zeros_like, dict(like))
        if not jax.tree_util.tree_leaves(zeros):
            return zeros
        if self._momenta is None:
            self._momenta = bn_momenta(self.model, {"params": params, "batch_stats": zeros}, self.batches[0])
        total = None
        for images in self.batches:
            stats = self._stats(params, zeros, images)
            total = stats if total is None else jax.tree_util.tree_map(jnp.add, total, stats)
        out = {}
        for key, value in tree.flatten({"batch_stats": total}).items():
            module = tuple(key.split("/")[1:-1])
            if module not in self._momenta:
                raise ValueError(f"batch_stats leaf {key!r} belongs to no BatchNorm module seen in a forward pass")
            out[key] = value / (len(self.batches) * (1.0 - self._momenta[module]))
        return tree.unflatten(out)["batch_stats"]


def recompute_batch_stats(model: nn.Module, variables: Mapping, batches: Iterable, eval_blocks=(), mesh=None) -> dict:
    """BatchNorm running statistics of `variables['params']` over `batches` (one-off `BatchStatsRecomputer`)."""
    return BatchStatsRecomputer(model, batches, eval_blocks, mesh)(variables["params"], variables["batch_stats"])


def initial_batch_stats(
    config, model: nn.Module, variables: Mapping, batches: Iterable, frozen_stats=None, mesh=None
) -> dict:
    """The statistics a run starts from: recomputed over the first `config.init_bn_batches` of `batches` (the run's
    training stream from step 1: the images the first steps see, augmented as they see them), with the blocks the
    protocol freezes at step 1 in eval mode; statistics that step 1 keeps fixed (those blocks', and `frozen_stats`:
    config.freeze's) keep their values. 0 batches: the variables' own statistics, unchanged."""
    count = int(config.init_bn_batches)
    old = variables["batch_stats"]
    if count <= 0 or not jax.tree_util.tree_leaves(old):
        return old
    eval_blocks = protocols.frozen_at(config, variables["params"], 0)
    recompute = BatchStatsRecomputer(model, itertools.islice(batches, count), eval_blocks, mesh)
    new = recompute(variables["params"], old)
    if frozen_stats is None:
        frozen_stats = jax.tree_util.tree_map(lambda _: False, old)
    kept = jax.tree_util.tree_map_with_path(lambda path, fixed: bool(fixed) or path[0].key in eval_blocks, frozen_stats)
    return jax.tree_util.tree_map(lambda keep, a, b: a if keep else b, kept, old, jax.device_get(new))
