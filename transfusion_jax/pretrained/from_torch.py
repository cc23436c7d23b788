"""torchvision state_dict -> our variables. Our trees use torchvision's module names, so the map is a renaming:

  ResNet-50     conv1, bn1 -> conv1/{conv,bn};  layerK.J.{convI,bnI} -> blockK/unit(J+1)/convI/{conv,bn};
                layerK.J.downsample.{0,1} -> blockK/unit(J+1)/downsample/{conv,bn};  fc -> head
  Inception-v3  Conv2d_* -> stem/Conv2d_*;  Mixed_5x/6x/7x -> mixed_5/6/7/Mixed_..;  AuxLogits -> aux_logits;
                fc -> head;  every BasicConv2d's .conv/.bn -> conv/bn
  ViT           conv_proj -> embedding/conv;  class_token -> embedding/cls;  encoder.pos_embedding ->
                embedding/pos_embedding;  encoder.layers.encoder_layer_i.{ln_1, self_attention, ln_2, mlp.0, mlp.3} ->
                encoderblock_i/{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0/Dense_0,
                MlpBlock_0/Dense_1};  encoder.ln -> encoder_norm;  heads.head -> head

and a layout change: conv weights OIHW -> HWIO, linear weights (out, in) -> (in, out); BN weight, bias,
running_mean, running_var -> scale, bias, mean, var; LayerNorm weight, bias -> scale, bias. A ViT's attention keeps
query, key and value in one packed projection (`in_proj_weight` [3D, D], `in_proj_bias` [3D]): it is split in three,
each head's rows becoming Flax's (D, heads, D / heads) kernel and (heads, D / heads) bias; `out_proj` becomes the
(heads, D / heads, D) kernel. `num_batches_tracked` is a training counter with no use in eval.
"""

import re

import numpy as np

from transfusion_jax.models.vit import VIT_SPECS
from transfusion_jax.pretrained.common import ConversionError, as_float32

_BN_LEAVES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_INCEPTION_STAGES = {"Conv2d": "stem", "Mixed_5": "mixed_5", "Mixed_6": "mixed_6", "Mixed_7": "mixed_7"}
IGNORED_BUFFERS = ("num_batches_tracked",)
VIT_ARCHITECTURES = tuple(VIT_SPECS)


def _layer(path: str, kind: str, leaf: str) -> str | None:
    """Our flat key for a torch leaf of a conv ('conv'), BatchNorm ('bn') or Linear ('dense') at `path`."""
    if kind == "bn":
        return (
            f"{'params' if leaf in ('weight', 'bias') else 'batch_stats'}/{path}/{_BN_LEAVES[leaf]}"
            if leaf in _BN_LEAVES
            else None
        )
    names = {"weight": "kernel", "bias": "bias"}
    return f"params/{path}/{names[leaf]}" if leaf in names else None


def resnet_key(key: str) -> str | None:
    """torchvision resnet50 state_dict key -> our flat key (None: no rule applies)."""
    module, _, leaf = key.rpartition(".")
    if module == "conv1":
        return _layer("conv1/conv", "conv", leaf)
    if module == "bn1":
        return _layer("conv1/bn", "bn", leaf)
    if module == "fc":
        return _layer("head", "dense", leaf)
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(?:(conv|bn)(\d)|downsample\.([01]))", module)
    if not m:
        return None
    stage, unit, kind, index, ds = m.groups()
    prefix = f"block{stage}/unit{int(unit) + 1}"
    if ds is not None:
        return _layer(f"{prefix}/downsample/{'conv' if ds == '0' else 'bn'}", "conv" if ds == "0" else "bn", leaf)
    return _layer(f"{prefix}/conv{index}/{kind}", kind, leaf)


def inception_key(key: str) -> str | None:
    """torchvision inception_v3 state_dict key -> our flat key (None: no rule applies)."""
    parts = key.split(".")
    if parts[0] == "fc" and len(parts) == 2:
        return _layer("head", "dense", parts[1])
    if parts[0] == "AuxLogits":
        top = "aux_logits"
    else:
        top = next((s for p, s in _INCEPTION_STAGES.items() if parts[0].startswith(p)), None)
        if top is None:
            return None
        top = f"{top}/{parts[0]}"
    if len(parts) < 3:
        return None
    *mid, kind, leaf = parts[1:]
    if kind == "fc" and not mid and top == "aux_logits":
        return _layer("aux_logits/fc", "dense", leaf)
    if kind not in ("conv", "bn"):
        return None
    return _layer("/".join([top, *mid, kind]), kind, leaf)


KEY_MAPS = {"resnet50": resnet_key, "inception_v3": inception_key}

_LN_LEAVES = {"weight": "scale", "bias": "bias"}
_VIT_BLOCK_MODULES = {
    "ln_1": "LayerNorm_0",
    "ln_2": "LayerNorm_1",
    "mlp.0": "MlpBlock_0/Dense_0",
    "mlp.linear_1": "MlpBlock_0/Dense_0",  # the names torchvision used before its MLP became a Sequential
    "mlp.3": "MlpBlock_0/Dense_1",
    "mlp.linear_2": "MlpBlock_0/Dense_1",
}
_ATTENTION = "MultiHeadDotProductAttention_0"
QKV = ("query", "key", "value")


