"""Data parallelism as global-view jit over a ('data',) mesh: state replicated, batch split on its leading axis.

This is what the paper-era code did with pmap, on the supported API: XLA inserts the gradient all-reduce, and
BatchNorm statistics are over the global batch without an axis_name. The same code runs on 1 device, N local
devices and a multi-host TPU slice (after `maybe_initialize_distributed`).
"""

import os

import jax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed(mode: str) -> bool:
    """Starts jax.distributed for multi-host runs. 'auto': when the environment is a multi-worker TPU slice
    (TPU_WORKER_HOSTNAMES lists several hosts) or a JAX coordinator address is set; 'true'/'false' force it."""
    if mode not in ("auto", "true", "false"):
        raise ValueError(f"--distributed must be auto, true or false, got {mode!r}.")
    multi_host_env = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "") or "JAX_COORDINATOR_ADDRESS" in os.environ
    if mode == "true" or (mode == "auto" and multi_host_env):
        jax.distributed.initialize()
        return True
    return False


def make_data_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh with an Auto axis: the step is global-view code and XLA propagates the shardings. (Newer JAX
    defaults make_mesh to Explicit axes, under which e.g. optax's take_along_axis on a batch-sharded label refuses
    to pick an output sharding.)"""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh) -> None:
    n = mesh.devices.size
    if global_batch_size % n:
        raise ValueError(
            f"config.batch_size={global_batch_size} must be divisible by the {n} devices of the mesh; "
            f"use a multiple of {n}."
        )
