"""The paper's initialisation schemes, as pure functions from (fresh random variables, checkpoint variables).

`init` strings (config.init):
  random               the architectures' own initialisers, untouched: He normal fan_out (torchvision's
                       kaiming_normal_, untruncated) for every conv kernel, Flax Dense defaults for the head
                       (LeCun truncated normal kernel, zero bias), BN gamma=1, beta=0, running mean 0, running var 1.
  transfer             every weight and BN statistic from the checkpoint except the task head and aux_logits.
  transfusion:<block>  the blocks up to and including <block> (a prefix of `block_names(model)`) from the
                       checkpoint, the rest random (paper 6.2); transfusion:<last block> equals transfer.
  transfusion:<block>+mean_var
                       the same blocks from the checkpoint, every body tensor above them Mean-Var (BN per
                       `mean_var_bn`), head random: Matsoukas et al.'s (CVPR 2022) "WT-ST" hybrid, weight transfer up
                       to a depth and statistics transfer above it. The Mean-Var draws are those plain `mean_var`
                       makes with the same rng, so the hybrids and `mean_var` differ only where weights are copied.
  mean_var             every body tensor replaced by iid draws from N(mean, var) of the same pretrained tensor
                       (paper 6.1, per tensor); BN handled per `mean_var_bn` (below); head random.
  gabor                the first conv (the one that reads the image) filled with a synthetic Gabor bank
                       (gabor_filters.py), the rest random (paper 6.4).
  slim                 paper 6.3: the lowest blocks from a checkpoint of the full-width model, every conv above them at
                       half its width and random: `resnet50_slim` with conv1..block2 from a ResNet-50 checkpoint; a CBR
                       (cbr_*) with layer1..layer2 from a checkpoint of the same CBR whose widths above layer2 are
                       twice the model's (e.g. widths 16-32-32-64 from a 16-32-64-128 checkpoint).

A ViT (models/vit.py) has no BatchNorm; its LayerNorms are normalisation layers too, so `mean_var_bn` treats their
scale and bias as it treats BatchNorm's (Matsoukas et al.'s statistics transfer resets normalisation layers: 'default').
Its class token and position embeddings are body tensors like any weight. Slim has no ViT form (a ViT's blocks share
one residual width, so there is no "half the channels above block k"): it is refused. Gabor fills the patch embedding
(16 x 16 x C x D), a filter bank applied to each patch, whose trained filters look Gabor- and DCT-like (Dosovitskiy et
al. 2021, Fig. 7).

`mean_var_bn` (the paper does not say how BN was treated):
  'mean_var' (default)  BN gamma/beta get per-tensor Mean-Var draws like every other weight; running statistics
                        are reset (mean 0, var 1). Why the default: with BN after every conv, the scale of a conv
                        kernel is normalised away in training, so the pretrained *scaling* the paper credits for the
                        speed-up lives mostly in gamma/beta; running statistics describe the pretrained features,
                        which Mean-Var destroys (and an iid draw could make a variance negative).
  'default'             BN parameters and statistics at their standard init (gamma 1, beta 0, mean 0, var 1).
  'copy'                BN parameters and running statistics copied from the checkpoint unchanged.

Every function returns (variables, provenance) where provenance maps each flattened key to 'init', 'checkpoint',
'mean_var' or 'gabor'; `tree.summary(variables, provenance)` prints it per block. `initialize` first fits the
checkpoint to the model (fit.py: ViT position embeddings resampled to another image size, an RGB first layer folded
for one-channel input).
"""

import difflib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from transfusion_jax.models import HEAD_NAMES, block_names, vit
from transfusion_jax.surgery import fit, gabor_filters
from transfusion_jax.surgery.tree import (
    TreeMismatchError,
    block_of,
    check_match,
    flatten,
    merge,
    module_of,
    name_of,
    unflatten,
)

