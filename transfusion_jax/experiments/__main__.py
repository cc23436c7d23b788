"""`python -m transfusion_jax.experiments {sweep,report,fig2,fig3,fig4,weights,filters,gabor-png}`.

  sweep   --config configs/retina.py --models resnet50,cbr_small --inits random,transfer --seeds 0,1,2
          --workdir ROOT [--pretrained PATH | --pretrained resnet50=a.npz,cbr_small=b.npz] [--local]
          [--config.data.root=/data/kaggle_dr ...]
          runs every (model, init, seed) under ROOT/<config stem>/<model>/<init>/seed_<k>, skipping finished ones
  report  ROOT [--out ROOT/report.md]: the paper's tables from every finished run under ROOT
  fig2    --rand RUN [RUN ...] --imnet RUN [RUN ...] [--layers L1,L2] --out DIR   CCA(Rand, ImNet) vs CCA(Rand, Rand)
  fig3    --runs RUN [RUN ...] --out DIR      per-layer similarity of each run to its own initialisation
  fig4    --runs RUN [RUN ...] --out DIR      per pair of runs: similarity at init vs after training, r and R²
  weights --runs RUN [RUN ...] --out DIR      relative weight change per block
  filters --runs RUN [RUN ...] --out DIR      conv1 filters of each run at init and after training (Fig. 5)
  gabor-png OUT.png [--size 7 --num 64]       the synthetic Gabor bank init='gabor' uses, as the paper shows it
The figure subcommands read finished training workdirs (config.json, init.npz, pretrained.npz, summary.json; train
with --config.export_pretrained=True), compare activations on the first run's eval images, and write DIR/<name>.json
and DIR/<name>.png (transfusion_jax.experiments.figures).

The quickstart (everything on built-in data, CPU) is `python -m transfusion_jax.experiments.quickstart --workdir DIR`.
"""

import argparse
import sys

from transfusion_jax.analysis.similarity import METHODS
from transfusion_jax.experiments import figures, report, run_weights, sweep
from transfusion_jax.surgery.gabor_filters import gabor_bank

FIGURES = {
    "fig2": "CCA(Rand, ImNet) vs CCA(Rand, Rand) of the top layers (paper Fig. 2)",
    "fig3": "per-layer similarity of each run to its own initialisation (paper Fig. 3)",
    "fig4": "similarity at init vs after training, per pair of runs (paper Fig. 4)",
    "weights": "relative weight change ||W_T - W_0|| / ||W_0|| per block (paper 5.3)",
    "filters": "conv1 filters at init and after training (paper Fig. 5)",
}


def _list(text: str):
    return [t for t in text.split(",") if t]


def _parser() -> argparse.ArgumentParser:
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
    for name, help_text in FIGURES.items():
        run = sub.add_parser(name, help=help_text)
        if name == "fig2":
            run.add_argument("--rand", nargs="+", required=True, help="runs trained from random init")
            run.add_argument("--imnet", nargs="+", required=True, help="runs trained from pretrained")
            run.add_argument("--layers", type=_list, default=None, help="comma-separated (default: top two blocks)")
        else:
            run.add_argument("--runs", nargs="+", required=True, help="training workdirs")
        run.add_argument("--out", required=True, help="folder for the JSON and PNG")
        if name in ("fig2", "fig3", "fig4"):
            run.add_argument("--method", choices=METHODS, default="svcca")
            run.add_argument("--max-images", type=int, default=512, help="eval images compared (first run's)")
            run.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    g = sub.add_parser("gabor-png", help="write the synthetic Gabor bank of init='gabor' as a PNG grid")
    g.add_argument("out", help="output .png path")
    g.add_argument("--size", type=int, default=7, help="kernel size k (ResNet-50 conv1: 7)")
    g.add_argument("--num", type=int, default=64, help="number of filters (ResNet-50 conv1: 64)")
    g.add_argument("--scale", type=int, default=8, help="screen pixels per kernel pixel")
    return parser


def _sweep(args, overrides) -> int:
    from transfusion_jax.train import compile_cache  # noqa: PLC0415  (the other commands need no JAX)

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


def _report(args) -> int:
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


def _figure(args) -> str:
    """Computes and saves one figure; returns what it wrote."""
    if args.command == "fig2":
        loaded = run_weights.load_runs(args.rand + args.imnet)  # one architecture across both groups
        rand, imnet = loaded[: len(args.rand)], loaded[len(args.rand) :]
        if len(rand) < 2:
            print("note: one --rand run, so no CCA(Rand, Rand) pair", file=sys.stderr)
        layers = args.layers or list(rand[0].blocks[-2:])
        batches = run_weights.eval_batches(rand[0].config, args.batch_size, args.max_images)
        result = figures.fig2(figures.all_pairs(rand, imnet), batches, layers, method=args.method)
    else:
        runs = run_weights.load_runs(args.runs)
        if args.command == "filters":
            paths = [figures.conv1_filters(run, args.out, f"filters_{i}") for i, run in enumerate(runs)]
            return ", ".join(p for pair in paths for p in pair.values())
        if args.command == "weights":
            result = figures.weight_change(runs)
        else:
            batches = run_weights.eval_batches(runs[0].config, args.batch_size, args.max_images)
            analysis = figures.fig3 if args.command == "fig3" else figures.fig4
            result = analysis(runs, batches, method=args.method)
    return ", ".join(figures.save(result, args.out))


def _gabor_png(args, parser) -> int:
    if args.size < 1 or args.num < 1:
        parser.error(f"--size and --num must be >= 1 (got {args.size}, {args.num})")
    panels = 2 if args.num >= 16 and args.num % 2 == 0 else 1  # low and high frequencies, as the paper shows them
    image = figures.filter_grid(
        gabor_bank((args.size, args.size, 3, args.num)), args.out, panels=panels, scale=args.scale
    )
    height, width = image.shape[:2]
    print(f"Wrote {args.out}: {args.num} Gabor filters of {args.size}x{args.size}, {width}x{height} px")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a[len("--config.") :] for a in argv if a.startswith("--config.")]
    argv = [a for a in argv if not a.startswith("--config.")]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "sweep":
        return _sweep(args, overrides)
    if overrides:
        parser.error(f"--config.* overrides only apply to 'sweep', got {overrides}")
    if args.command == "report":
        return _report(args)
    if args.command == "gabor-png":
        return _gabor_png(args, parser)
    try:
        print(f"wrote {_figure(args)}")
    except (FileNotFoundError, ValueError) as err:  # a run that is not finished, a layer it lacks, too few images
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
