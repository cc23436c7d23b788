"""Freezing blocks during training with optax masks.

`freeze(optimizer, params, frozen=[...])` routes the frozen leaves to `optax.set_to_zero()` and the rest to
`optimizer` via `optax.multi_transform`, so nothing inside `optimizer` (momentum, Adam moments, weight decay from
`add_decayed_weights` or `adamw`) ever sees or moves a frozen leaf, and no optimizer state is kept for it.

BatchNorm running statistics are not parameters: a frozen block's running mean/var still update whenever the model
is applied with `train=True` and `mutable=['batch_stats']`. We do not change that here (freezing is an optimizer
concern); callers who want fully fixed frozen blocks must run them in eval mode or drop those batch_stats updates.
"""

import re
from collections.abc import Iterable, Mapping, Sequence

import optax
from flax import traverse_util

FROZEN, TRAINABLE = "frozen", "trainable"


def _path_matches(path: str, pattern: str, blocks: Sequence[str]) -> bool:
    """A pattern that names a top-level block selects that block; any other is a regex fully matching the path."""
    if pattern in blocks:
        return path.split("/", 1)[0] == pattern
    return re.fullmatch(pattern, path) is not None


def frozen_labels(params: Mapping, frozen: Iterable[str]) -> dict:
    """A params-shaped tree of 'frozen'/'trainable' labels.

    `frozen` holds block names ('conv1', 'head') or regexes over 'block/.../leaf' paths ('block1/unit1/.*').
    A pattern that selects nothing raises, so a typo never silently trains what was meant to be frozen.
    """
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    blocks = list(dict.fromkeys(p.split("/", 1)[0] for p in flat))
    patterns = list(frozen)
    for pattern in patterns:
        try:
            hit = any(_path_matches(p, pattern, blocks) for p in flat)
        except re.error as e:
            raise ValueError(f"Freeze pattern {pattern!r} is neither a block name nor a valid regex ({e}).") from None
        if not hit:
            raise ValueError(
                f"Freeze pattern {pattern!r} matches no parameter. Blocks: {', '.join(blocks)}; "
                "regexes must fully match paths like 'block1/unit1/conv1/conv/kernel'."
            )
    labels = {p: FROZEN if any(_path_matches(p, q, blocks) for q in patterns) else TRAINABLE for p in flat}
    return traverse_util.unflatten_dict(labels, sep="/")


def all_blocks_except(params: Mapping, trainable: Iterable[str]) -> list:
    """The block names to freeze so that only `trainable` blocks train (e.g. ['head'] for a linear probe)."""
    trainable = list(trainable)
    blocks = list(params)
    unknown = [b for b in trainable if b not in blocks]
    if unknown:
        raise ValueError(f"Unknown blocks {unknown}; the parameter tree's blocks are {', '.join(blocks)}.")
    return [b for b in blocks if b not in trainable]


def freeze(
    optimizer: optax.GradientTransformation, params: Mapping, frozen: Iterable[str] | None = ()
) -> optax.GradientTransformation:
    """`optimizer` on the trainable leaves, zero updates on the frozen ones (see the module docstring)."""
    frozen = list(frozen or ())
    if not frozen:
        return optimizer
    labels = frozen_labels(params, frozen)
    return optax.multi_transform({TRAINABLE: optimizer, FROZEN: optax.set_to_zero()}, labels)
