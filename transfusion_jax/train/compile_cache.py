"""JAX's persistent compilation cache, switched on the same way by every entry point (the training CLI, sweeps,
the quickstart, the notebooks, the tests), so a program compiled once is loaded from disk by later processes:
a sweep's second run of a model, a resumed run, a rerun notebook.

The directory is `$JAX_COMPILATION_CACHE_DIR` when set (JAX's own variable), else the directory the caller passes,
else `$XDG_CACHE_HOME/transfusion_jax/jax_compilation_cache` (`~/.cache/...`). `JAX_ENABLE_COMPILATION_CACHE=false`
(also JAX's own) turns the cache off. Entries are keyed by the program, the JAX/XLA version, the devices and the
XLA flags, so one directory serves every model, machine type and version without mix-ups.
"""

import logging
import os

import jax

ENV_DIR = "JAX_COMPILATION_CACHE_DIR"
# A compile shorter than this is not worth a disk entry (reading it back costs about as much).
MIN_COMPILE_SECONDS = 0.5
# Least recently used entries are evicted above this size (JAX's default is no limit).
MAX_BYTES = 4 * 2**30


def default_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "transfusion_jax", "jax_compilation_cache")


def enable(directory: str | None = None, *, min_compile_seconds: float = MIN_COMPILE_SECONDS) -> str | None:
    """Switches the persistent compilation cache on; returns its directory, or None when it is switched off.

    Call it before the first compile (at program start). Programs that compile faster than `min_compile_seconds`
    are not stored.
    """
    if not jax.config.jax_enable_compilation_cache:
        logging.info("Persistent compilation cache off (JAX_ENABLE_COMPILATION_CACHE).")
        return None
    path = os.path.abspath(os.path.expanduser(os.environ.get(ENV_DIR) or directory or default_dir()))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    if jax.config.jax_compilation_cache_max_size < 0:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    logging.info("Persistent compilation cache: %s", path)
    return path
