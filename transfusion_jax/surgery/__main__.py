"""Command line: `python -m transfusion_jax.surgery gabor-png OUT.png [--size 7 --num 64]`.

Draws the synthetic Gabor bank used by init='gabor' as the paper shows it: 8 per row, two panels (low and high
frequencies) when the bank holds at least 16 filters in an even count.
"""

import argparse

from transfusion_jax.analysis.filters import save_filter_grid
from transfusion_jax.surgery.gabor_filters import gabor_bank


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m transfusion_jax.surgery")
    sub = parser.add_subparsers(dest="command", required=True)
    png = sub.add_parser("gabor-png", help="write the synthetic Gabor bank as a PNG grid")
    png.add_argument("out", help="output .png path")
    png.add_argument("--size", type=int, default=7, help="kernel size k (ResNet-50 conv1: 7)")
    png.add_argument("--num", type=int, default=64, help="number of filters (ResNet-50 conv1: 64)")
    png.add_argument("--scale", type=int, default=8, help="screen pixels per kernel pixel")
    args = parser.parse_args(argv)
    if args.size < 1 or args.num < 1:
        parser.error(f"--size and --num must be >= 1 (got {args.size}, {args.num})")
    panels = 2 if args.num >= 16 and args.num % 2 == 0 else 1
    image = save_filter_grid(gabor_bank((args.size, args.size, 3, args.num)), args.out, panels=panels, scale=args.scale)
    height, width = image.shape[:2]
    print(f"Wrote {args.out}: {args.num} Gabor filters of {args.size}x{args.size}, {width}x{height} px")


if __name__ == "__main__":
    main()