SCHEMES = ("random", "transfer", "transfusion", "mean_var", "gabor", "slim")
NEEDS_CHECKPOINT = ("transfer", "transfusion", "mean_var", "slim")
MEAN_VAR_BN = ("mean_var", "default", "copy")
DEFAULT_MEAN_VAR_BN = "mean_var"
SLIM_MODEL, SLIM_SOURCE, SLIM_UPTO = "resnet50_slim", "resnet50", "block2"
CBR_SLIM_UPTO = "layer2"  # the CBR analogue of the ResNet's block2: the lowest two of its four layers

Variables = dict
Provenance = dict


# The suffix of 'transfusion:<block>+mean_var': what fills the blocks above <block> instead of the random init.
ABOVE_MEAN_VAR = "mean_var"


@dataclass(frozen=True)
class InitSpec:
    scheme: str
    upto: str | None = None  # the last transfused block, for 'transfusion'
    above: str | None = None  # 'mean_var' for the hybrid 'transfusion:<block>+mean_var', else None (random above)

    @property
    def draws(self) -> bool:
        """Whether the scheme draws random weights (and so needs an rng)."""
        return self.scheme == "mean_var" or self.above == ABOVE_MEAN_VAR


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def parse_init(spec: str, blocks: Sequence[str]) -> InitSpec:
    """Parses config.init strictly against the model's block names; typos raise naming the valid choices."""
    hybrids = [f"transfusion:{b}+{ABOVE_MEAN_VAR}" for b in blocks]
    choices = [s for s in SCHEMES if s != "transfusion"] + [f"transfusion:{b}" for b in blocks] + hybrids
    help_text = f"Valid choices: {', '.join(choices)} (the model's blocks are {', '.join(blocks)})."
    if not isinstance(spec, str):
        raise ValueError(f"config.init must be a string, got {spec!r}. {help_text}")
    scheme, sep, upto = spec.partition(":")
    if scheme == "transfusion" and sep:
        upto, plus, above = upto.partition("+")
        if upto not in blocks:
            raise ValueError(f"Unknown block {upto!r} in init {spec!r}.{_suggest(upto, blocks)} {help_text}")
        if plus and above != ABOVE_MEAN_VAR:
            raise ValueError(
                f"Unknown suffix {'+' + above!r} in init {spec!r}: only '+{ABOVE_MEAN_VAR}' (Mean-Var above the "
                f"transfused blocks) exists.{_suggest(spec, choices)} {help_text}"
            )
        return InitSpec("transfusion", upto, above or None)
    if sep or scheme not in SCHEMES or scheme == "transfusion":
        raise ValueError(f"Unknown init {spec!r}.{_suggest(spec, choices)} {help_text}")
    return InitSpec(scheme)


def _all_init(variables: Mapping) -> tuple[Variables, Provenance]:
    return dict(variables), {k: "init" for k in flatten(variables)}


def is_body(name: str) -> bool:
    """Everything but the task heads: what 'transfer' loads."""
    return block_of(name) not in HEAD_NAMES


def transfer(init: Mapping, source: Mapping) -> tuple[Variables, Provenance]:
    return merge(source, init, is_body)


def transfusion(init: Mapping, source: Mapping, blocks: Sequence[str], upto: str) -> tuple[Variables, Provenance]:
    """Blocks[0..upto] from the source, the rest as initialised."""
    if upto not in blocks:
        raise ValueError(f"Block {upto!r} is not one of the model's blocks {tuple(blocks)}.")
    return merge(source, init, blocks[: list(blocks).index(upto) + 1])


def transfusion_mean_var(
    init: Mapping, source: Mapping, blocks: Sequence[str], upto: str, rng: jax.Array, bn: str = DEFAULT_MEAN_VAR_BN
) -> tuple[Variables, Provenance]:
    """Blocks[0..upto] from the source (params and BN statistics), Mean-Var above (BN per `bn`), head random.

    The Mean-Var part is exactly `mean_var(init, source, rng, bn)`'s draw for those leaves (same rng, same
    per-leaf fold-in), so at a fixed rng the hybrids differ from `mean_var` only in the copied blocks.
    """
    if upto not in blocks:
        raise ValueError(f"Block {upto!r} is not one of the model's blocks {tuple(blocks)}.")
    drawn, drawn_provenance = mean_var(init, source, rng, bn=bn)
    lower = blocks[: list(blocks).index(upto) + 1]
    out, copied = merge(source, drawn, lower)
    return out, {k: "checkpoint" if copied[k] == "checkpoint" else drawn_provenance[k] for k in copied}


