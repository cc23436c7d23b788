"""Freezing parts of a network during training: its parameters through optax masks, its BN statistics with them.

`freeze(optimizer, params, frozen=[...])` routes the frozen leaves to `optax.set_to_zero()` and the rest to
`optimizer` via `optax.multi_transform`, so nothing inside `optimizer` (momentum, Adam moments, weight decay from
`add_decayed_weights` or `adamw`) ever sees or moves a frozen leaf, and no optimizer state is kept for it.

`frozen` holds block names ('conv1', 'head') or regexes fully matching parameter names ('block1/unit1/.*'), the
syntax of `config.freeze` (`tree.from_patterns`). A pattern that selects no parameter raises.

BatchNorm running statistics are not parameters: they change whenever the model runs with `train=True`. A frozen
block is meant to be a fixed function, so `frozen_statistics` marks the statistics of every BatchNorm module whose
parameters (scale and/or bias) are all frozen, whether a block name or a regex froze them; the train step keeps
those statistics at their current values (transfusion_jax.train.steps).
"""

from collections.abc import Iterable, Mapping

import jax
import optax

from transfusion_jax.surgery import tree

FROZEN, TRAINABLE = "frozen", "trainable"


def _selection(params: Mapping, frozen: Iterable[str]) -> tree.Predicate:
    return tree.from_patterns(frozen, tree.flatten(params), what="parameter")


def frozen_labels(params: Mapping, frozen: Iterable[str]) -> dict:
    """A params-shaped tree of 'frozen'/'trainable' labels (see the module docstring for the patterns)."""
    return jax.tree.map(
        lambda selected: FROZEN if selected else TRAINABLE, tree.mask(params, _selection(params, frozen))
    )


def frozen_statistics(params: Mapping, batch_stats: Mapping, frozen: Iterable[str]) -> dict:
    """A batch_stats-shaped tree of bools: True where the statistic's module has all its parameters frozen."""
    selected = _selection(params, frozen)
    by_module: dict[str, list[bool]] = {}
    for name in tree.flatten(params):
        by_module.setdefault(tree.module_of(name), []).append(selected(name))

    def fixed(name: str) -> bool:
        flags = by_module.get(tree.module_of(name), [])
        return bool(flags) and all(flags)

    return tree.mask(batch_stats, fixed)


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
    return optax.multi_transform({TRAINABLE: optimizer, FROZEN: optax.set_to_zero()}, frozen_labels(params, frozen))
