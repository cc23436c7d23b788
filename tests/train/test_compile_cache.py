"""The persistent compilation cache helper: where it puts the cache, and that a second process loads from it."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A child process: enables the cache (optionally with a directory), compiles one program, reports the cache
# directory and JAX's own cache hit/miss events.
CHILD = """
import json, sys
import jax, jax.numpy as jnp
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
from transfusion_jax.train import compile_cache
directory = compile_cache.enable(sys.argv[1] or None, min_compile_seconds=0.0)
jax.block_until_ready(jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((4, 4))))
print(json.dumps({
    "dir": directory,
    "hits": events.count("/jax/compilation_cache/cache_hits"),
    "misses": events.count("/jax/compilation_cache/cache_misses"),
}))
"""


def _child(tmp_path, directory="", **env):
    base = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME")}
    base.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **env)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, directory], env=base, capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_program_from_the_default_cache(tmp_path):
    default = str(tmp_path / "xdg" / "transfusion_jax" / "jax_compilation_cache")
    cold = _child(tmp_path)
    assert cold["dir"] == default and cold["hits"] == 0 and cold["misses"] >= 1
    assert os.listdir(default)
    warm = _child(tmp_path)
    assert warm == {"dir": default, "hits": cold["misses"], "misses": 0}


def test_environment_variable_wins_over_the_callers_directory(tmp_path):
    env_dir = str(tmp_path / "from_env")
    assert _child(tmp_path, str(tmp_path / "given"))["dir"] == str(tmp_path / "given")
    assert _child(tmp_path, str(tmp_path / "given"), JAX_COMPILATION_CACHE_DIR=env_dir)["dir"] == env_dir
    assert os.listdir(env_dir)


def test_switched_off_by_jax_enable_compilation_cache(tmp_path):
    off = _child(tmp_path, str(tmp_path / "given"), JAX_ENABLE_COMPILATION_CACHE="false")
    assert off == {"dir": None, "hits": 0, "misses": 0}
    assert not os.path.exists(tmp_path / "given")