def normalization_param_keys(flat: Mapping) -> set:
    """Params keys of normalisation layers: modules that also hold batch_stats (BatchNorm's scale and bias), and a
    ViT's LayerNorms (`models.vit.LAYER_NORM_MODULE`)."""
    bn_modules = {module_of(name_of(k)) for k in flat if k.startswith("batch_stats/")}
    return {
        k
        for k in flat
        if k.startswith("params/")
        and (module_of(name_of(k)) in bn_modules or vit.LAYER_NORM_MODULE.fullmatch(module_of(name_of(k))))
    }


def _mean_var_draw(rng, tensor, dtype) -> jnp.ndarray:
    """iid N(mean, var) of `tensor`'s own entries (population std), moments taken in float64. The normals are drawn
    as a vector and reshaped: the same values as a draw of the tensor's shape, but XLA:CPU compiles the draw of a
    4-D shape several times slower (models/layers.variance_scaling says why)."""
    x = np.asarray(tensor, dtype=np.float64)
    z = jax.random.normal(rng, (x.size,), dtype=jnp.float32).reshape(x.shape)
    return (x.mean() + x.std() * z).astype(dtype)


def mean_var(
    init: Mapping, source: Mapping, rng: jax.Array, bn: str = DEFAULT_MEAN_VAR_BN
) -> tuple[Variables, Provenance]:
    """Paper 6.1: each body tensor -> iid N(mean, var) of its pretrained counterpart; BN per `bn`; head random."""
    if bn not in MEAN_VAR_BN:
        raise ValueError(f"Unknown mean_var_bn {bn!r}; choose one of {', '.join(MEAN_VAR_BN)}.")
    src, tgt = flatten(source), flatten(init)
    check_match(src, tgt, is_body)
    bn_params = normalization_param_keys(tgt)
    out, provenance = {}, {}
    for i, (key, value) in enumerate(tgt.items()):
        is_stat = key.startswith("batch_stats/")
        is_bn, dtype = is_stat or key in bn_params, jnp.asarray(value).dtype
        if not is_body(name_of(key)) or (is_bn and bn == "default") or (is_stat and bn == "mean_var"):
            out[key], provenance[key] = value, "init"
        elif is_bn and bn == "copy":
            out[key], provenance[key] = jnp.asarray(src[key], dtype=dtype), "checkpoint"
        else:
            out[key], provenance[key] = _mean_var_draw(jax.random.fold_in(rng, i), src[key], dtype), "mean_var"
    return unflatten(out), provenance


def first_conv_key(flat: Mapping, blocks: Sequence[str]) -> str:
    """The kernel of the conv that reads the image: the 4-D kernel of the first block with the fewest inputs.

    conv1/conv/kernel (ResNet), layer1/conv/kernel (CBR), stem/Conv2d_1a_3x3/conv/kernel (Inception).
    """
    prefix = f"params/{blocks[0]}/"
    kernels = [k for k in flat if k.startswith(prefix) and k.endswith("/kernel") and np.ndim(flat[k]) == 4]
    if not kernels:
        raise ValueError(f"No 4-D conv kernel under block {blocks[0]!r}; keys: {list(flat)[:5]}...")
    fewest = min(np.shape(flat[k])[2] for k in kernels)
    found = [k for k in kernels if np.shape(flat[k])[2] == fewest]
    if len(found) != 1:
        raise ValueError(f"Cannot tell the first conv of block {blocks[0]!r} apart: {found}.")
    return found[0]


