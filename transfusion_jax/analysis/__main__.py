"""Command line for the representation analyses.

  similarity A.npy B.npy --method svcca --keep 0.99   one JSON object on stdout (score, coefficients/weights);
      the .npy files are memory-mapped and streamed in row batches, so files larger than memory work.
  fig2 --rand RUN [RUN ...] --imnet RUN [RUN ...] [--layers L1,L2] --out DIR   CCA(Rand, ImNet) vs CCA(Rand, Rand)
  fig3 --runs RUN [RUN ...] --out DIR      per-layer similarity of each run to its own initialisation
  fig4 --runs RUN [RUN ...] --out DIR      per pair of runs: similarity at init vs after training, r and R²
  weights --runs RUN [RUN ...] --out DIR   relative weight change per block
The run subcommands read finished training workdirs (config.json, pretrained.npz, summary.json; see
transfusion_jax.experiments.run_weights), compare activations on the first run's eval images, and write
DIR/<name>.json and DIR/<name>.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
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
    for name, help_text in (
        ("fig2", "CCA(Rand, ImNet) vs CCA(Rand, Rand) of the top layers (paper Fig. 2)"),
        ("fig3", "per-layer similarity of each run to its own initialisation (paper Fig. 3)"),
        ("fig4", "similarity at init vs after training, per pair of runs (paper Fig. 4)"),
        ("weights", "relative weight change ||W_T - W_0|| / ||W_0|| per block (paper 5.3)"),
    ):
        run = sub.add_parser(name, help=help_text)
        if name == "fig2":
            run.add_argument("--rand", type=Path, nargs="+", required=True, help="runs trained from random init")
            run.add_argument("--imnet", type=Path, nargs="+", required=True, help="runs trained from pretrained")
            run.add_argument(
                "--layers",
                type=lambda t: [x for x in t.split(",") if x],
                default=None,
                help="comma-separated layers (default: the top two blocks)",
            )
        else:
            run.add_argument("--runs", type=Path, nargs="+", required=True, help="training workdirs")
        run.add_argument("--out", type=Path, required=True, help="folder for the JSON and PNG")
        if name != "weights":
            run.add_argument("--method", choices=similarity.METHODS, default="svcca")
            run.add_argument("--max-images", type=int, default=512, help="eval images compared (first run's)")
            run.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
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
    allowed = {"cca": {"epsilon"}, "pwcca": {"epsilon"}, "svcca": {"keep"}, "cka": {"debiased"}}[args.method]
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


RUN_FILES = ("config.json", "pretrained.npz", "summary.json")


def _load_runs(paths: list[Path], parser) -> list:
    """RunWeights of each finished workdir; all must share one architecture (activations go through one apply)."""
    from transfusion_jax.experiments import run_weights

    for path in paths:
        if not path.is_dir():
            parser.error(f"run {path} is not a directory: pass training workdirs")
        missing = [name for name in RUN_FILES if not (path / name).is_file()]
        if missing:
            parser.error(
                f"run {path} is not a finished training workdir: missing {', '.join(missing)} "
                "(train to the end with --config.export_pretrained=True)"
            )
    loaded = [run_weights.RunWeights(str(path)) for path in paths]
    first = loaded[0].config.model.to_dict()
    for path, run in zip(paths[1:], loaded[1:]):
        if run.config.model.to_dict() != first:
            parser.error(
                f"run {path} has model {run.config.model.to_dict()} but {paths[0]} has {first}: "
                "compare runs of the same architecture"
            )
    return loaded


def _batches(run, args) -> list:
    from transfusion_jax.experiments import run_weights

    return run_weights.eval_batches(run.config, args.batch_size, args.max_images)


def _label(path: Path) -> str:
    return os.path.join(*path.resolve().parts[-3:])


def _write_json(out: Path, name: str, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


def _fig2(args, parser) -> int:
    from transfusion_jax.analysis import paper

    rand, imnet = _load_runs(args.rand, parser), _load_runs(args.imnet, parser)
    if rand[0].config.model.to_dict() != imnet[0].config.model.to_dict():
        parser.error(
            f"--rand runs are {rand[0].config.model.to_dict()} but --imnet runs are "
            f"{imnet[0].config.model.to_dict()}: compare runs of the same architecture"
        )
    layers = args.layers or list(rand[0].blocks[-2:])
    if len(rand) < 2:
        print("note: one --rand run, so no CCA(Rand, Rand) pair", file=sys.stderr)
    batches = _batches(rand[0], args)
    groups = {
        "rand_imnet": [(a, b) for a in range(len(args.rand)) for b in range(len(args.imnet))],
        "rand_rand": list(itertools.combinations(range(len(args.rand)), 2)),
    }
    result = {
        "analysis": "fig2",
        "method": args.method,
        "layers": layers,
        "num_images": int(sum(len(b) for b in batches)),
        "rand_imnet": [],
        "rand_rand": [],
    }
    for group, index_pairs in groups.items():
        other = imnet if group == "rand_imnet" else rand
        other_paths = args.imnet if group == "rand_imnet" else args.rand
        for a, b in index_pairs:
            r = paper.top_layers_similarity(
                rand[a].apply, rand[a].final(), other[b].final(), batches, layers, method=args.method
            )
            result[group].append(
                {
                    "runs": [str(args.rand[a]), str(other_paths[b])],
                    "mean": r["mean"],
                    "per_layer": {k: v["score"] for k, v in r["per_layer"].items()},
                }
            )
    _write_json(args.out, "fig2", result)
    _strip_plot(
        {
            "CCA(Rand, ImNet)": [p["mean"] for p in result["rand_imnet"]],
            "CCA(Rand, Rand)": [p["mean"] for p in result["rand_rand"]],
        },
        args.out / "fig2.png",
        f"{args.method} similarity, mean of {', '.join(layers)}",
    )
    return 0


def _fig3(args, parser) -> int:
    from transfusion_jax.analysis import paper
    from transfusion_jax.experiments import plots

    loaded = _load_runs(args.runs, parser)
    batches = _batches(loaded[0], args)
    result = {"analysis": "fig3", "method": args.method, "num_images": int(sum(len(b) for b in batches)), "runs": {}}
    for path, run in zip(args.runs, loaded):
        r = paper.similarity_to_init(
            run.apply, run.initial(), run.final(), batches, list(run.blocks), method=args.method
        )
        result["runs"][str(path)] = {
            "similarity": {k: v["score"] for k, v in r["similarity"].items()},
            "relative_weight_change": r["relative_weight_change"],
        }
    _write_json(args.out, "fig3", result)
    plots.grouped_bars(
        {_label(Path(p)): v["similarity"] for p, v in result["runs"].items()},
        str(args.out / "fig3.png"),
        f"{args.method} similarity to init",
        "Similarity to init",
    )
    return 0


def _fig4(args, parser) -> int:
    from transfusion_jax.analysis import paper

    if len(args.runs) < 2:
        parser.error("fig4 compares pairs of runs: give at least two --runs")
    loaded = _load_runs(args.runs, parser)
    batches = _batches(loaded[0], args)
    index_pairs = list(itertools.combinations(range(len(loaded)), 2))
    ends = [(run.initial(), run.final()) for run in loaded]  # initial() re-runs the init: once per run
    pairs = [(ends[a], ends[b]) for a, b in index_pairs]
    result = paper.init_vs_final_correlation(
        loaded[0].apply, pairs, batches, list(loaded[0].blocks), method=args.method
    )
    result["pairs"] = [[str(args.runs[a]), str(args.runs[b])] for a, b in index_pairs]
    result["num_images"] = int(sum(len(b) for b in batches))
    _write_json(args.out, "fig4", result)
    _scatter(result, args.out / "fig4.png")
    return 0


def _weights(args, parser) -> int:
    from transfusion_jax.analysis import weights
    from transfusion_jax.experiments import plots

    loaded = _load_runs(args.runs, parser)
    result = {
        "analysis": "weights",
        "runs": {
            str(path): weights.relative_weight_change(run.initial()["params"], run.final()["params"])
            for path, run in zip(args.runs, loaded)
        },
    }
    _write_json(args.out, "weights", result)
    plots.grouped_bars(
        {_label(Path(p)): v for p, v in result["runs"].items()},
        str(args.out / "weights.png"),
        "||W_T - W_0|| / ||W_0||",
        "Relative weight change per block",
    )
    return 0


def _save_png(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # headless: no pyplot state
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _strip_plot(groups: dict, path: Path, ylabel: str) -> None:
    """Each group's values as points over a box (few points per group, so every one is shown)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    names = list(groups)
    ax.boxplot([groups[n] if groups[n] else [np.nan] for n in names], widths=0.5)
    for i, name in enumerate(names, 1):
        ax.plot(np.full(len(groups[name]), i), groups[name], "o", alpha=0.7)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(groups[n])})" for n in names])
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    _save_png(fig, path)


def _scatter(result: dict, path: Path) -> None:
    """One panel per layer: similarity at init (x) vs after training (y), R² in the title."""
    from matplotlib.figure import Figure

    layers = result["layers"]
    fig = Figure(figsize=(3 * len(layers), 3.2))
    for i, name in enumerate(layers):
        ax = fig.add_subplot(1, len(layers), i + 1)
        layer = result["per_layer"][name]
        points = np.asarray(layer["points"], np.float64)
        ax.plot(points[:, 0], points[:, 1], "o")
        ax.set_title(f"{name}: R² = {layer['r2']:.2f}" if np.isfinite(layer["r2"]) else f"{name}: R² n/a")
        ax.set_xlabel(f"{result['method']} at init")
        if i == 0:
            ax.set_ylabel(f"{result['method']} after training")
        ax.grid(alpha=0.3)
    _save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "similarity":
        return _similarity_command(args, parser)
    command = {"fig2": _fig2, "fig3": _fig3, "fig4": _fig4, "weights": _weights}[args.command]
    try:
        return command(args, parser)
    except ValueError as err:  # e.g. a --layers name the model does not have, too few images for the method
        parser.error(str(err))


if __name__ == "__main__":
    sys.exit(main())
