"""The paper's figures from finished runs: one home for the command line, the quickstart and the notebooks.

Analyses of runs (`run_weights.RunWeights`), each a JSON-ready dict named by its "analysis" field:
  fig2            Fig. 2: per pair of runs, similarity of the top layers; pairs grouped as CCA(Rand, ImNet) and
                  CCA(Rand, Rand)
  fig3            Fig. 3: each run's per-layer similarity to its own initialisation, with its weight change
  fig4            Fig. 4: per pair of runs, similarity at init vs after training, with r and R² per layer
  weight_change   relative weight change ||W_T - W_0|| / ||W_0|| per block (paper §5.3)
and the instruments beyond the paper (experiments.instruments: probes, resilience, interpolation, sanity,
calibration, reuse). `save(result, out_dir[, name])` writes `<name>.json` and the analysis's standard picture
`<name>.png` (name defaults to the analysis).

Pictures (matplotlib's object API on Agg canvases: no pyplot state, so headless and inside tests): `auc_curves`,
`grouped_bars`, `strip_plot`, `init_vs_final_scatter`, `probe_curves`, `criticality_curves`, `interpolation_path`,
`sanity_bars`, `reuse_bars`, `reliability_diagrams`, and `filter_grid` (the conv1 mosaic of paper Fig. 5, an exact
pixel image written with `imsave`).
"""

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.image
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from transfusion_jax.analysis import filters, paper, weights
from transfusion_jax.experiments.run_weights import RunWeights
from transfusion_jax.train import writer

DPI = 110


# ---------------------------------------------------------------- analyses of runs


def _scores(per_layer: Mapping) -> dict[str, float]:
    return {layer: float(v["score"]) for layer, v in per_layer.items()}


def _num_images(batches) -> int:
    return int(sum(len(b) for b in batches))


def fig2(
    pairs: Mapping[str, Sequence[tuple[RunWeights, RunWeights]]], batches, layers: Sequence[str], method="svcca"
) -> dict:
    """pairs: {'rand_imnet': [(random run, transfer run), ...], 'rand_rand': [(random run, random run), ...]}.

    Every pair is compared on the same `batches` through the first run's model; each gives its per-layer scores and
    their mean (one point of Fig. 2's violins)."""
    result = {
        "analysis": "fig2",
        "method": method,
        "layers": list(layers),
        "num_images": _num_images(batches),
        "rand_imnet": [],
        "rand_rand": [],
    }
    for group, group_pairs in pairs.items():
        for a, b in group_pairs:
            r = paper.top_layers_similarity(a.apply, a.final(), b.final(), batches, layers, method=method)
            result[group].append(
                {"runs": [a.workdir, b.workdir], "mean": r["mean"], "per_layer": _scores(r["per_layer"])}
            )
    return result


def all_pairs(rand: Sequence[RunWeights], imnet: Sequence[RunWeights]) -> dict[str, list]:
    """Fig. 2's pairs from two sets of runs: every (random, transfer) pair, every two random runs."""
    return {
        "rand_imnet": [(a, b) for a in rand for b in imnet],
        "rand_rand": list(itertools.combinations(rand, 2)),
    }


def fig3(runs: Sequence[RunWeights], batches, method="svcca", layers: Sequence[str] | None = None) -> dict:
    """Per run: similarity of each layer (default: every block) to the same layer at init, and the weight change."""
    result = {"analysis": "fig3", "method": method, "num_images": _num_images(batches), "runs": {}}
    for run in runs:
        r = paper.similarity_to_init(
            run.apply, run.initial(), run.final(), batches, list(layers or run.blocks), method=method
        )
        result["runs"][run.workdir] = {
            "similarity": _scores(r["similarity"]),
            "relative_weight_change": r["relative_weight_change"],
        }
    return result


