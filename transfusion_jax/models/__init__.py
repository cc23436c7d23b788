"""Model registry. Every model is a Flax Linen module with variables {'params', 'batch_stats'} whose
`__call__(x, train)` returns `(logits, features)`; `features` is an ordered dict of named block outputs, the
names (`block_names(name)` + 'pre_logits') that transfusion, freezing, activation collection and plots share.

The top level of every parameter tree is a block name, or 'head' (the task head) / 'aux_logits' (Inception's
auxiliary ImageNet head): a leaf's block is the first component of its path.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transfusion_jax.models import cbr, inception, resnet, vit
from transfusion_jax.models.inception import AUX_OUTPUT as AUX_OUTPUT

__all__ = [
    "AUX_OUTPUT",
    "HEAD_NAMES",
    "MODEL_NAMES",
    "block_names",
    "feature_names",
    "get_model",
    "paper_resolutions",
]

# Top-level parameter groups that belong to a task, not to the transferable body.
HEAD_NAMES = ("head", "aux_logits")

_RESNET_BLOCKS = ("conv1", "block1", "block2", "block3", "block4")


def _cbr_blocks(name):
    return tuple(f"layer{i + 1}" for i in range(len(cbr.CBR_SPECS[name]["widths"])))


# The paper's inputs: CheXpert 224x224, Retina 587x587; Inception-v3's native 299 too (whether the paper resized
# Retina to 299 for it is unconfirmed, docs/paper.md §1.1).
_PAPER_SIZES = (224, 587)
# ViTs: 224 (CheXpert, and the ImageNet checkpoints' own size) and 384, configs/retina.py's ViT size (587 is no
# multiple of the 16 px patch; 384 is where ViTs are usually fine-tuned at high resolution).
_VIT_SIZES = (224, 384)

# name -> (constructor(num_classes, **overrides), block names, input sizes the paper uses)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...], tuple[int, ...]]] = {
    "resnet50": (resnet.resnet50, _RESNET_BLOCKS, _PAPER_SIZES),
    "resnet50_slim": (resnet.resnet50_slim, _RESNET_BLOCKS, _PAPER_SIZES),
    "inception_v3": (inception.inception_v3, ("stem", "mixed_5", "mixed_6", "mixed_7"), (224, 299, 587)),
    **{
        name: (lambda n, _name=name, **kw: cbr.cbr(_name, n, **kw), _cbr_blocks(name), _PAPER_SIZES)
        for name in cbr.CBR_SPECS
    },
    **{
        name: (lambda n, _name=name, **kw: vit.vit(_name, n, **kw), vit.block_names(spec["depth"]), _VIT_SIZES)
        for name, spec in vit.VIT_SPECS.items()
    },
}

MODEL_NAMES = tuple(_REGISTRY)


def _lookup(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; available models: {', '.join(MODEL_NAMES)}.")
    return _REGISTRY[name]


def get_model(name: str, num_classes: int, dtype: Any = jnp.float32, **overrides) -> nn.Module:
    """Builds a model by name. `dtype` is the computation dtype (bf16 on accelerators); params stay float32.

    `overrides` go to the module, e.g. `variant='keras'`, `widths=(8, 16)` for a CBR, `aux_logits=True`.
    """
    make, _, _ = _lookup(name)
    # Lists (configs read back from JSON) as tuples: a module with list fields cannot be hashed, and analyses key
    # their compiled programs by the module's value (analysis.activations.StaticApply).
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        return make(num_classes, dtype=dtype, **overrides)
    except TypeError as e:
        raise TypeError(f"Bad override for model {name!r}: {e}") from None


def block_names(name: str, **overrides) -> tuple[str, ...]:
    """The model's transferable blocks, bottom to top (features add 'pre_logits' after them)."""
    _, blocks, _ = _lookup(name)
    if name in cbr.CBR_SPECS and "widths" in overrides:  # a CBR's depth follows its widths
        blocks = tuple(f"layer{i + 1}" for i in range(len(overrides["widths"])))
    if name in vit.VIT_SPECS and "depth" in overrides:
        blocks = vit.block_names(overrides["depth"])
    return blocks


def feature_names(name: str, **overrides) -> tuple[str, ...]:
    return block_names(name, **overrides) + ("pre_logits",)


def paper_resolutions(name: str) -> tuple[int, ...]:
    """Input sizes the paper uses with this model: 224 (CheXpert), 587 (Retina), and 299 for Inception-v3; a ViT's
    224 and 384 (the paper has none)."""
    return _lookup(name)[2]


def fits_input(name: str, size: int, **overrides) -> bool:
    """Whether a `size`x`size` input keeps every feature map at least 1x1 (traced with jax.eval_shape, nothing
    runs). Too small an input either fails shape inference (a ViT's: smaller than one patch) or leaves an empty map
    whose global average is NaN."""
    model = get_model(name, 2, **overrides)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    try:
        (_, features), _ = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)
    except (TypeError, ValueError):  # negative output sizes are rejected by XLA's shape inference
        return False
    return all(min(f.shape[1:3]) >= 1 for f in features.values() if f.ndim == 4)


@functools.cache
def _min_input_size(name: str, overrides: tuple, largest: int) -> int:
    kwargs = dict(overrides)
    if not fits_input(name, largest, **kwargs):
        raise ValueError(f"Model {name!r} ({kwargs}) does not fit even a {largest}x{largest} input.")
    lo, hi = 0, largest  # invariant: lo does not fit (0 never does), hi fits; feature sizes grow with the input
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits_input(name, mid, **kwargs) else (mid, hi)
    return hi


def min_input_size(name: str, largest: int = 1024, **overrides) -> int:
    """The smallest square input the architecture accepts, found by bisection over traced shapes (per
    architecture and overrides, so widths/paddings that change the pooling arithmetic are accounted for)."""
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()))
    return _min_input_size(name, frozen, largest)
