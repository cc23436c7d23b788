"""Command line for the similarity measures: on activation files, or on two models' blocks over the same images.

  similarity A.npy B.npy --method svcca --keep 0.99   one JSON object on stdout (score, coefficients/weights);
      the .npy files are memory-mapped and streamed in row batches, so files larger than memory work.
  compare A B --images IMAGES.npy --method cca       one JSON object: the similarity of every block of two models
      (A, B: converted checkpoints, `python -m transfusion_jax.pretrained convert`, or training workdirs, whose
      final weights pretrained.npz are read; RUN/init.npz is a run's start). Both models see the same images in
      batches; each block's activations stream into moments on the device, never to the host. uint8 images are
      normalised as each checkpoint's metadata says; float images are taken as the models' inputs already.
Both write standard JSON (an undefined number is null, never NaN) and show a progress bar on stderr over batches.
The paper's figures over training runs (Fig. 2-5, weight change) are `python -m transfusion_jax.experiments fig2 ...`.
"""

import argparse
import functools
import os
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import tqdm

from transfusion_jax import models, pretrained
from transfusion_jax.analysis import activations, moments, similarity
from transfusion_jax.data import preprocess
from transfusion_jax.train import compile_cache, rundir
from transfusion_jax.train.writer import dumps


def _keep(text: str) -> int | float | str:
    """'all' -> every direction, '0.99' -> variance fraction, '20' -> number of directions."""
    if text == "all":
        return text
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep must be an int, a fraction like 0.99, or 'all'; got {text!r}")


def _positions(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--positions must be a number >= 1 or 'all', got {text!r}")
    return value


def _method_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=similarity.METHODS, default="svcca")
    p.add_argument(
        "--keep",
        type=_keep,
        default=None,
        help="svcca only: directions to keep (int), variance fraction (e.g. 0.99; default), or 'all'",
    )
    p.add_argument("--debiased", action="store_true", help="cka only: unbiased HSIC estimator")
    p.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="cca/pwcca: drop neurons with variance <= epsilon * max variance (default 1e-6)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m transfusion_jax.analysis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("similarity", help="similarity of two (examples, features) .npy activation files")
    sim.add_argument("a", type=Path)
    sim.add_argument("b", type=Path)
    _method_options(sim)
    sim.add_argument(
        "--batch-size", type=int, default=None, help="rows streamed per jitted step (default: about 16 MB per side)"
    )
    cmp = sub.add_parser("compare", help="similarity of every block of two models (checkpoints or runs) on images")
    cmp.add_argument("a", type=Path, help="converted checkpoint (.npz) or training workdir")
    cmp.add_argument("b", type=Path, help="converted checkpoint (.npz) or training workdir")
    cmp.add_argument("--images", type=Path, required=True, help=".npy of images [N, H, W, 3] (uint8 or float)")
    _method_options(cmp)
    cmp.add_argument("--layers", default="", help="comma-separated features (default: every block both models have)")
    cmp.add_argument(
        "--mode",
        choices=activations.MODES,
        default="positions",
        help="conv features: spatial positions as datapoints, or spatial means (one row per image)",
    )
    cmp.add_argument(
        "--positions",
        type=_positions,
        default=16,
        help="mode positions: positions per image, drawn at random (default 16, as the paper's analyses), or 'all'",
    )
    cmp.add_argument("--seed", type=int, default=0, help="seed of the drawn positions")
    cmp.add_argument("--batch-size", type=int, default=32, help="images per forward pass (one program per size)")
    cmp.add_argument("--max-images", type=int, default=0, help="compare on the first N images (0: all)")
    cmp.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser


def _load(path: Path, parser: argparse.ArgumentParser) -> np.ndarray:
    if not path.is_file():
        parser.error(f"activation file not found: {path}")
    try:
        array = np.load(path, mmap_mode="r")
    except ValueError as err:
        parser.error(f"cannot read {path} as a .npy array: {err}")
    if array.ndim != 2:
        parser.error(
            f"{path} has shape {array.shape}; expected 2-D (examples, features) "
            "(reduce conv features first, e.g. transfusion_jax.analysis.activations)"
        )
    return array


def _options(args, parser) -> dict:
    given = {"keep": args.keep is not None, "debiased": args.debiased, "epsilon": args.epsilon is not None}
    options_of = {"cca": {"epsilon"}, "pwcca": {"epsilon"}, "svcca": {"keep"}, "cka": {"debiased"}, "procrustes": set()}
    allowed = options_of[args.method]
    wrong = [name for name, on in given.items() if on and name not in allowed]
    if wrong:
        parser.error(f"--{wrong[0]} does not apply to --method {args.method}")
    options = {}
    if args.method == "svcca":
        options["keep"] = {None: 0.99, "all": None}.get(args.keep, args.keep)
    if args.epsilon is not None:
        options["epsilon"] = args.epsilon
    if args.method == "cka":
        options["debiased"] = args.debiased
    return options


