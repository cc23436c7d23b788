"""What every converter shares: the preprocessing record, the target model's expected tree, and the key diff.

A converter turns a foreign checkpoint into a flat dict `{'params/a/b/c': array, 'batch_stats/a/b/c': array}` and
hands it to `check_tree`, which compares it with the tree our model would create and raises one error listing every
missing, unexpected and shape-mismatched entry. Converted weights are therefore either complete and exact in shape
or rejected: nothing is silently left at its random init.
"""

import dataclasses
import hashlib
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from transfusion_jax.data import preprocess
from transfusion_jax.models import get_model
from transfusion_jax.surgery import tree

ARCHITECTURES = ("resnet50", "inception_v3", "vit_b16")
# The ImageNet input size of each; used to trace the model's variable shapes (any valid size gives the CNNs the
# same; a ViT's position embeddings fit one size, so its converter reads that size from the file).
NATIVE_SIZE = {"resnet50": 224, "inception_v3": 299, "vit_b16": 224}
SOURCES = ("torchvision", "keras")

# How a checkpoint states the input its weights expect: one of transfusion_jax.data.preprocess.PRESETS, by name and
# in full (numbers and formula), so the file describes its own input convention to any reader.
PREPROCESSING_FORMULA = "x = (pixels_uint8 / 255 * scale - mean) / std, channels first reordered to channel_order"

# torchvision's pretrained inception_v3 has transform_input=True: it maps torchvision-normalised input back to
# pixels/127.5 - 1 before the first conv. Our model has no such step, so its converted weights take 'inception' input.
DEFAULT_PREPROCESSING = {
    ("torchvision", "resnet50"): "torchvision",
    ("torchvision", "inception_v3"): "inception",
    ("keras", "resnet50"): "keras_resnet50",
    ("keras", "inception_v3"): "inception",
    ("torchvision", "vit_b16"): "torchvision",  # vit_b_16's weights take the ImageNet mean and std too
}

MAX_LISTED = 20  # entries per section of a mismatch report


class ConversionError(ValueError):
    """A checkpoint that does not fit the requested architecture, or a file that cannot be read."""


def preprocessing_record(name: str) -> dict:
    """The metadata entry of preset `name`: its name, numbers (mean, std, scale, channel_order) and formula."""
    if name not in preprocess.PRESETS:
        raise ConversionError(f"Unknown preprocessing {name!r}; choose one of {sorted(preprocess.PRESETS)}.")
    numbers = dataclasses.asdict(preprocess.PRESETS[name])
    return {
        "name": name,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in numbers.items()},
        "formula": PREPROCESSING_FORMULA,
    }


def file_digest(path: str) -> tuple[str, int]:
    """(sha256 hex, size in bytes), read in chunks so a 100 MB checkpoint costs no memory."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def expected_shapes(arch: str, num_classes: int, size: int | None = None, **overrides) -> dict[str, tuple[int, ...]]:
    """Flat 'collection/a/b/c' -> shape of the variables `get_model(arch, ...)` creates for `size` px inputs
    (default: the architecture's ImageNet size), traced, not computed."""
    model = get_model(arch, num_classes, **overrides)
    size = size or NATIVE_SIZE[arch]
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
    return {k: tuple(v.shape) for k, v in tree.flatten(shapes).items()}


def _section(title: str, lines) -> str:
    lines = list(lines)
    if not lines:
        return ""
    shown = lines[:MAX_LISTED]
    more = f"\n    ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return f"\n  {title} ({len(lines)}):\n" + "\n".join(f"    {s}" for s in shown) + more


def check_tree(
    converted: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    origin: Mapping[str, str],
    unmapped: Mapping[str, tuple[int, ...]],
    what: str,
    hint: str,
) -> None:
    """Raises ConversionError naming every difference between the converted tree and the model's.

    `origin` maps a converted key to the source's own name for it; `unmapped` holds source entries no rule maps
    (with their shapes); `what` names the target (arch, variant, classes), `hint` says what to check.
    """

    def src(k):
        return f"{origin[k]} -> {k}" if k in origin else k

    params_first = sorted(expected, key=lambda k: not k.startswith("params/"))  # stable: keeps model order
    missing = [f"{k} {expected[k]}" for k in params_first if k not in converted]
    unexpected = [f"{name} {tuple(shape)}" for name, shape in unmapped.items()]
    unexpected += [f"{src(k)} {converted[k].shape}" for k in converted if k not in expected]
    mismatched = [
        f"{src(k)}: file {converted[k].shape}, model {expected[k]}"
        for k in converted
        if k in expected and tuple(converted[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        raise ConversionError(
            f"The checkpoint does not match {what}:"
            + _section("missing from the file", missing)
            + _section("unexpected in the file", unexpected)
            + _section("shape mismatch", mismatched)
            + f"\n{hint}"
        )


def as_float32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def infer_num_classes(converted: Mapping[str, np.ndarray], default: int | None = 1000) -> int:
    """The head's output width; a missing head is reported by `check_tree`, so fall back to ImageNet's 1000."""
    kernel = converted.get("params/head/kernel")
    return int(kernel.shape[-1]) if kernel is not None and kernel.ndim == 2 else default
