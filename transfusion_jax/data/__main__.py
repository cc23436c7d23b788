"""`python -m transfusion_jax.data generate ...`, `... prepare ...` and `... resize ...` (see the package docstring)."""

import argparse
import logging
import sys

from transfusion_jax.data import generate, pipeline, prepare, resized


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
    rsz = commands.add_parser(
        "resize",
        help="write a resized copy of a dataset (ArrayRecord) that training reads as config.data.name=resized",
        description=resized.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsz.add_argument("out", help="output folder (must not hold a finished copy)")
    rsz.add_argument("--name", required=True, help="the reader, as config.data.name (e.g. retina_folder)")
    rsz.add_argument("--root", default="", help="config.data.root of the reader")
    rsz.add_argument("--data_dir", default="", help="config.data.data_dir (TFDS readers)")
    rsz.add_argument("--tfds_config", default="btgraham-300", help="config.data.tfds_config (retina_tfds)")
    rsz.add_argument("--tfds_name", default="", help="config.data.tfds_name (tfds_classification)")
    rsz.add_argument("--frontal_only", action="store_true", help="CheXpert: copy frontal views only")
    rsz.add_argument("--splits", default="train", help="comma-separated split names, slices allowed (train[:90%%])")
    rsz.add_argument("--size", type=int, default=0, help="side in pixels; 0 = the paper's (587 Retina, 224 CheXpert)")
    rsz.add_argument("--resize_mode", default="", help="center_crop / squash; '' = as training (by family)")
    rsz.add_argument("--format", choices=resized.ENCODINGS, default="jpeg", help="image encoding (png: lossless)")
    rsz.add_argument("--quality", type=int, default=95, help="JPEG quality")
    rsz.add_argument("--workers", type=int, default=4, help="decoding threads")
    rsz.add_argument("--on_bad_image", choices=("raise", "skip"), default="raise")
    rsz.add_argument("--records_per_shard", type=int, default=1024)
    args = parser.parse_args(argv)
    if args.command == "resize":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(resize(args))
        return 0
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


def resize(args) -> str:
    """Reads each split through its reader (Retina as five_class, to keep the grades) and writes the copy."""
    if args.name == "resized":
        raise ValueError("--name resized: the source is already a resized copy")
    c = pipeline.default_data_config()
    c.update(
        dict(
            name=args.name,
            root=args.root,
            data_dir=args.data_dir,
            tfds_config=args.tfds_config,
            tfds_name=args.tfds_name,
            frontal_only=args.frontal_only,
            image_size=args.size,
            resize_mode=args.resize_mode,
            retina_target="five_class",
            num_workers=0,
        )
    )
    family = "retina" if "retina" in args.name else "chexpert" if "chexpert" in args.name else "classification"
    splits = {}
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        dataset = pipeline.build_dataset(c, split, train=False)
        splits[split] = (dataset.source, dataset.indices)
    resized.write(
        args.out,
        splits,
        family=family,
        label_names=dataset.task.label_names if family == "classification" else (),
        task_name=dataset.task.name,
        size=dataset.image_size,
        resize_mode=dataset.resize_mode,
        encoding=args.format,
        quality=args.quality,
        workers=args.workers,
        on_bad_image=args.on_bad_image,
        records_per_shard=args.records_per_shard,
        provenance={k: c[k] for k in ("name", "root", "data_dir", "tfds_config", "tfds_name", "frontal_only")},
    )
    return args.out


if __name__ == "__main__":
    sys.exit(main())
