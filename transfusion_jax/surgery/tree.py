"""Names of the leaves of a Flax variable tree, and selections of them: the one vocabulary every package uses.

A leaf's *name* is its path inside one collection joined by '/': 'conv1/conv/kernel', 'layer2/bn/mean'. Its *block*
is the first component (a name from `block_names(model)`, or 'head' / 'aux_logits'), its *module* everything but the
last component ('layer2/bn'). In a whole variables dict ({'params': ..., 'batch_stats': ...}) a leaf's *key* is
'collection/name', e.g. 'params/conv1/conv/kernel' or 'batch_stats/layer2/bn/var'.

A selection is a predicate on names: block names (`matcher(blocks=...)`), a regex that must fully match the name
(`matcher(regex=...)`), or the user-facing list of either (`from_patterns`, the syntax of `config.freeze`). Applied
to a variables dict it ignores the collection, so one selection picks a block's weights and its BN statistics
together. `mask` turns a selection into a tree of bools of the same structure (optax masks, frozen statistics).

Checkpoints (transfusion_jax.pretrained), init schemes, freezing, the optimizer's weight-decay mask and
transfusion_jax.analysis.weights all go through these functions. Merges are strict (every selected key must match in
name and shape on both sides) because a silently partial load would make a "transfer" run secretly a random one.
"""

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

SEP = "/"
Flat = dict[str, Any]
Predicate = Callable[[str], bool]
Selector = Predicate | Iterable[str]  # a predicate on names, or block names

# How many keys per category a mismatch report lists before it only counts the rest.
MAX_LISTED = 10


class TreeMismatchError(ValueError):
    """A source tree does not fit the target where it should be loaded; the message holds the diff."""


def flatten(tree: Mapping) -> Flat:
    """{'a/b/c': leaf}: names for one collection's tree, keys for a whole variables dict."""
    return traverse_util.flatten_dict(dict(tree), sep=SEP)


def unflatten(flat: Mapping[str, Any]) -> dict:
    return traverse_util.unflatten_dict(dict(flat), sep=SEP)


def name_of(key: str) -> str:
    """The key without its collection: 'params/conv1/conv/kernel' -> 'conv1/conv/kernel'."""
    parts = key.split(SEP, 1)
    if len(parts) < 2 or SEP not in parts[1]:
        raise ValueError(f"Key {key!r} is not 'collection/block/.../leaf'; flatten a whole variables dict.")
    return parts[1]


def block_of(name: str) -> str:
    """'block2/unit1/conv1/conv/kernel' -> 'block2'."""
    return name.split(SEP, 1)[0]


def module_of(name: str) -> str:
    """'layer2/bn/mean' -> 'layer2/bn': the module holding the leaf."""
    return name.rsplit(SEP, 1)[0]


def matcher(blocks: Iterable[str] = (), regex: str | None = None) -> Predicate:
    """Selects names whose block is in `blocks` or which `regex` fully matches."""
    if isinstance(blocks, str):
        raise TypeError(f"Pass a sequence of block names, not the string {blocks!r}.")
    blocks = frozenset(blocks)
    pattern = re.compile(regex) if regex is not None else None

    def selected(name: str) -> bool:
        return block_of(name) in blocks or (pattern is not None and pattern.fullmatch(name) is not None)

    return selected


def from_patterns(patterns: Iterable[str], names: Iterable[str], what: str = "leaf") -> Predicate:
    """The selection written as a list of block names or regexes (e.g. `config.freeze`), checked against `names`.

    A pattern equal to a block of `names` selects that block; any other is a regex that must fully match a name.
    A pattern that selects none of `names` raises, so a typo never silently selects nothing.
    """
    names = list(names)
    blocks = list(dict.fromkeys(block_of(n) for n in names))
    selections = []
    for pattern in patterns:
        if pattern in blocks:
            selections.append(matcher(blocks=[pattern]))
            continue
        try:
            selections.append(matcher(regex=pattern))
        except re.error as e:
            raise ValueError(f"Pattern {pattern!r} is neither a block name nor a valid regex ({e}).") from None
        if not any(map(selections[-1], names)):
            raise ValueError(
                f"Pattern {pattern!r} matches no {what}. Blocks: {', '.join(blocks)}; regexes must fully match "
                f"names like {names[0]!r}."
            )
    return lambda name: any(s(name) for s in selections)


def _as_matcher(take: Selector) -> Predicate:
    return take if callable(take) else matcher(blocks=take)


