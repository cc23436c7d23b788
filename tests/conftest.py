"""Test-session setup: 8 fake CPU devices, configured before jax is imported.

On jax 0.10.2 with 2 cores, collectives over >= 5 fake devices deadlock ("Termination timeout for 'all reduce'")
unless PJRT_NPROC exceeds the device count, hence PJRT_NPROC=16 (jax 0.12 does not need it).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("PJRT_NPROC", "16")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")
