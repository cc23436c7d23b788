"""Command line for the similarity measures on activation files.

  similarity A.npy B.npy --method svcca --keep 0.99   one JSON object on stdout (score, coefficients/weights);
      the .npy files are memory-mapped and streamed in row batches, so files larger than memory work.
The paper's figures over training runs (Fig. 2-5, weight change) are `python -m transfusion_jax.experiments fig2 ...`.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from transfusion_jax.analysis import similarity


def _keep(text: str) -> int | float | str:
    """'all' -> every direction, '0.99' -> variance fraction, '20' -> number of directions."""
    if text == "all":
        return text
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep must be an int, a fraction like 0.99, or 'all'; got {text!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m transfusion_jax.analysis", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("similarity", help="similarity of two (examples, features) .npy activation files")
    sim.add_argument("a", type=Path)
    sim.add_argument("b", type=Path)
    sim.add_argument("--method", choices=similarity.METHODS, default="svcca")
    sim.add_argument(
        "--keep",
        type=_keep,
        default=None,
        help="svcca only: directions to keep (int), variance fraction (e.g. 0.99; default), or 'all'",
    )
    sim.add_argument("--debiased", action="store_true", help="cka only: unbiased HSIC estimator")
    sim.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="cca/pwcca: drop neurons with variance <= epsilon * max variance (default 1e-6)",
    )
    sim.add_argument("--batch-size", type=int, default=65536, help="rows streamed per jitted step")
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
        result = similarity.similarity(a, b, args.method, batch_size=args.batch_size, **options)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps({"a": str(args.a), "b": str(args.b), **result.as_dict()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return _similarity_command(args, parser)


if __name__ == "__main__":
    sys.exit(main())