def fig4(runs: Sequence[RunWeights], batches, method="svcca") -> dict:
    """Per pair of runs and per block: (similarity at init, similarity after training), then r and R² per block."""
    if len(runs) < 2:
        raise ValueError("fig4 compares pairs of runs: give at least two runs")
    index_pairs = list(itertools.combinations(range(len(runs)), 2))
    ends = [(run.initial(), run.final()) for run in runs]
    pairs = [(ends[a], ends[b]) for a, b in index_pairs]
    result = paper.init_vs_final_correlation(runs[0].apply, pairs, batches, list(runs[0].blocks), method=method)
    return {
        **result,
        "analysis": "fig4",
        "pairs": [[runs[a].workdir, runs[b].workdir] for a, b in index_pairs],
        "num_images": _num_images(batches),
    }


def weight_change(runs: Sequence[RunWeights]) -> dict:
    """Per run: relative weight change of each block from its saved initial weights."""
    return {
        "analysis": "weights",
        "runs": {
            run.workdir: weights.relative_weight_change(run.initial()["params"], run.final()["params"]) for run in runs
        },
    }


def label(workdir: str, parts: int = 3) -> str:
    """A short legend entry for a run: the last `parts` parts of its path (e.g. random/seed_0 under its sweep)."""
    return os.path.join(*Path(workdir).resolve().parts[-parts:])


def labels(workdirs) -> dict[str, str]:
    """workdir -> the shortest path suffix (at least 3 parts) that tells apart every run of one picture (runs of two
    sweep groups differ only in the 4th part from the end)."""
    workdirs = list(dict.fromkeys(workdirs))
    for parts in range(3, 64):
        short = {w: label(w, parts) for w in workdirs}
        if len(set(short.values())) == len(workdirs):
            return short
    return {w: str(w) for w in workdirs}


def save(result: dict, out_dir: str, name: str | None = None) -> tuple[str, str]:
    """Writes `result` as <name>.json and its standard picture as <name>.png in `out_dir` (name: the analysis unless
    given, e.g. to keep several interpolations side by side); returns both paths."""
    analysis = result["analysis"]
    if analysis not in PICTURES:
        raise ValueError(f"No picture for analysis {analysis!r}.")
    name = name or analysis
    os.makedirs(out_dir, exist_ok=True)
    json_path, png_path = os.path.join(out_dir, f"{name}.json"), os.path.join(out_dir, f"{name}.png")
    with open(json_path, "w") as f:
        f.write(writer.dumps(result, indent=2) + "\n")
    PICTURES[analysis](result, png_path)
    return json_path, png_path


def _fig2_picture(result: dict, path: str) -> str:
    groups = {
        "CCA(Rand, ImNet)": [p["mean"] for p in result["rand_imnet"]],
        "CCA(Rand, Rand)": [p["mean"] for p in result["rand_rand"]],
    }
    return strip_plot(groups, path, f"{result['method']} similarity, mean of {', '.join(result['layers'])}")


def _fig3_picture(result: dict, path: str) -> str:
    names = labels(result["runs"])
    values = {names[w]: v["similarity"] for w, v in result["runs"].items()}
    return grouped_bars(values, path, f"{result['method']} similarity to init", "Similarity to init")


def _weights_picture(result: dict, path: str) -> str:
    names = labels(result["runs"])
    values = {names[w]: v for w, v in result["runs"].items()}
    return grouped_bars(values, path, "||W_T - W_0|| / ||W_0||", "Relative weight change per block")


# ---------------------------------------------------------------- pictures


def save_figure(fig: Figure, path: str) -> str:
    """The one way figures here become PNGs: headless Agg canvas, tight layout, 110 dpi."""
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def curve_band(curves: Sequence[dict[int, float]]):
    """(steps, mean, low, high) over the steps every curve has; the band is the min-max over seeds."""
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    values = np.array([[c[s] for s in steps] for c in curves], np.float64)
    if not steps:
        return np.array([]), np.array([]), np.array([]), np.array([])
    return np.array(steps), values.mean(0), values.min(0), values.max(0)


