"""Surgery on Flax variable dicts ({'params': ..., 'batch_stats': ...}) through flattened 'a/b/c' names.

A key is 'collection/block/.../leaf', e.g. 'params/conv1/conv/kernel' or 'batch_stats/layer2/bn/var': the second
component is the block (a name from `block_names(model)`, or 'head' / 'aux_logits'), so one selection picks a
block's weights and its BN statistics together. Merges are strict (every selected key must match in name and
shape on both sides) because a silently partial load would make a "transfer" run secretly a random-init run.
"""

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Union

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

Flat = dict[str, object]
Selector = Union[Callable[[str], bool], Iterable[str]]

# How many keys per category a mismatch report lists before it only counts the rest.
MAX_LISTED = 10


class TreeMismatchError(ValueError):
    """A source tree does not fit the target where it should be loaded; the message holds the diff."""


def flatten(variables: Mapping) -> Flat:
    return traverse_util.flatten_dict(dict(variables), sep="/")


def unflatten(flat: Flat) -> dict:
    return traverse_util.unflatten_dict(flat, sep="/")


def block_of(key: str) -> str:
    """'params/block2/unit1/conv1/conv/kernel' -> 'block2'."""
    parts = key.split("/")
    if len(parts) < 3:
        raise ValueError(f"Key {key!r} is not 'collection/block/.../leaf'; flatten a full variables dict.")
    return parts[1]


def path_of(key: str) -> str:
    """The key without its collection: 'params/conv1/conv/kernel' -> 'conv1/conv/kernel'."""
    return key.split("/", 1)[1]


def matcher(blocks: Iterable[str] = (), regex: str | None = None) -> Callable[[str], bool]:
    """Selects keys whose block is in `blocks` or whose collection-free path fully matches `regex`."""
    blocks = frozenset(blocks)
    pattern = re.compile(regex) if regex is not None else None
    return lambda key: block_of(key) in blocks or (pattern is not None and pattern.fullmatch(path_of(key)) is not None)


def _as_matcher(take: Selector) -> Callable[[str], bool]:
    if callable(take):
        return take
    if isinstance(take, str):
        raise TypeError(f"Pass a sequence of block names, not the string {take!r}.")
    return matcher(blocks=take)


def select(flat: Flat, take: Selector) -> Flat:
    """The sub-dict of `flat` whose keys `take` selects (a predicate on keys, or block names)."""
    take = _as_matcher(take)
    return {k: v for k, v in flat.items() if take(k)}


def _listing(title: str, lines) -> str:
    shown = [f"    {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"    ... and {len(lines) - MAX_LISTED} more")
    return "\n".join([f"  {title} [{len(lines)}]:"] + shown)


def mismatch_report(source: Flat, target: Flat, take: Selector) -> str | None:
    """A readable diff of the selected keys: missing from the source, unexpected in it, or shaped differently.

    None when the selection matches exactly. Unselected keys on either side are ignored by design (e.g. a
    checkpoint's 1000-way head when the target has a 2-way one).
    """
    take = _as_matcher(take)
    params_first = lambda d: dict(sorted(d.items(), key=lambda kv: not kv[0].startswith("params/")))
    src, tgt = params_first(select(source, take)), params_first(select(target, take))
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
        if take(key):
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
    present = dict.fromkeys(block_of(k) for k in flat)
    ordered = [b for b in blocks if b in present]
    blocks = ordered + [b for b in present if b not in ordered]
    rows = [("block", "#params", "#batch_stats", "origin (leaves)")]
    total_params = total_stats = 0
    for block in blocks:
        keys = [k for k in flat if block_of(k) == block]
        n_params = sum(int(np.size(flat[k])) for k in keys if k.startswith("params/"))
        n_stats = sum(1 for k in keys if k.startswith("batch_stats/"))
        origins = Counter((provenance or {}).get(k, "?") for k in keys)
        rows.append((block, f"{n_params:,}", str(n_stats), ", ".join(f"{o} ({n})" for o, n in origins.items())))
        total_params, total_stats = total_params + n_params, total_stats + n_stats
    rows.append(("total", f"{total_params:,}", str(total_stats), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip()
    return "\n".join(fmt(r) for r in rows)
