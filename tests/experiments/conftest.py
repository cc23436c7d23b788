"""One persistent JAX compilation cache for every test here: the quickstart and the three notebook kernels compile
the same tiny programs, so only the first compiles them (subprocesses and kernels inherit the variable)."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def shared_compile_cache(tmp_path_factory):
    old = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    if old is None:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR")
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = old
