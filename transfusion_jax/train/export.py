"""Trained variables as a transfusion_jax.pretrained checkpoint (.npz + metadata), so a model trained here (e.g. a CBR
on ImageNet, which has no public weights) is a `config.pretrained` for transfer, transfusion, mean_var and slim."""

import datetime

import jax
import numpy as np

from transfusion_jax import pretrained
from transfusion_jax.models import HEAD_NAMES


def export_pretrained(
    path: str,
    variables: dict,
    *,
    architecture: str,
    model_overrides: dict,
    num_classes: int,
    normalization: str,
    source: str,
    extra: dict | None = None,
) -> dict:
    """Writes `variables` ({'params', 'batch_stats'}) to `path`; returns the metadata written. `extra`: more
    JSON-able metadata entries (e.g. how a self-supervised encoder was trained)."""
    host = jax.tree_util.tree_map(np.asarray, jax.device_get(variables))
    metadata = {
        "source": source,
        "architecture": architecture,
        "model_overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in model_overrides.items()},
        "num_classes": int(num_classes),
        "head_names": [h for h in HEAD_NAMES if h in host["params"]],
        # The data pipeline's normalisation preset the weights were trained with; use the same one downstream.
        "preprocessing": {"name": normalization},
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    pretrained.save(path, host, metadata)
    return metadata
