"""Training tests share XLA executables through JAX's persistent compilation cache (the same tiny programs are
compiled by several tests and by the CLI subprocesses of the resume test); 2 cores make compiles the main cost."""

import os
import tempfile

import jax

CACHE_DIR = os.path.join(tempfile.gettempdir(), "transfusion_jax_test_jit_cache")
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