def mask(tree: Any, take: Selector) -> Any:
    """A tree of the same structure as `tree` (one collection) holding whether `take` selects each leaf's name."""
    take = _as_matcher(take)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: take(jax.tree_util.keystr(path, simple=True, separator=SEP)), tree
    )


def select(flat: Flat, take: Selector) -> Flat:
    """The entries of a flattened variables dict whose names `take` selects (a predicate on names, or blocks)."""
    take = _as_matcher(take)
    return {k: v for k, v in flat.items() if take(name_of(k))}


def _listing(title: str, lines) -> str:
    shown = [f"    {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"    ... and {len(lines) - MAX_LISTED} more")
    return "\n".join([f"  {title} [{len(lines)}]:"] + shown)


def _params_first(flat: Flat) -> Flat:
    return dict(sorted(flat.items(), key=lambda kv: not kv[0].startswith("params/")))


def mismatch_report(source: Flat, target: Flat, take: Selector) -> str | None:
    """A readable diff of the selected keys: missing from the source, unexpected in it, or shaped differently.

    None when the selection matches exactly. Unselected keys on either side are ignored by design (e.g. a
    checkpoint's 1000-way head when the target has a 2-way one).
    """
    src, tgt = _params_first(select(source, take)), _params_first(select(target, take))
    missing = [f"- {k} {tuple(np.shape(tgt[k]))}" for k in tgt if k not in src]
    unexpected = [f"+ {k} {tuple(np.shape(src[k]))}" for k in src if k not in tgt]
    shapes = [
        f"~ {k}: source {tuple(np.shape(src[k]))} vs target {tuple(np.shape(tgt[k]))}"
        for k in tgt
        if k in src and np.shape(src[k]) != np.shape(tgt[k])
    ]
    sections = []
    if not src and not tgt:
        sections.append("  the selection matches no key on either side")
    if missing:
        sections.append(_listing("missing from the source (in the target only)", missing))
    if unexpected:
        sections.append(_listing("unexpected in the source (not in the target)", unexpected))
    if shapes:
        sections.append(_listing("shape mismatch", shapes))
    return "\n".join(sections) or None


def check_match(source: Flat, target: Flat, take: Selector, what: str = "checkpoint") -> None:
    report = mismatch_report(source, target, take)
    if report is not None:
        raise TreeMismatchError(
            f"The {what} does not fit the model where it is to be loaded (selected keys only):\n{report}\n"
            "Check that the checkpoint's architecture, variant and widths match the model's."
        )


def merge(source: Mapping, target: Mapping, take: Selector, origin: str = "checkpoint") -> tuple[dict, dict[str, str]]:
    """Copies the selected leaves of `source` into `target` (both variable dicts), strictly.

    Raises TreeMismatchError with the diff unless the selected keys agree in name and shape on both sides. Copied
    leaves take the target's dtype. Returns (merged variables, provenance {key: `origin` or 'init'}).
    """
    src, tgt = flatten(source), flatten(target)
    check_match(src, tgt, take)
    take = _as_matcher(take)
    merged, provenance = {}, {}
    for key, value in tgt.items():
        if take(name_of(key)):
            merged[key] = jnp.asarray(src[key], dtype=jnp.asarray(value).dtype)
            provenance[key] = origin
        else:
            merged[key], provenance[key] = value, "init"
    return unflatten(merged), provenance


def summary(variables: Mapping, provenance: Mapping[str, str] | None = None, blocks: Iterable[str] = ()) -> str:
    """A per-block table: parameter count, number of batch_stats leaves, and where the leaves came from.

    Rows follow `blocks` (e.g. `block_names(model)`, bottom to top), then any other top-level names in tree order.
    """
    flat = flatten(variables)
    block = {k: block_of(name_of(k)) for k in flat}
    present = dict.fromkeys(block.values())
    ordered = [b for b in blocks if b in present]
    rows = [("block", "#params", "#batch_stats", "origin (leaves)")]
    total_params = total_stats = 0
    for name in ordered + [b for b in present if b not in ordered]:
        keys = [k for k in flat if block[k] == name]
        n_params = sum(int(np.size(flat[k])) for k in keys if k.startswith("params/"))
        n_stats = sum(1 for k in keys if k.startswith("batch_stats/"))
        origins = Counter((provenance or {}).get(k, "?") for k in keys)
        rows.append((name, f"{n_params:,}", str(n_stats), ", ".join(f"{o} ({n})" for o, n in origins.items())))
        total_params, total_stats = total_params + n_params, total_stats + n_stats
    rows.append(("total", f"{total_params:,}", str(total_stats), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows)
