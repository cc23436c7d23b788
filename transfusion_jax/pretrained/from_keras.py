"""keras.applications ResNet50 / InceptionV3 weight files -> our variables, read with h5py.

Three file layouts occur:
  legacy .h5      what keras.applications downloads (and Keras 2 wrote): one group per layer *name*, attrs
                  'layer_names' and per-layer 'weight_names' (e.g. 'conv1_conv/kernel:0'). A full-model .h5 holds
                  the same under 'model_weights'.
  .weights.h5     what Keras 3 `save_weights` writes: 'layers/<class>_<k>/vars/<i>', where <class>_<k> counts the
                  layers of one class in `model.layers` order (not by layer name) and <i> follows `layer.weights`.
  .keras          a zip whose 'model.weights.h5' is the Keras 3 layout.
For the Keras 3 layout we rebuild the (weightless, offline) keras.applications model to learn its layer order.

Mapping to our tree:
  ResNet50     by name: conv1_{conv,bn} -> conv1/{conv,bn}; convS_blockB_I_{conv,bn} -> block(S-1)/unitB/convI
               (I = 0 is the projection shortcut -> downsample); predictions -> head.
  InceptionV3  its conv/BN layers carry only auto names (conv2d_N, batch_normalization_N) whose N counts
               construction; keras' inception_v3.py builds the branches in the order of torchvision's, which is the
               order our model calls its ConvBN modules. So the k-th conv (and BN) by N is our k-th ConvBN call.
Leaves: kernel (already HWIO / (in, out)), bias, gamma -> scale, beta -> bias, moving_mean -> mean,
moving_variance -> var.
"""

import functools
import io
import os
import re
import zipfile
from collections import OrderedDict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transfusion_jax.models import get_model
from transfusion_jax.models.layers import ConvBN
from transfusion_jax.pretrained.common import NATIVE_SIZE, ConversionError, as_float32

_ROLES = {
    "kernel": ("params", "kernel"),
    "bias": ("params", "bias"),
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}
# Keras 3 keys a saved layer by its class name in snake case (only classes with weights matter here).
_CLASS_KEYS = {"Conv2D": "conv2d", "BatchNormalization": "batch_normalization", "Dense": "dense"}

Layers = dict[str, dict[str, np.ndarray]]  # layer name -> role -> array, in file order


def _text(s) -> str:
    return s.decode() if isinstance(s, bytes) else str(s)


def _read_legacy(group) -> Layers:
    layers = OrderedDict()
    for name in map(_text, group.attrs["layer_names"]):
        weight_names = [_text(w) for w in group[name].attrs.get("weight_names", [])]
        if weight_names:
            layers[name] = OrderedDict(
                (w.split("/")[-1].split(":")[0], np.asarray(group[name][w])) for w in weight_names
            )
    return layers


def _read_keras3(group, arch: str) -> Layers:
    """Keras 3 layout -> layer names of a fresh keras.applications model, via its class-count keys."""
    table = keras_layer_table(arch)
    layers = OrderedDict()
    for key, sub in group["layers"].items():
        arrays = [np.asarray(sub["vars"][str(i)]) for i in range(len(sub["vars"]))] if "vars" in sub else []
        if not arrays:
            continue
        name, roles = table.get(key, (key, ()))
        if len(roles) != len(arrays):  # not a layer of this architecture: unnamed roles make the diff list it
            name, roles = f"{key} (as {name})" if key in table else key, [f"var{i}" for i in range(len(arrays))]
        layers[name] = OrderedDict(zip(roles, arrays))
    return layers


def read_keras_file(path: str, arch: str) -> tuple[Layers, str]:
    """(layer name -> role -> array, description of the layout found)."""
    import h5py  # only this converter needs it

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                blob = z.read("model.weights.h5")
            with h5py.File(io.BytesIO(blob), "r") as f:
                return _read_keras3(f, arch), ".keras archive (Keras 3 weights layout)"
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs:
                return _read_legacy(f), "legacy Keras .h5 weights"
            if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
                return _read_legacy(f["model_weights"]), "legacy Keras .h5 full model"
            if "layers" in f:
                return _read_keras3(f, arch), "Keras 3 .weights.h5"
    except ConversionError:
        raise
    except Exception as e:  # h5py/zipfile raise OSError, KeyError, BadZipFile... for damaged files
        raise ConversionError(
            f"Cannot read {path} as Keras weights ({type(e).__name__}: {e}). Is the file complete? Expected a "
            f"keras.applications .h5, a Keras 3 .weights.h5 or a .keras archive."
        ) from None
    raise ConversionError(
        f"{path} is an HDF5 file but not Keras weights (no 'layer_names' attribute, no 'layers' group)."
    )


