"""Environment for the processes these tests start (the quickstart CLI, notebook kernels): one persistent JAX
compilation cache shared by all of them (they compile the same tiny programs, so only the first pays), a single CPU
device as a user's laptop has (not the 8 fake devices of the in-process tests), and the checkout on PYTHONPATH."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def child_env(tmp_path_factory):
    return {
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
    }