def _split_heads(value: np.ndarray, num_heads: int, axis: int) -> np.ndarray:
    """Splits `axis` (D) into (heads, D / heads); a width the heads do not divide passes through to the diff."""
    if value.shape[axis] % num_heads:
        return value
    shape = value.shape[:axis] + (num_heads, value.shape[axis] // num_heads) + value.shape[axis + 1 :]
    return value.reshape(shape)


def _vit_attention(prefix: str, leaf: str, value: np.ndarray, num_heads: int) -> list | None:
    if leaf in ("in_proj_weight", "in_proj_bias"):
        if value.shape[0] % 3:
            return [(f"params/{prefix}/query/{'kernel' if leaf.endswith('weight') else 'bias'}", value)]
        parts = np.split(value, 3, axis=0)  # query, key, value rows
        if leaf == "in_proj_weight":  # (out, in) -> (in, heads, head_dim)
            return [(f"params/{prefix}/{n}/kernel", _split_heads(w.T, num_heads, 1)) for n, w in zip(QKV, parts)]
        return [(f"params/{prefix}/{n}/bias", _split_heads(b, num_heads, 0)) for n, b in zip(QKV, parts)]
    if leaf == "out_proj.weight":  # (out, in) -> (heads, head_dim, out)
        return [(f"params/{prefix}/out/kernel", _split_heads(value.T, num_heads, 0))]
    if leaf == "out_proj.bias":
        return [(f"params/{prefix}/out/bias", value)]
    return None


def vit_entries(key: str, value: np.ndarray, num_heads: int) -> list[tuple[str, np.ndarray]] | None:
    """torchvision VisionTransformer state_dict entry -> [(our flat key, array in our layout)] (None: no rule)."""
    if key == "class_token":
        return [("params/embedding/cls", value)]
    if key == "encoder.pos_embedding":
        return [("params/embedding/pos_embedding", value)]
    module, _, leaf = key.rpartition(".")
    if module == "conv_proj":
        ours = _layer("embedding/conv", "conv", leaf)
    elif module == "encoder.ln":
        ours = f"params/encoder_norm/{_LN_LEAVES[leaf]}" if leaf in _LN_LEAVES else None
    elif module == "heads.head":
        ours = _layer("head", "dense", leaf)
    else:
        m = re.fullmatch(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)", key)
        if not m:
            return None
        block, rest = f"encoderblock_{m.group(1)}", m.group(2)
        if rest.startswith("self_attention."):
            return _vit_attention(f"{block}/{_ATTENTION}", rest[len("self_attention.") :], value, num_heads)
        sub, _, leaf = rest.rpartition(".")
        if sub not in _VIT_BLOCK_MODULES:
            return None
        path = f"{block}/{_VIT_BLOCK_MODULES[sub]}"
        if sub.startswith("ln_"):
            ours = f"params/{path}/{_LN_LEAVES[leaf]}" if leaf in _LN_LEAVES else None
        else:
            ours = _layer(path, "dense", leaf)
    return None if ours is None else [(ours, to_layout(ours, value))]


def to_layout(key: str, value: np.ndarray) -> np.ndarray:
    """torch layout -> Flax layout for kernels; other leaves unchanged. Wrong ranks pass through to the diff."""
    if key.endswith("/kernel") and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if key.endswith("/kernel") and value.ndim == 2:
        return value.T
    return value


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torch checkpoint as {key: float32 array}, loaded without running pickled code.

    Accepts a bare state_dict or one wrapped as {'state_dict': ...} / {'model': ...} (timm and training scripts),
    and strips the 'module.' prefix DataParallel adds.
    """
    import torch  # heavy; only this converter needs it

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        raise ConversionError(
            f"Cannot read {path} as a torch checkpoint ({type(e).__name__}: {e}). Is the file complete, and was it "
            f"written by torch.save(model.state_dict(), ...)?"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state_dict (a dict of tensors).")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a state_dict."
            )
        key = key[len("module.") :] if key.startswith("module.") else key
        out[key] = value.detach().cpu()
    return out


def _entries(arch: str, key: str, value: np.ndarray, num_heads: int | None) -> list | None:
    if arch in VIT_ARCHITECTURES:
        return vit_entries(key, value, num_heads)
    ours = KEY_MAPS[arch](key)
    return None if ours is None else [(ours, to_layout(ours, value))]


def convert_state_dict(
    arch: str, state: dict, num_heads: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, tuple]]:
    """(converted flat dict, our key -> torch key, unmapped torch key -> shape). `num_heads`: a ViT's attention
    heads, which the packed projection's shape does not tell."""
    converted, origin, unmapped = {}, {}, {}
    for key, tensor in state.items():
        if key.rpartition(".")[2] in IGNORED_BUFFERS:
            continue
        entries = _entries(arch, key, tensor.float().numpy(), num_heads)
        if entries is None:
            unmapped[key] = tuple(tensor.shape)
            continue
        for ours, value in entries:
            converted[ours] = as_float32(value)
            origin[ours] = key
    return converted, origin, unmapped
