"""`python -m transfusion_jax.data generate ...` and `... prepare ...` (see the package docstring)."""

import argparse
import sys

from transfusion_jax.data import generate, prepare


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m transfusion_jax.data")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser(
        "generate",
        help="write a miniature dataset in a real on-disk format",
        description=generate.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("format", choices=sorted(generate.WRITERS))
    gen.add_argument("out", help="output folder")
    gen.add_argument("--num", type=int, required=True, help="number of train images")
    gen.add_argument("--num_eval", type=int, default=None, help="valid / test images (default: a fraction of num)")
    gen.add_argument("--size", type=int, default=None, help="image side in pixels (default 96; source 64)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--num_classes", type=int, default=10, help="source only")
    gen.add_argument("--kind", choices=generate.SOURCE_KINDS, default=None, help="source only (default shapes)")
    gen.add_argument(
        "--lesions", choices=sorted(generate.RETINA_LESIONS), default=None, help="kaggle_dr / tfds_dr_manual only"
    )
    prep = commands.add_parser(
        "prepare",
        help="prepare a TFDS builder to ArrayRecord",
        description=prepare.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prep.add_argument("name", help="chexpert or diabetic_retinopathy_detection/{original,1M,250K,btgraham-300}")
    prep.add_argument("--manual_dir", required=True)
    prep.add_argument("--data_dir", required=True)
    prep.add_argument(
        "--tensorflow",
        choices=["auto", "yes", "no"],
        default="auto",
        help="use the official builder with TensorFlow (auto: when installed)",
    )
    args = parser.parse_args(argv)
    if args.command == "generate":
        kwargs = dict(num=args.num, seed=args.seed)
        if args.size:
            kwargs["size"] = args.size
        if args.format == "source":
            kwargs["num_classes"] = args.num_classes
        for name, formats in (("kind", ("source",)), ("lesions", ("kaggle_dr", "tfds_dr_manual"))):
            if getattr(args, name) is not None:
                if args.format not in formats:
                    parser.error(f"--{name} does not apply to {args.format}")
                kwargs[name] = getattr(args, name)
        eval_arg = {"chexpert": "num_valid", "tfds_dr_manual": "num_test", "source": "num_test"}.get(args.format)
        if args.num_eval is not None:
            if eval_arg is None:
                parser.error(f"--num_eval does not apply to {args.format} (it has only a train split)")
            kwargs[eval_arg] = args.num_eval
        print(generate.WRITERS[args.format](args.out, **kwargs))
    else:
        use_tf = {"auto": None, "yes": True, "no": False}[args.tensorflow]
        print(prepare.prepare(args.name, args.manual_dir, args.data_dir, use_tensorflow=use_tf))
    return 0


if __name__ == "__main__":
    sys.exit(main())
