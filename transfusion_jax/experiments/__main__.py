"""`python -m transfusion_jax.experiments {study,sweep,report,fig2,fig3,fig4,weights,filters,gabor-png,probes,
resilience,interpolate,sanity,calibration,reuse}`.

  study   --workdir DIR [--scale | --mini] [--rebuild_sources] [--config.FIELD=VALUE ...]
          the miniature study (docs/study.md), exactly as `python -m transfusion_jax.experiments.quickstart`

  sweep   --config configs/retina.py --models resnet50,cbr_small --inits random,transfer --seeds 0,1,2
          --workdir ROOT [--pretrained PATH | --pretrained resnet50=a.npz,cbr_small=b.npz] [--local]
          [--config.data.root=/data/kaggle_dr ...] [--max_runs_per_program N] [--programs_at_once P]
          runs every (model, init, seed) under ROOT/<config stem>/<model>/<init>/seed_<k>, skipping finished ones;
          runs of one model (any init, seed) train stacked as one program, at most N together (0: all; 1: alone),
          P programs side by side (default 1; 2 keeps both cores of a 2-core CPU busy with small models)
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

Beyond the paper (transfusion_jax.experiments.instruments; the same JSON + PNG, named by --name, default the
analysis; --out ROOT/analyses puts them in the sweep's report):
  probes      --runs RUN ... [--k 20] [--probes knn,linear] [--max-train N]   k-NN and linear probe AUC per block, at
              init and final, fitted on the training split, scored on the validation split
  resilience  --runs RUN ... [--reference init|random]     per block: metrics with that block reset, on validation
  interpolate --a RUN --b RUN [--alphas 0,0.1,...,1] [--bn-batches 16]   loss and AUC along the path, barrier
  sanity      --runs RUN RUN [--layers L1,L2] [--ks 1,2,4,8] | --npy A.npy B.npy   Ding et al.'s sanity table
  calibration --runs RUN ... [--when selected|final] [--bins N]   reliability diagrams and ECE of the test scores
  reuse       ROOT [--out ROOT/analyses]    gain of transfer over random and the share due to feature reuse
probes, resilience and interpolate take --split test to report on the test split instead (never to choose).

The quickstart (everything on built-in data, CPU) is `python -m transfusion_jax.experiments.quickstart --workdir DIR`.
`--config.FIELD=VALUE` arguments (sweep, study) are parsed by ml_collections (`config_lib.apply_flags`).
"""

import argparse
import os
import sys

import numpy as np

from transfusion_jax.analysis import interpolation, probes
from transfusion_jax.analysis.similarity import METHODS
from transfusion_jax.experiments import figures, instruments, report, run_weights, sweep
from transfusion_jax.experiments.study import run as study_run
from transfusion_jax.surgery.gabor_filters import gabor_bank
from transfusion_jax.train import batch_stats

FIGURES = {
    "fig2": "CCA(Rand, ImNet) vs CCA(Rand, Rand) of the top layers (paper Fig. 2)",
    "fig3": "per-layer similarity of each run to its own initialisation (paper Fig. 3)",
    "fig4": "similarity at init vs after training, per pair of runs (paper Fig. 4)",
    "weights": "relative weight change ||W_T - W_0|| / ||W_0|| per block (paper 5.3)",
    "filters": "conv1 filters at init and after training (paper Fig. 5)",
}


def _list(text: str):
    return [t for t in text.split(",") if t]


