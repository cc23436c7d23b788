"""`python -m transfusion_jax.experiments {sweep,report}`.

  sweep   --config configs/retina.py --models resnet50,cbr_small --inits random,transfer --seeds 0,1,2
          --workdir ROOT [--pretrained PATH | --pretrained resnet50=a.npz,cbr_small=b.npz] [--local]
          [--config.data.root=/data/kaggle_dr ...]
          runs every (model, init, seed) under ROOT/<config stem>/<model>/<init>/seed_<k>, skipping finished ones
  report  ROOT [--out ROOT/report.md]: the paper's tables from every finished run under ROOT

The quickstart (everything on built-in data, CPU) is `python -m transfusion_jax.experiments.quickstart --workdir DIR`.
"""

import argparse
import sys

from transfusion_jax.experiments import report, sweep


def _list(text: str):
    return [t for t in text.split(",") if t]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a[len("--config.") :] for a in argv if a.startswith("--config.")]
    argv = [a for a in argv if not a.startswith("--config.")]
    parser = argparse.ArgumentParser(
        prog="python -m transfusion_jax.experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="run models x inits x seeds of a config file (resumable)")
    s.add_argument("--config", required=True, help="configs/*.py file, e.g. configs/retina.py")
    s.add_argument("--models", required=True, type=_list)
    s.add_argument("--inits", required=True, type=_list)
    s.add_argument("--seeds", default=[0, 1, 2], type=lambda t: [int(x) for x in _list(t)])
    s.add_argument("--workdir", required=True, help="sweep root")
    s.add_argument("--pretrained", default="", help="checkpoint for every model, or model=path,model=path")
    s.add_argument("--local", action="store_true", help="the configs' CPU-sized ',local' variant")
    r = sub.add_parser("report", help="aggregate finished runs into the paper's tables")
    r.add_argument("root")
    r.add_argument("--out", default="", help="also write the Markdown here")
    args = parser.parse_args(argv)
    if args.command == "sweep":
        from transfusion_jax.train import compile_cache  # noqa: PLC0415  (the report command needs no JAX)

        compile_cache.enable()  # each distinct program of the sweep compiles once, across processes too
        records = sweep.sweep(
            args.config,
            args.models,
            args.inits,
            args.seeds,
            args.workdir,
            local=args.local,
            pretrained=args.pretrained,
            overrides=overrides,
        )
        failed = [r for r in records if r["status"] == "failed"]
        print(
            f"{len(records) - len(failed)} of {len(records)} runs finished; "
            f"`python -m transfusion_jax.experiments report {args.workdir}` for the tables."
        )
        return 1 if failed else 0
    if overrides:
        parser.error(f"--config.* overrides only apply to 'sweep', got {overrides}")
    try:
        text = report.render(args.root)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