def gabor(init: Mapping, blocks: Sequence[str], source: Mapping | None = None) -> tuple[Variables, Provenance]:
    """Paper 6.4: the first conv's kernel := a Gabor bank, rescaled so the whole tensor's std equals that of the
    pretrained first conv when a source is given, else that of the freshly initialised kernel (He fan_out).

    Only a multiplicative rescale: shifting to a mean would add a DC component to the zero-mean filters.
    """
    flat = flatten(init)
    key = first_conv_key(flat, blocks)
    reference = flat[key]
    if source is not None:
        src = flatten(source)
        if key not in src:
            raise ValueError(f"The checkpoint has no {key!r} to take the Gabor bank's scale from.")
        reference = src[key]
    bank = gabor_filters.gabor_bank(np.shape(flat[key]))
    if bank.std() == 0:
        raise ValueError(f"{key} has shape {np.shape(flat[key])}: a 1x1 kernel cannot hold a zero-mean Gabor.")
    scale = float(np.std(np.asarray(reference, np.float64))) / float(bank.std())
    flat[key] = jnp.asarray(bank * scale, dtype=jnp.asarray(flat[key]).dtype)
    provenance = {k: ("gabor" if k == key else "init") for k in flat}
    return unflatten(flat), provenance


def slim_upto(model_name: str) -> str | None:
    """The last pretrained block of Slim for this model ('block2' for resnet50_slim, 'layer2' for a CBR), or None
    when the model has no Slim."""
    if model_name == SLIM_MODEL:
        return SLIM_UPTO
    return CBR_SLIM_UPTO if model_name.startswith("cbr_") else None


def slim(
    init: Mapping, source: Mapping, blocks: Sequence[str] | None = None, upto: str = SLIM_UPTO
) -> tuple[Variables, Provenance]:
    """Paper 6.3: blocks[0..upto] from the checkpoint, the slimmed top random. Every conv kernel above `upto` must
    have half the output channels of the checkpoint's (a top of any other width would not be Slim). Defaults:
    `resnet50_slim` from a ResNet-50 checkpoint."""
    blocks = list(blocks or block_names(SLIM_MODEL))
    out, provenance = transfusion(init, source, blocks, upto)
    src, tgt = flatten(source), flatten(init)
    above = set(blocks[blocks.index(upto) + 1 :])
    wrong = [
        f"{k}: {np.shape(tgt[k])[-1]} output channels, checkpoint {np.shape(src[k])[-1] if k in src else 'none'}"
        for k in tgt
        if block_of(name_of(k)) in above and k.endswith("/kernel") and np.ndim(tgt[k]) == 4
        and (k not in src or 2 * np.shape(tgt[k])[-1] != np.shape(src[k])[-1])
    ]  # fmt: skip
    if wrong:
        raise TreeMismatchError(
            f"init='slim' needs every conv above {upto} at half the checkpoint's width; not so for "
            + "; ".join(wrong[:3])
            + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else "")
            + ". For a CBR set model.overrides.widths to the checkpoint's with the widths above it halved."
        )
    return out, provenance


