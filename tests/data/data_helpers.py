"""Helpers shared by the data tests (a module with a unique name: test dirs have no __init__.py)."""

from transfusion_jax.data import default_data_config


def make_config(name, **fields):
    """A data config for tests: small images, decoding in the calling thread unless asked otherwise."""
    c = default_data_config()
    c.name = name
    c.image_size = 32
    c.num_workers = 0
    c.normalization = "none"
    for key, value in fields.items():
        target = c
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return c
