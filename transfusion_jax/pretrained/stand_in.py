"""A random stand-in checkpoint, so the schemes that read ImageNet weights also run in `,local` mode without any.

A config asks for it with `config.pretrained = STAND_IN`; training resolves that name here, at run time, to a
checkpoint of the architecture and overrides it needs (`path`): made on first use from traced shapes and NumPy draws
(no compile) and cached beside the generated local data (transfusion_jax.data.local.CACHE), the same bytes for every
run that asks. Weights ~ N(0, 0.05), BN scale and running variance 1, offsets and running means 0, a 10-class head.
It only exercises the machinery: transfer from it means nothing.
"""

import json
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from transfusion_jax.data.local import CACHE
from transfusion_jax.models import HEAD_NAMES, get_model
from transfusion_jax.pretrained import checkpoint
from transfusion_jax.pretrained.common import preprocessing_record

STAND_IN = "stand-in"
NUM_CLASSES = 10


def _leaf(rng: np.random.Generator, path, shape) -> np.ndarray:
    name = path[-1].key
    if name in ("scale", "var"):
        return np.ones(shape, np.float32)
    if name in ("bias", "mean"):
        return np.zeros(shape, np.float32)
    return rng.normal(0.0, 0.05, shape).astype(np.float32)


def path(architecture: str, overrides: dict) -> str:
    """The cached stand-in checkpoint of `get_model(architecture, 10, **overrides)`, written if missing."""
    key = zlib.crc32(repr(sorted(overrides.items())).encode())
    out = os.path.join(CACHE, f"pretrained_{architecture}_{key}.npz")
    if not os.path.exists(out):
        size = 75 if architecture == "inception_v3" else 32
        model = get_model(architecture, NUM_CLASSES, **overrides)
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
        rng = np.random.default_rng(0)
        variables = jax.tree_util.tree_map_with_path(lambda p, s: _leaf(rng, p, s.shape), dict(shapes))
        metadata = {
            "source": "random stand-in (runlocal)",
            "architecture": architecture,
            "model_overrides": json.loads(json.dumps(overrides)),
            "num_classes": NUM_CLASSES,
            "head_names": [h for h in HEAD_NAMES if h in variables["params"]],
            "preprocessing": preprocessing_record("torchvision"),
        }
        os.makedirs(CACHE, exist_ok=True)
        checkpoint.save(out, variables, metadata)  # atomic: concurrent runs see a whole file or none
    return out