def auc_curves(
    curves_by_init: dict[str, list[dict[int, float]]],
    path: str,
    threshold: float | None = None,
    title: str = "",
    ylabel: str = "test AUC",
    log_steps: bool = False,
) -> str:
    """AUC vs train step per init (by default the test curves of the convergence figures: the test split is reported
    at every evaluation, never used to choose): mean over seeds as a line, min-max over seeds shaded; `log_steps`
    for log-spaced evaluation grids."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for init, curves in curves_by_init.items():
        steps, mean, low, high = curve_band(curves)
        if not len(steps):
            continue
        (line,) = ax.plot(steps, mean, label=f"{init} (n={len(curves)})", lw=1.6)
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.18, lw=0)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=0.8, label=f"AUC {threshold}")
    if log_steps:
        ax.set_xscale("log")
    ax.set_xlabel("train step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def grouped_bars(
    values: dict[str, dict[str, float]],
    path: str,
    ylabel: str,
    title: str = "",
    errors: dict[str, dict[str, float]] | None = None,
) -> str:
    """values[series][category] as bars grouped by category (e.g. series = init, category = layer)."""
    fig = Figure(figsize=(7, 4))
    _bars(fig.add_subplot(), values, ylabel, title, errors)
    return save_figure(fig, path)


def _bars(ax, values: dict[str, dict[str, float]], ylabel: str, title: str = "", errors=None) -> None:
    categories = list(dict.fromkeys(c for series in values.values() for c in series))
    width = 0.8 / max(len(values), 1)
    x = np.arange(len(categories))
    for i, (name, series) in enumerate(values.items()):
        heights = [series.get(c, np.nan) for c in categories]
        err = [errors[name].get(c, 0.0) for c in categories] if errors and name in errors else None
        ax.bar(x + (i - (len(values) - 1) / 2) * width, heights, width, yerr=err, label=name, capsize=2)
    ax.set_xticks(x, categories)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def interval_panels(
    panels: dict[str, list[tuple[str, float, float, float]]], margins: dict[str, float], path: str
) -> str:
    """One panel per measure: each row's estimate with its interval (label, estimate, low, high) as a horizontal
    bar, the panel's +-margin shaded and 0 marked, so "inside the margin" and "beyond it" read at a glance. An open
    side (+-inf: censoring left it unbounded) runs to the panel's edge and ends in an arrow."""
    rows = max((len(r) for r in panels.values()), default=1)
    fig = Figure(figsize=(5.2 * max(len(panels), 1), 0.9 + 0.42 * rows))
    for i, (name, items) in enumerate(panels.items()):
        ax = fig.add_subplot(1, max(len(panels), 1), i + 1)
        margin = margins[name]
        ax.axvspan(-margin, margin, color="0.85", lw=0, label=f"±{margin:.3g}")
        ax.axvline(0.0, color="k", lw=0.8)
        finite = [x for item in items for x in item[1:] if np.isfinite(x)] + [-2 * margin, 2 * margin]
        edge_low, edge_high = min(finite) - margin, max(finite) + margin
        for y, (_, estimate, low, high) in enumerate(items):
            ax.plot([max(low, edge_low), min(high, edge_high)], [y, y], color="C0", lw=2)
            if np.isfinite(estimate):
                ax.plot([estimate], [y], "o", color="C0")
            for end, edge, marker in ((low, edge_low, "<"), (high, edge_high, ">")):
                if not np.isfinite(end):
                    ax.plot([edge], [y], marker, color="C0")
        ax.set_xlim(edge_low, edge_high)
        ax.set_yticks(range(len(items)), [label for label, *_ in items], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def strip_plot(groups: dict[str, list[float]], path: str, ylabel: str) -> str:
    """Each group's values as points over a box (few points per group, so every one is shown)."""
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    names = list(groups)
    ax.boxplot([groups[n] if groups[n] else [np.nan] for n in names], widths=0.5)
    for i, name in enumerate(names, 1):
        ax.plot(np.full(len(groups[name]), i), groups[name], "o", alpha=0.7)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(groups[n])})" for n in names])
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def init_vs_final_scatter(result: dict, path: str) -> str:
    """Fig. 4: one panel per layer, similarity at init (x) vs after training (y), R² in the title."""
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
    return save_figure(fig, path)


