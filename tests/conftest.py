"""Test-session setup: 8 fake CPU devices, configured before jax is imported, and one persistent compilation cache
for the session and the processes it starts (the same tiny programs recur across tests; on 2 cores compiles are
the main cost). The cache lives in the temp dir, never in the user's own cache.

On jax 0.10.2 with 2 cores, collectives over >= 5 fake devices deadlock ("Termination timeout for 'all reduce'")
unless PJRT_NPROC exceeds the device count, hence PJRT_NPROC=16 (jax 0.12 does not need it).
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("PJRT_NPROC", "16")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "transfusion_jax_test_jit_cache")
)

from transfusion_jax.train import compile_cache  # noqa: E402  (jax reads the environment above when imported)

compile_cache.enable()
