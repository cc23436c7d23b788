"""Data parallelism as global-view jit over a ('data',) mesh: state replicated, batch split on its leading axis.

This is what the paper-era code did with pmap, on the supported API: XLA inserts the gradient all-reduce, and
BatchNorm statistics are over the global batch without an axis_name. The same code runs on 1 device, N local
devices and a multi-process job over many hosts (after `maybe_initialize_distributed`).
"""

import logging
import os

import jax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


# Environments whose launcher starts one process per host/task and sets what jax.distributed.initialize() reads
# (JAX fills in the coordinator, the process count and id from these same variables).
_LAUNCHERS = {
    "a multi-host Cloud TPU slice (TPU_WORKER_HOSTNAMES)": lambda env: (
        len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
    ),
    "SLURM (SLURM_NTASKS > 1)": lambda env: "SLURM_JOB_ID" in env and _int_or_zero(env.get("SLURM_NTASKS")) > 1,
    "Open MPI (OMPI_COMM_WORLD_SIZE > 1)": lambda env: (
        "OMPI_MCA_orte_hnp_uri" in env and _int_or_zero(env.get("OMPI_COMM_WORLD_SIZE")) > 1
    ),
}
# Our names for the two settings JAX takes only as arguments, beside JAX's own JAX_COORDINATOR_ADDRESS.
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def _int_or_zero(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def _env_int(env, name: str) -> int | None:
    if not env.get(name):
        return None
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"{name}={env[name]!r} is not an integer.") from None


def distributed_settings(
    mode: str,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    env=None,
) -> dict | None:
    """The arguments for jax.distributed.initialize(), or None for a single-process run.

    Each setting comes from its argument (a command-line flag) or else the environment: JAX_COORDINATOR_ADDRESS
    ('host:port' of process 0), JAX_NUM_PROCESSES, JAX_PROCESS_ID. mode 'auto' starts jax.distributed when any
    of them is given or a known launcher is detected (multi-host Cloud TPU slice, SLURM or Open MPI with several
    tasks; JAX reads what is not given from that launcher's environment); 'true' always starts it (JAX detects the
    cluster, e.g. a GCE TPU VM slice or Kubernetes); 'false' never does. Without a launcher, all three settings
    are needed; what is missing or inconsistent is named in a ValueError before anything starts.
    """
    env = os.environ if env is None else env
    if mode not in ("auto", "true", "false"):
        raise ValueError(f"--distributed must be auto, true or false, got {mode!r}.")
    given = {
        "coordinator_address": coordinator_address or env.get(ENV_COORDINATOR) or None,
        "num_processes": num_processes if num_processes is not None else _env_int(env, ENV_NUM_PROCESSES),
        "process_id": process_id if process_id is not None else _env_int(env, ENV_PROCESS_ID),
    }
    explicit = [k for k, v in given.items() if v is not None]
    launcher = next((name for name, present in _LAUNCHERS.items() if present(env)), None)
    if mode == "false":
        if explicit:
            raise ValueError(
                f"--distributed=false, but {', '.join(explicit)} given: drop them or use --distributed=auto."
            )
        return None
    if mode == "auto" and not explicit and launcher is None:
        return None
    if launcher is not None:
        logging.info("Multi-process launcher detected: %s.", launcher)
    if explicit and launcher is None:
        missing = [k for k, v in given.items() if v is None]
        if missing:
            flags_ = ", ".join(f"--{k}" for k in missing)
            envs = {
                "coordinator_address": ENV_COORDINATOR,
                "num_processes": ENV_NUM_PROCESSES,
                "process_id": ENV_PROCESS_ID,
            }
            raise ValueError(
                f"A multi-process job needs the coordinator address, the number of processes and this process's id; "
                f"{', '.join(missing)} missing: pass {flags_} (or set {', '.join(envs[k] for k in missing)})."
            )
    n, i, address = given["num_processes"], given["process_id"], given["coordinator_address"]
    if n is not None and n < 1:
        raise ValueError(f"The number of processes must be at least 1, got {n}.")
    if i is not None and n is not None and not 0 <= i < n:
        raise ValueError(f"The process id must be in [0, {n}) for {n} processes, got {i}.")
    if address is not None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"The coordinator address must be host:port (process 0's), got {address!r}.")
    return given


def maybe_initialize_distributed(mode: str, **settings) -> bool:
    """Starts jax.distributed as `distributed_settings(mode, **settings)` says; True if it did."""
    kwargs = distributed_settings(mode, **settings)
    if kwargs is None:
        return False
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:  # e.g. --distributed=true where JAX detects no cluster
        raise ValueError(
            f"jax.distributed.initialize could not start ({e}): pass --coordinator_address, --num_processes and "
            "--process_id."
        ) from e
    logging.info(
        "jax.distributed: process %d of %d, %d local and %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


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
