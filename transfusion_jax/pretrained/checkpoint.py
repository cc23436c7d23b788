"""The converted-checkpoint file: one .npz of flat 'params/a/b/c' and 'batch_stats/a/b/c' arrays plus a JSON
metadata string, readable with plain NumPy (no pickle) and self-describing: it names the architecture, the model
overrides and the preprocessing the weights expect.
"""

import json
import os
import zipfile

import numpy as np

from transfusion_jax.pretrained.common import ConversionError
from transfusion_jax.surgery import tree

METADATA_KEY = "__metadata__"
FORMAT = "transfusion_jax.pretrained"
FORMAT_VERSION = 1
COLLECTIONS = ("params", "batch_stats")


def save(path: str, variables: dict, metadata: dict) -> None:
    """Writes `variables` ({'params', 'batch_stats'}) and `metadata` to `path` (.npz), atomically."""
    flat = tree.flatten(variables)
    bad = sorted(k for k in flat if k.split("/")[0] not in COLLECTIONS)
    if bad:
        raise ValueError(f"Only {COLLECTIONS} can be saved; got {bad[:5]}.")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    arrays = {k: np.asarray(v) for k, v in flat.items()}
    arrays[METADATA_KEY] = np.array(json.dumps(meta, sort_keys=True))
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _read(path: str, arrays: bool) -> tuple[dict, dict]:
    if not os.path.isfile(path):
        raise ConversionError(f"No such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:  # lazy: only the entries read here leave the disk
            if METADATA_KEY not in data.files:
                raise ConversionError(
                    f"{path} has no {METADATA_KEY!r} entry: not a checkpoint written by "
                    f"transfusion_jax.pretrained. Convert it first (python -m "
                    f"transfusion_jax.pretrained convert ...)."
                )
            meta = json.loads(str(data[METADATA_KEY]))
            flat = {k: data[k] for k in data.files if k != METADATA_KEY} if arrays else {}
    except ConversionError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ConversionError(
            f"Cannot read {path} as a converted checkpoint ({type(e).__name__}: {e}). Is the file complete?"
        ) from None
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise ConversionError(
            f"{path}: format {meta.get('format')!r} version {meta.get('format_version')}; this "
            f"code reads {FORMAT!r} up to version {FORMAT_VERSION}."
        )
    bad = sorted(k for k in flat if k.split("/")[0] not in COLLECTIONS)
    if bad:
        raise ConversionError(f"{path}: unexpected entries {bad[:5]} (only {COLLECTIONS} are allowed).")
    return tree.unflatten(flat), meta


def load(path: str) -> tuple[dict, dict]:
    """(variables {'params', 'batch_stats'} of NumPy arrays, metadata dict) from a file written by `save`."""
    return _read(path, arrays=True)


def read_metadata(path: str) -> dict:
    """The metadata of a checkpoint written by `save`, without reading its arrays (e.g. its preprocessing)."""
    return _read(path, arrays=False)[1]


def block_counts(variables: dict) -> dict:
    """Top-level block -> (number of parameters, number of BN statistics)."""
    counts: dict = {}
    for collection in COLLECTIONS:
        for key, value in tree.flatten(variables.get(collection, {})).items():
            block = tree.block_of(key)
            params, stats = counts.get(block, (0, 0))
            n = int(np.size(value))
            counts[block] = (params + n, stats) if collection == "params" else (params, stats + n)
    return counts


def describe(variables: dict, metadata: dict, shapes: bool = True) -> str:
    """Human-readable summary: metadata, per-block counts, and (optionally) every leaf's shape."""
    lines = ["metadata:", *("  " + s for s in json.dumps(metadata, indent=2, sort_keys=True).splitlines())]
    counts = block_counts(variables)
    lines.append(f"{'block':<14}{'params':>14}{'bn stats':>12}")
    for block, (params, stats) in counts.items():
        lines.append(f"{block:<14}{params:>14,}{stats:>12,}")
    total_p, total_s = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    lines.append(f"{'total':<14}{total_p:>14,}{total_s:>12,}")
    if shapes:
        lines.append("shapes:")
        for collection in COLLECTIONS:
            flat = tree.flatten(variables.get(collection, {}))
            lines += [f"  {collection}/{k} {tuple(np.shape(v))}" for k, v in flat.items()]
    return "\n".join(lines)