def _numbers(kind):
    def parse(text: str):
        try:
            return [kind(t) for t in _list(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None

    return parse


INSTRUMENTS = {
    "probes": "k-NN and linear probe AUC per block at init and after training (fit: train, score: validation)",
    "resilience": "per block: the run's validation metrics with that block reset to init or a random draw",
    "interpolate": "loss and AUC along the line between two runs' final weights (BN recomputed); barrier",
    "sanity": "Ding et al.'s sanity table: seed-to-seed distance, its null, top principal components removed",
    "calibration": "reliability diagrams, ECE and AUC of each run's test scores",
    "reuse": "feature-reuse decomposition of a sweep: gain of transfer over random, share due to reuse",
}


def _instrument_parsers(sub) -> None:
    for name, help_text in INSTRUMENTS.items():
        p = sub.add_parser(name, help=help_text)
        if name == "reuse":
            p.add_argument("root", help="sweep root (ROOT/<group>/<model>/<init>/seed_<k>)")
            p.add_argument("--out", default="", help="folder for the JSON and PNG (default ROOT/analyses)")
        else:
            p.add_argument("--out", required=True, help="folder for the JSON and PNG (ROOT/analyses: in the report)")
        p.add_argument("--name", default="", help="file stem of the JSON and PNG (default: the analysis)")
        if name == "interpolate":
            p.add_argument("--a", required=True, help="training workdir of one end (alpha = 0)")
            p.add_argument("--b", required=True, help="training workdir of the other end (alpha = 1)")
            default = ",".join(f"{a:g}" for a in interpolation.DEFAULT_ALPHAS)
            p.add_argument("--alphas", type=_numbers(float), default=list(interpolation.DEFAULT_ALPHAS),
                           help=f"grid from 0 to 1 (default {default})")  # fmt: skip
            p.add_argument("--bn-batches", type=int, default=batch_stats.DEFAULT_BN_BATCHES,
                           help="training batches the BN statistics are recomputed from at each alpha")  # fmt: skip
        elif name == "sanity":
            p.add_argument("--runs", nargs="+", help="two training workdirs: two seeds of one setup")
            p.add_argument("--npy", nargs=2, metavar=("A.npy", "B.npy"), help="or two (examples, features) arrays")
            p.add_argument("--layers", type=_list, default=None, help="comma-separated (default: top two blocks)")
            p.add_argument("--ks", type=_numbers(int), default=[1, 2, 4, 8], help="principal components removed")
            p.add_argument("--max-images", type=int, default=512, help="eval images (first run's)")
            p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
        elif name != "reuse":
            p.add_argument("--runs", nargs="+", required=True, help="training workdirs")
        if name in ("probes", "resilience", "interpolate"):
            p.add_argument("--split", choices=instruments.SPLITS, default="val",
                           help="split reported on (default val; test is reported, never used to choose)")  # fmt: skip
        if name == "probes":
            p.add_argument("--k", type=int, default=probes.DEFAULT_K, help="neighbours of the k-NN probe")
            p.add_argument("--probes", type=_list, default=list(probes.PROBES), help="knn,linear")
            p.add_argument("--max-train", type=int, default=0,
                           help="fit on a stratified subset of this many training examples (0: all)")  # fmt: skip
            p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
        elif name == "resilience":
            p.add_argument("--reference", choices=("init", "random"), default="init",
                           help="reset each block to the run's init or to a fresh random draw")  # fmt: skip
            p.add_argument("--draw-seed", type=int, default=instruments.RANDOM_DRAW_SEED,
                           help="--reference random: key(draw_seed) folded with the run's seed")  # fmt: skip
        elif name == "calibration":
            p.add_argument("--when", choices=("selected", "final"), default="selected",
                           help="the validation-selected step or the final step")  # fmt: skip
            p.add_argument("--bins", type=int, default=0, help="equal-mass bins (0: the run's calibration_bins)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m transfusion_jax.experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    study_run.add_arguments(sub.add_parser("study", help="the miniature study on generated data (the quickstart)"))
    s = sub.add_parser("sweep", help="run models x inits x seeds of a config file (resumable)")
    s.add_argument("--config", required=True, help="configs/*.py file, e.g. configs/retina.py")
    s.add_argument("--models", required=True, type=_list)
    s.add_argument("--inits", required=True, type=_list)
    s.add_argument("--seeds", default=[0, 1, 2], type=lambda t: [int(x) for x in _list(t)])
    s.add_argument("--workdir", required=True, help="sweep root")
    s.add_argument("--pretrained", default="", help="checkpoint for every model, or model=path,model=path")
    s.add_argument("--local", action="store_true", help="the configs' CPU-sized ',local' variant")
    s.add_argument(
        "--max_runs_per_program",
        type=int,
        default=0,
        help="compatible runs (one model and recipe) train stacked as one program, at most this many together "
        "(0 = no limit; 1 = one run at a time); bounds memory",
    )
    s.add_argument(
        "--programs_at_once",
        type=int,
        default=1,
        help="programs trained side by side, one thread each (same numbers; uses cores one program leaves idle)",
    )
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
    _instrument_parsers(sub)
    g = sub.add_parser("gabor-png", help="write the synthetic Gabor bank of init='gabor' as a PNG grid")
    g.add_argument("out", help="output .png path")
    g.add_argument("--size", type=int, default=7, help="kernel size k (ResNet-50 conv1: 7)")
    g.add_argument("--num", type=int, default=64, help="number of filters (ResNet-50 conv1: 64)")
    g.add_argument("--scale", type=int, default=8, help="screen pixels per kernel pixel")
    return parser


def _sweep(args, config_flags) -> int:
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
        config_flags=config_flags,
        max_runs_per_program=args.max_runs_per_program,
        programs_at_once=args.programs_at_once,
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


def _instrument(args, parser) -> str:
    """Computes and saves one instrument's analysis; returns what it wrote."""
    out = args.out
    if args.command == "reuse":
        result = instruments.reuse_decomposition(report.collect(args.root))
        if not result["rows"]:
            raise FileNotFoundError(
                f"no (group, model) under {args.root!r} has finished transfer, mean_var and random runs"
            )
        out = out or os.path.join(args.root, "analyses")
    elif args.command == "calibration":
        result = instruments.calibration_runs(args.runs, when=args.when, bins=args.bins)
    elif args.command == "sanity":
        if bool(args.runs) == bool(args.npy):
            parser.error("sanity takes either --runs RUN RUN or --npy A.npy B.npy")
        if args.npy:
            arrays = [np.load(path) for path in args.npy]
            result = instruments.sanity_arrays(*arrays, args.npy, ks=args.ks)
        else:
            if len(args.runs) != 2:
                parser.error(f"sanity --runs takes two runs (two seeds), got {len(args.runs)}")
            a, b = run_weights.load_runs(args.runs)
            batches = run_weights.eval_batches(a.config, args.batch_size, args.max_images)
            result = instruments.sanity_runs(a, b, batches, args.layers or list(a.blocks[-2:]), ks=args.ks)
    elif args.command == "interpolate":
        a, b = run_weights.load_runs([args.a, args.b])
        result = instruments.interpolate_runs(a, b, alphas=args.alphas, split=args.split, bn_batches=args.bn_batches)
    else:
        loaded = run_weights.load_runs(args.runs)
        if args.command == "probes":
            result = instruments.probe_runs(
                loaded, split=args.split, k=args.k, kinds=args.probes, max_train=args.max_train,
                batch_size=args.batch_size,
            )  # fmt: skip
        else:
            result = instruments.resilience_runs(
                loaded, reference=args.reference, split=args.split, draw_seed=args.draw_seed
            )
    return ", ".join(figures.save(result, out, args.name or None))


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
    parser = _parser()
    if argv[:1] == ["study"]:
        return study_run.main(parser, argv)
    args, config_flags = parser.parse_known_args(argv)  # `--config.*` flags are left for ml_collections
    if args.command == "sweep":
        return _sweep(args, config_flags)
    if config_flags:
        parser.error(f"unrecognized arguments: {' '.join(config_flags)} (--config.* apply to 'sweep' and 'study')")
    if args.command == "report":
        return _report(args)
    if args.command == "gabor-png":
        return _gabor_png(args, parser)
    try:
        print(f"wrote {_instrument(args, parser) if args.command in INSTRUMENTS else _figure(args)}")
    except (FileNotFoundError, ValueError) as err:  # a run that is not finished, a layer it lacks, too few images
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
