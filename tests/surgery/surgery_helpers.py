"""Shared fixtures for the surgery tests: tiny CBR variables and full-size trees filled from jax.eval_shape."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from transfusion_jax.models import block_names, get_model

TINY = dict(widths=(4, 8, 8, 8))
TINY_BLOCKS = block_names("cbr_small", **TINY)


@functools.cache
def _tiny_init_cached(seed):
    model = get_model("cbr_small", 2, **TINY)
    return model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)), train=False)


def tiny_init(seed=0):
    """Real `model.init` variables of the tiny CBR (cached: XLA compiles are slow on a shared 2-core machine)."""
    return jax.tree.map(lambda x: x, _tiny_init_cached(seed))


def tiny_random(seed, widths=TINY["widths"], num_classes=2):
    """A tiny CBR tree of any widths filled with random values, without compiling an init."""
    model = get_model("cbr_small", num_classes, widths=widths)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    return random_like(shapes, seed)


def random_like(variables, seed, var_offset=0.5):
    """Every leaf replaced by distinct random values (BN variances kept positive), so no leaf equals an init's."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(variables, sep="/")
    out = {}
    for key, value in flat.items():
        x = rng.normal(size=np.shape(value)).astype(np.float32)
        out[key] = jnp.asarray(np.abs(x) + var_offset if key.endswith("/var") else x)
    return traverse_util.unflatten_dict(out, sep="/")


def filled_shapes(name, size, fill, num_classes=2, **overrides):
    """A full-size model's variables without running init: eval_shape, then `fill(key, shape)` arrays."""
    model = get_model(name, num_classes, **overrides)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
    flat = traverse_util.flatten_dict(shapes, sep="/")
    return traverse_util.unflatten_dict({k: fill(k, s.shape) for k, s in flat.items()}, sep="/")


def flat(variables):
    return traverse_util.flatten_dict(variables, sep="/")