@functools.cache
def keras_layer_table(arch: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Keras 3 save key ('conv2d_7') -> (layer name, weight roles) of a weightless keras.applications model."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    build = {"resnet50": keras.applications.ResNet50, "inception_v3": keras.applications.InceptionV3}[arch]
    model = build(weights=None)
    counts: dict[str, int] = {}
    table = {}
    for layer in model.layers:
        cls = _CLASS_KEYS.get(type(layer).__name__, type(layer).__name__)
        k = counts.get(cls, 0)
        counts[cls] = k + 1
        if layer.weights:
            table[cls if k == 0 else f"{cls}_{k}"] = (layer.name, tuple(w.name for w in layer.weights))
    return table


def _resnet_layer_path(name: str):
    if name in ("conv1_conv", "conv1_bn"):
        return f"conv1/{name[6:]}"
    if name == "predictions":
        return "head"
    m = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)", name)
    if not m:
        return None
    stage, block, index, kind = m.groups()
    unit = "downsample" if index == "0" else f"conv{index}"
    return f"block{int(stage) - 1}/unit{block}/{unit}/{kind}"


def convbn_call_order(arch: str, **overrides) -> list[str]:
    """Paths of our ConvBN modules in the order the model calls them (traced, nothing computed)."""
    model = get_model(arch, 1000, **overrides)
    order: list[str] = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, ConvBN) and context.method_name == "__call__":
            order.append("/".join(context.module.path))
        return next_fun(*args, **kwargs)

    size = NATIVE_SIZE[arch]
    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
    return list(dict.fromkeys(order))


def _kind(roles) -> str:
    if "moving_mean" in roles:
        return "bn"
    kernel = roles.get("kernel")
    return {4: "conv", 2: "dense"}.get(getattr(kernel, "ndim", None), "other")


def _serial(name: str) -> int:
    """The construction counter in an auto name: 'conv2d' -> 0, 'conv2d_17' -> 17."""
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def _check_contiguous(names: list[str], order: list[str], kind: str) -> None:
    """One model's auto names count up without gaps; a gap is a missing layer, which would shift every later
    layer onto the wrong module, so name it (and the module it belongs to) instead."""
    if not names:
        return
    present = {_serial(n) for n in names}
    first = min(present)
    gaps = [i for i in range(first, max(present) + 1) if i not in present]
    if gaps:
        where = ", ".join(f"#{i} -> {order[i - first]}/{kind}" if i - first < len(order) else f"#{i}" for i in gaps)
        raise ConversionError(
            f"The Keras file's {kind} layers skip construction numbers ({names[0]} ... "
            f"{names[-1]}): missing {where}. Is the file complete?"
        )


def _inception_layer_paths(layers: Layers) -> dict[str, str]:
    order = convbn_call_order("inception_v3", variant="keras")
    paths = {}
    for kind in ("conv", "bn"):
        names = sorted((n for n, r in layers.items() if _kind(r) == kind), key=_serial)
        _check_contiguous(names, order, kind)
        paths.update({n: f"{p}/{kind}" for n, p in zip(names, order)})
    paths.update({n: "head" for n, r in layers.items() if _kind(r) == "dense" and n == "predictions"})
    return paths


def convert_layers(arch: str, layers: Layers) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, tuple]]:
    """(converted flat dict, our key -> 'keras layer/role', unmapped 'layer/role' -> shape)."""
    if arch == "resnet50":
        paths = {n: p for n in layers if (p := _resnet_layer_path(n)) is not None}
    else:
        paths = _inception_layer_paths(layers)
    converted, origin, unmapped = {}, {}, {}
    for name, roles in layers.items():
        for role, array in roles.items():
            if name not in paths or role not in _ROLES:
                unmapped[f"{name}/{role}"] = array.shape
                continue
            collection, leaf = _ROLES[role]
            key = f"{collection}/{paths[name]}/{leaf}"
            converted[key] = as_float32(array)
            origin[key] = f"{name}/{role}"
    return converted, origin, unmapped