def _similarity_command(args, parser) -> int:
    a, b = _load(args.a, parser), _load(args.b, parser)
    if a.shape[0] != b.shape[0]:
        parser.error(f"{args.a} has {a.shape[0]} examples but {args.b} has {b.shape[0]}: rows must be the same inputs")
    options = _options(args, parser)
    try:
        stats = moments.finalize(moments.from_arrays(a, b, batch_size=args.batch_size, progress=True))
        result = similarity.measure(stats, args.method, **options)
    except ValueError as err:
        parser.error(str(err))
    print(dumps({"a": str(args.a), "b": str(args.b), **result.as_dict()}))
    return 0


def _apply_on_images(variables, images, *, module, normalization):
    """The model on images: uint8 pixels normalised inside the program (4x fewer bytes in), floats as they are."""
    if images.dtype == jnp.uint8:
        images = normalization(images, xp=jnp)
    return module.apply(variables, images, train=False)


def _checkpoint(path: Path, parser) -> tuple[str, tuple, dict, list[str]]:
    """(file read, model as (apply_fn, variables), metadata, its blocks) of a checkpoint or a run's final weights."""
    file = path / rundir.FINAL if path.is_dir() else path
    try:
        variables, metadata = pretrained.load(str(file))
        module = pretrained.model_from_metadata(metadata)
        normalization = preprocess.get_normalization(metadata.get("preprocessing", {}).get("name", "none"))
    except (pretrained.ConversionError, ValueError) as err:
        parser.error(f"{path}: {err}")
    apply_fn = functools.partial(_apply_on_images, module=module, normalization=normalization)
    blocks = models.block_names(metadata["architecture"], **metadata.get("model_overrides", {}))
    return str(file), (apply_fn, variables), metadata, list(blocks)


def _image_batches(path: Path, batch_size: int, max_images: int, parser):
    if not path.is_file():
        parser.error(f"image file not found: {path}")
    try:
        images = np.load(path, mmap_mode="r")
    except ValueError as err:
        parser.error(f"cannot read {path} as a .npy array: {err}")
    if images.ndim != 4 or images.shape[-1] != 3:
        parser.error(f"{path} has shape {images.shape}; expected images [N, H, W, 3]")
    if batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {batch_size}")
    images = images[:max_images] if max_images else images
    starts = range(0, len(images), batch_size)
    bar = tqdm.tqdm(starts, desc="images", unit="batch", disable=len(starts) < 2, file=sys.stderr)
    return len(images), (np.asarray(images[start : start + batch_size]) for start in bar)


def _compare_command(args, parser) -> int:
    options = _options(args, parser)
    file_a, model_a, meta_a, blocks_a = _checkpoint(args.a, parser)
    file_b, model_b, meta_b, blocks_b = _checkpoint(args.b, parser)
    layers = [name for name in args.layers.split(",") if name] or [n for n in blocks_a if n in blocks_b]
    num_images, batches = _image_batches(args.images, args.batch_size, args.max_images, parser)
    reduction = activations.Reduction(
        mode=args.mode, positions=args.positions if args.mode == "positions" else None, seed=args.seed
    )
    try:
        accs = activations.collect_pair_moments(model_a, model_b, batches, [(n, n) for n in layers], reduction)
    except ValueError as err:
        parser.error(str(err))
    per_layer, failed = {}, []
    for (layer, _), acc in accs.items():
        try:
            per_layer[layer] = similarity.measure(moments.finalize(acc), args.method, **options).as_dict()
        except ValueError as err:  # too few datapoints for this layer: the others still count
            per_layer[layer] = {"error": str(err)}
            failed.append(layer)
    out = {
        "a": file_a,
        "b": file_b,
        "architectures": [meta_a["architecture"], meta_b["architecture"]],
        "images": str(args.images),
        "num_images": num_images,
        "method": args.method,
        "options": options,
        "reduction": reduction.describe(),
        "layers": per_layer,
    }
    text = dumps(out)
    print(text)
    if args.out:
        os.makedirs(args.out.parent, exist_ok=True)
        args.out.write_text(text + "\n")
    for layer in failed:
        print(f"error: layer {layer}: {per_layer[layer]['error']}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    compile_cache.enable()  # a model's collection program compiles once across runs of the command too
    if args.command == "compare":
        return _compare_command(args, parser)
    return _similarity_command(args, parser)


if __name__ == "__main__":
    sys.exit(main())
