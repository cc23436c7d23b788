"""Command line: convert a torchvision/Keras ImageNet checkpoint, or inspect a converted one.

python -m transfusion_jax.pretrained convert --source torchvision --arch resnet50 resnet50.pth resnet50_tv.npz
python -m transfusion_jax.pretrained convert --source keras --arch inception_v3 inception.weights.h5 inc_k.npz
python -m transfusion_jax.pretrained inspect resnet50_tv.npz
"""

import argparse
import sys

from transfusion_jax import pretrained
from transfusion_jax.data.preprocess import PRESETS
from transfusion_jax.pretrained.common import ARCHITECTURES, SOURCES, ConversionError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m transfusion_jax.pretrained",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert a torchvision .pth or Keras .h5/.weights.h5/.keras file")
    c.add_argument("--source", required=True, choices=SOURCES)
    c.add_argument("--arch", required=True, choices=ARCHITECTURES)
    c.add_argument(
        "--preprocessing",
        choices=sorted(PRESETS),
        default=None,
        help="input convention to record (default: the one the source's ImageNet weights use)",
    )
    c.add_argument("input")
    c.add_argument("output", help="converted checkpoint (.npz)")
    i = sub.add_parser("inspect", help="print a converted checkpoint's metadata, per-block counts and shapes")
    i.add_argument("path")
    i.add_argument("--no-shapes", action="store_true", help="omit the per-leaf shape listing")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            variables, metadata = pretrained.convert(
                args.source, args.arch, args.input, args.output, args.preprocessing
            )
            print(f"wrote {args.output}")
            print(pretrained.describe(variables, metadata, shapes=False))
        else:
            variables, metadata = pretrained.load(args.path)
            print(pretrained.describe(variables, metadata, shapes=not args.no_shapes))
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
