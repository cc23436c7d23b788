"""Training tests share XLA executables through JAX's persistent compilation cache (tests/conftest.py): the same
tiny programs are compiled by several tests and by the CLI subprocesses of the resume test, which get this
directory; 2 cores make compiles the main cost."""

import os

CACHE_DIR = os.environ["JAX_COMPILATION_CACHE_DIR"]
