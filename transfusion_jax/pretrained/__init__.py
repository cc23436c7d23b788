"""ImageNet weights from torchvision and Keras, converted exactly into our models (see README.md here).

    variables, metadata = convert('torchvision', 'resnet50', 'resnet50.pth', 'resnet50_tv.npz')
    variables, metadata = load('resnet50_tv.npz')
    model = model_from_metadata(metadata)          # get_model(arch, num_classes, variant=..., ...)
    logits, features = model.apply(variables, x, train=False)   # x preprocessed as metadata['preprocessing']

The checkpoint keeps the ImageNet classifier ('head', and Inception's 'aux_logits') so the conversion can be
checked on ImageNet; transfer drops them (transfusion_jax.surgery).
"""

import datetime
import os

from transfusion_jax.models import HEAD_NAMES, get_model, vit
from transfusion_jax.models.vit import VIT_SPECS
from transfusion_jax.pretrained import from_keras, from_torch, stand_in
from transfusion_jax.pretrained.checkpoint import describe, load, read_metadata, save
from transfusion_jax.pretrained.common import (
    ARCHITECTURES,
    DEFAULT_PREPROCESSING,
    NATIVE_SIZE,
    SOURCES,
    ConversionError,
    check_tree,
    expected_shapes,
    file_digest,
    infer_num_classes,
    preprocessing_record,
)
from transfusion_jax.pretrained.stand_in import STAND_IN
from transfusion_jax.surgery.tree import unflatten

CONVERTER_VERSION = 1

__all__ = [
    "convert",
    "load",
    "read_metadata",
    "save",
    "describe",
    "model_from_metadata",
    "ConversionError",
    "ARCHITECTURES",
    "SOURCES",
    "STAND_IN",
    "stand_in",
]


def _read(source: str, arch: str, path: str, model_overrides: dict):
    """(converted flat dict, origin names, unmapped entries, layout description, model overrides)."""
    if source == "torchvision" and arch in from_torch.VIT_ARCHITECTURES:
        heads = {**VIT_SPECS[arch], **model_overrides}["num_heads"]
        converted, origin, unmapped = from_torch.convert_state_dict(arch, from_torch.read_state_dict(path), heads)
        return converted, origin, unmapped, "torch state_dict", dict(model_overrides)
    if source == "torchvision":
        converted, origin, unmapped = from_torch.convert_state_dict(arch, from_torch.read_state_dict(path))
        overrides = {"variant": "torchvision", **model_overrides}
        if arch == "inception_v3":  # pretrained torchvision Inception has the aux head; keep what the file has
            overrides["aux_logits"] = any(k.startswith("params/aux_logits/") for k in converted)
        return converted, origin, unmapped, "torch state_dict", overrides
    layers, layout = from_keras.read_keras_file(path, arch)
    converted, origin, unmapped = from_keras.convert_layers(arch, layers)
    return converted, origin, unmapped, layout, {"variant": "keras", **model_overrides}


def _image_size(arch: str, converted: dict, overrides: dict) -> int:
    """The input size the weights fit: a ViT's from its position embeddings (a 384 px checkpoint holds 1 + 24 x 24),
    the CNNs' ImageNet size (their weights fit any)."""
    posemb = converted.get("params/embedding/pos_embedding")
    if arch not in VIT_SPECS or posemb is None or posemb.ndim != 3:
        return NATIVE_SIZE[arch]
    try:
        side = vit.grid_side(posemb.shape[1])
    except ValueError as e:
        raise ConversionError(f"encoder.pos_embedding {posemb.shape}: {e}") from None
    return side * {**VIT_SPECS[arch], **overrides}["patch_size"]


def convert(
    source: str,
    arch: str,
    in_path: str,
    out_path: str | None = None,
    preprocessing: str | None = None,
    model_overrides: dict | None = None,
) -> tuple[dict, dict]:
    """Converts a torchvision (`source='torchvision'`) or Keras (`'keras'`) ImageNet checkpoint of `arch`.

    Returns `(variables, metadata)` and, given `out_path`, saves them there. Raises ConversionError listing
    every missing, unexpected or mis-shaped entry if the file is not a complete `arch` of that source.
    `model_overrides` (recorded in the metadata) change the architecture the file must match, e.g. a smaller ViT's
    width, depth, heads, MLP width and patch size.
    """
    if source not in SOURCES:
        raise ConversionError(f"Unknown source {source!r}; choose one of {SOURCES}.")
    if arch not in ARCHITECTURES:
        raise ConversionError(f"No converter for architecture {arch!r}; choose one of {ARCHITECTURES}.")
    if (source, arch) not in DEFAULT_PREPROCESSING:
        raise ConversionError(
            f"No {source} converter for {arch!r} (keras.applications has no ViT); the {source} converters take "
            f"{', '.join(a for s, a in DEFAULT_PREPROCESSING if s == source)}."
        )
    if not os.path.isfile(in_path):
        raise ConversionError(f"No such file: {in_path}")
    preprocessing = preprocessing or DEFAULT_PREPROCESSING[(source, arch)]
    record = preprocessing_record(preprocessing)

    converted, origin, unmapped, layout, overrides = _read(source, arch, in_path, dict(model_overrides or {}))
    num_classes = infer_num_classes(converted)
    image_size = _image_size(arch, converted, overrides)
    try:
        expected = expected_shapes(arch, num_classes, image_size, **overrides)
    except (TypeError, ValueError) as e:  # overrides the architecture cannot take
        raise ConversionError(f"Cannot build {arch} with {overrides}: {e}") from None
    variant = f"variant {overrides['variant']!r}, " if "variant" in overrides else ""
    what = f"{arch} ({variant}{num_classes} classes{f', {image_size} px' if arch in VIT_SPECS else ''})"
    hint = (
        f"Is {os.path.basename(in_path)} a complete {source} {arch}? Check --source/--arch; the README says how "
        f"to save each source's weights."
    )
    check_tree(converted, expected, origin, unmapped, what, hint)

    sha256, size = file_digest(in_path)
    variables = unflatten(converted)
    metadata = {
        "source": source,
        "architecture": arch,
        "variant": overrides.get("variant"),
        "model_overrides": overrides,
        "num_classes": num_classes,
        "image_size": image_size,
        "head_names": [h for h in HEAD_NAMES if h in variables["params"]],
        "preprocessing": record,
        "converter_version": CONVERTER_VERSION,
        "original_file": {"name": os.path.basename(in_path), "sha256": sha256, "bytes": size, "layout": layout},
        "converted_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if out_path:
        save(out_path, variables, metadata)
    return variables, metadata


def model_from_metadata(metadata: dict, **overrides):
    """The model a converted checkpoint fits: `get_model(arch, num_classes, **model_overrides, **overrides)`."""
    return get_model(metadata["architecture"], metadata["num_classes"], **{**metadata["model_overrides"], **overrides})