def probe_curves(result: dict, path: str) -> str:
    """Probes: AUC per block, one panel per probe; per run the final weights (solid) and the init (dashed)."""
    kinds, names = result["probes"], labels(result["runs"])
    fig = Figure(figsize=(5 * len(kinds), 3.8))
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        for workdir, run in result["runs"].items():
            blocks = run["final"]["layers"]
            (line,) = ax.plot(blocks, [run["final"][kind][b]["auc"] for b in blocks], "o-", label=names[workdir])
            ax.plot(blocks, [run["init"][kind][b]["auc"] for b in blocks], "o--", color=line.get_color(), alpha=0.6)
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        split = next(iter(result["runs"].values()))["split"]["name"]
        name = f"k-NN (k={result['k']})" if kind == "knn" else "linear probe"
        ax.set_title(f"{name}: solid after training, dashed at init", fontsize=9)
        ax.set_ylabel(f"AUC on {split}")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def criticality_curves(result: dict, path: str) -> str:
    """Resilience: per block, the AUC drop and the loss rise when that block is reset (one line per run)."""
    fig, names = Figure(figsize=(10, 3.8)), labels(result["runs"])
    for i, (key, ylabel) in enumerate((("auc_drop", "AUC drop"), ("loss_rise", "loss rise"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for workdir, run in result["runs"].items():
            ax.plot(
                run["blocks"], [run["per_block"][b].get(key, np.nan) for b in run["blocks"]], "o-", label=names[workdir]
            )
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_ylabel(ylabel)
        ax.set_title(f"block reset to {result['reference']}", fontsize=9)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def interpolation_path(result: dict, path: str) -> str:
    """Interpolation: loss and AUC along theta_a -> theta_b, the straight line between the endpoints dashed; the
    barrier in each title."""
    alphas = np.asarray(result["alphas"])
    keys = [k for k in ("loss", "auc") if k in result["path"][0]]
    fig = Figure(figsize=(5 * len(keys), 3.8))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        values = np.array([p[key] for p in result["path"]], np.float64)
        ax.plot(alphas, values, "o-")
        ax.plot([0, 1], [values[0], values[-1]], "k--", lw=0.8)
        barrier = result["barrier"].get(key)
        ax.set_title(f"{key}: barrier {barrier:.4f} (grid step {result['resolution']:.3g})", fontsize=9)
        ends = labels(result["runs"])
        ax.set_xlabel(f"alpha: {ends[result['runs'][0]]} -> {ends[result['runs'][1]]}", fontsize=7)
        ax.set_ylabel(f"{key} on {result['split']['name']}")
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def sanity_bars(result: dict, path: str) -> str:
    """Sanity checks: per layer, each measure's distance between the two seeds, its shuffled null, and the layer
    against itself with its top-k principal components removed."""
    layers = result["layers"]
    fig = Figure(figsize=(8, 3.6 * len(layers)))
    for i, (layer, table) in enumerate(layers.items()):
        series: dict[str, dict[str, float]] = {"seed vs seed": {}, "null (shuffled)": {}}
        for row in table["rows"]:
            series["seed vs seed"][row["measure"]] = row["specificity"]
            series["null (shuffled)"][row["measure"]] = row["null"]
            for k, d in row["sensitivity"].items():
                series.setdefault(f"top {k} PCs removed", {})[row["measure"]] = d
        ax = fig.add_subplot(len(layers), 1, i + 1)
        _bars(ax, series, "distance (0 = same)", f"{layer}: {table['n_examples']} datapoints")
        ax.tick_params(axis="x", labelsize=7)
    return save_figure(fig, path)


def reuse_bars(result: dict, path: str) -> str:
    """Reuse decomposition: per measure (columns), the gain of transfer over random and the share of it due to
    feature reuse (rows) per group/model, with their intervals; an undefined share is marked, not drawn."""
    measures = list(dict.fromkeys(r["measure"] for r in result["rows"]))
    fig = Figure(figsize=(4 * max(len(measures), 1), 6.5))
    for j, measure in enumerate(measures):
        rows = [r for r in result["rows"] if r["measure"] == measure]
        names = [f"{r['group']}\n{r['model']}" for r in rows]
        for i, part in enumerate(("gain", "share")):
            ax = fig.add_subplot(2, len(measures), i * len(measures) + j + 1)
            for x, row in enumerate(rows):
                value = row.get(part) or {}
                if value.get("estimate") is None or not value.get("ci"):
                    ax.plot(x, 0, "x", color="gray")
                    ax.annotate("undefined", (x, 0), fontsize=7, ha="center", va="bottom")
                    continue
                low, high = value["ci"]
                est = value["estimate"]
                ax.errorbar(x, est, yerr=[[est - low], [high - est]], fmt="o", color="C0", capsize=3)
            ax.axhline(0.0, color="k", lw=0.6)
            ax.set_xlim(-0.5, len(rows) - 0.5)
            steps = measure.startswith("steps")
            ax.set_ylabel(("steps saved" if steps else "AUC gain") if part == "gain" else "(WT - ST) / (WT - RI)")
            ax.set_xticks(range(len(rows)), names, fontsize=7)
            ax.set_title(f"{part}: {rows[0]['description']}" if rows else part, fontsize=8)
            ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def reliability_diagrams(result: dict, path: str) -> str:
    """Calibration (Guo et al.'s reliability diagram): per decision a panel of accuracy vs mean confidence of the
    predicted label per equal-width bin, one line per run (ECE in the legend), the diagonal for perfect calibration."""
    outputs = list(dict.fromkeys(o for run in result["runs"].values() for o in run["reliability"]))
    fig, names = Figure(figsize=(4 * max(len(outputs), 1), 4)), labels(result["runs"])
    for i, output in enumerate(outputs):
        ax = fig.add_subplot(1, len(outputs), i + 1)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        for workdir, run in result["runs"].items():
            bins = run["reliability"].get(output)
            if bins:
                ax.plot(bins["confidence"], bins["frequency"], "o-", label=f"{names[workdir]}: ECE {bins['error']:.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence of the predicted label")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{output}, test split at the {result['when']} step", fontsize=9)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


PICTURES = {  # analysis -> its standard picture
    "fig2": _fig2_picture,
    "fig3": _fig3_picture,
    "fig4": init_vs_final_scatter,
    "weights": _weights_picture,
    "probes": probe_curves,
    "resilience": criticality_curves,
    "interpolation": interpolation_path,
    "sanity": sanity_bars,
    "reuse": reuse_bars,
    "calibration": reliability_diagrams,
}


def filter_grid(
    kernel_or_variables: np.ndarray | Mapping,
    path: str,
    blocks: Sequence[str] | None = None,
    ncols: int = 8,
    panels: int = 1,
    scale: int = 8,
    pad: int = 2,
) -> np.ndarray:
    """Writes the mosaic (analysis.filters) of a conv kernel, or of a variables dict's first conv (give the model's
    `blocks`), as a PNG of exactly that many pixels. Returns the image written, (H, W, 3) in [0, 1]."""
    if isinstance(kernel_or_variables, Mapping):
        if blocks is None:
            raise ValueError("Pass blocks=block_names(model) to find the first conv in a variables dict.")
        kernel = filters.conv1_kernel(kernel_or_variables, blocks)
    else:
        kernel = np.asarray(kernel_or_variables)
    image = filters.filter_mosaic(kernel, ncols=ncols, panels=panels, scale=scale, pad=pad)
    matplotlib.image.imsave(path, image)
    return image


def conv1_filters(run: RunWeights, out_dir: str, prefix: str, ncols: int = 8, scale: int = 8) -> dict[str, str]:
    """Paper Fig. 5 for one run: its conv1 filters at init and after training, as <prefix>_init.png and
    <prefix>_final.png in `out_dir`; returns {'init': path, 'final': path}."""
    os.makedirs(out_dir, exist_ok=True)
    out = {}
    for when, variables in (("init", run.initial()), ("final", run.final())):
        out[when] = os.path.join(out_dir, f"{prefix}_{when}.png")
        filter_grid(variables, out[when], blocks=run.blocks, ncols=ncols, scale=scale)
    return out