def initialize(
    spec: str,
    model_name: str,
    variables: Mapping,
    *,
    rng: jax.Array | None = None,
    pretrained: str | None = None,
    mean_var_bn: str = DEFAULT_MEAN_VAR_BN,
    model_overrides: Mapping | None = None,
    loader: Callable | None = None,
) -> tuple[Variables, Provenance]:
    """Applies init scheme `spec` to the freshly initialised `variables` of model `model_name`.

    `pretrained` is a checkpoint path read by `loader` (e.g. `transfusion_jax.pretrained.load`, returning
    (variables, metadata)) only when the scheme uses it: 'random' ignores it, 'gabor' uses it only for the filters'
    scale. Reading files is the caller's business (transfusion_jax.train.state), so these schemes stay pure.
    `rng` is needed by 'mean_var' only.
    """
    blocks = block_names(model_name, **dict(model_overrides or {}))
    parsed = parse_init(spec, blocks)
    if parsed.scheme == "slim" and model_name in vit.VIT_SPECS:
        raise ValueError(
            f"init='slim' has no ViT form ({model_name!r}): a ViT's blocks share one residual width, so there are no "
            "channels to halve above a block. Compare transfusion:<block> (pretrained up to it, random above)."
        )
    if parsed.scheme == "slim" and slim_upto(model_name) is None:
        raise ValueError(
            f"init='slim' needs model {SLIM_MODEL!r} or a CBR (cbr_*) with halved top widths (got {model_name!r}); "
            "set config.model accordingly."
        )
    if parsed.scheme in NEEDS_CHECKPOINT and not pretrained:
        raise ValueError(f"init={spec!r} needs a checkpoint: set config.pretrained to a checkpoint path.")
    if mean_var_bn not in MEAN_VAR_BN:  # checked for every scheme, so a typo never waits for a mean_var run
        raise ValueError(f"Unknown mean_var_bn {mean_var_bn!r}; choose one of {', '.join(MEAN_VAR_BN)}.")
    if parsed.draws and rng is None:
        raise ValueError(f"init={spec!r} draws random weights (Mean-Var): pass rng.")
    if parsed.scheme == "random":
        return _all_init(variables)
    source, metadata = _load_checkpoint(pretrained, model_name, loader) if pretrained else (None, {})
    if source is not None:
        first = _first_conv_or_none(flatten(variables), blocks)
        source, notes = fit.fit_checkpoint(source, variables, first, metadata.get("preprocessing"), pretrained)
        for note in notes:
            logging.info("fitting checkpoint %s to %s: %s", pretrained, model_name, note)
    try:
        return _apply(parsed, variables, source, blocks, rng, mean_var_bn, slim_upto(model_name))
    except TreeMismatchError as e:
        raise TreeMismatchError(
            f"{e}\nCheckpoint {pretrained}: architecture {metadata.get('architecture')!r}, variant "
            f"{metadata.get('variant')!r}; model {model_name!r} with overrides {dict(model_overrides or {})}."
        ) from None


def _first_conv_or_none(flat: Mapping, blocks: Sequence[str]) -> str | None:
    try:
        return first_conv_key(flat, blocks)
    except ValueError:  # no conv kernel at the bottom (not a model of this package): nothing to fold
        return None


def _apply(parsed: InitSpec, variables, source, blocks, rng, mean_var_bn, upto_slim) -> tuple[Variables, Provenance]:
    if parsed.scheme == "transfer":
        return transfer(variables, source)
    if parsed.scheme == "transfusion" and parsed.above == ABOVE_MEAN_VAR:
        return transfusion_mean_var(variables, source, blocks, parsed.upto, rng, mean_var_bn)
    if parsed.scheme == "transfusion":
        return transfusion(variables, source, blocks, parsed.upto)
    if parsed.scheme == "mean_var":
        return mean_var(variables, source, rng, bn=mean_var_bn)
    if parsed.scheme == "gabor":
        return gabor(variables, blocks, source)
    return slim(variables, source, blocks, upto_slim)


def _load_checkpoint(path: str, model_name: str, loader: Callable | None) -> tuple[Variables, dict]:
    """(variables, metadata) of a checkpoint for `model_name`; a resnet50_slim also takes a resnet50's."""
    if loader is None:
        raise TypeError(f"Reading checkpoint {path!r} needs loader= (e.g. transfusion_jax.pretrained.load).")
    variables, metadata = loader(path)
    metadata = dict(metadata or {})
    accepted = (model_name, SLIM_SOURCE) if model_name == SLIM_MODEL else (model_name,)
    architecture = metadata.get("architecture")
    if architecture is not None and architecture not in accepted:
        raise ValueError(
            f"Checkpoint {path!r} holds a {architecture!r} model but model {model_name!r} needs one of {accepted}."
        )
    return variables, metadata
