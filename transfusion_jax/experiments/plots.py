"""The quickstart's figures: AUC curves (mean line, shaded min-max band over seeds), per-layer CCA, weight change.

Uses matplotlib's object API on Agg canvases (no pyplot state), so it runs headless and inside tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def curve_band(curves: Sequence[dict[int, float]]):
    """(steps, mean, low, high) over the steps every curve has; the band is the min-max over seeds."""
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    values = np.array([[c[s] for s in steps] for c in curves], np.float64)
    if not steps:
        return np.array([]), np.array([]), np.array([]), np.array([])
    return np.array(steps), values.mean(0), values.min(0), values.max(0)


def auc_curves(
    curves_by_init: dict[str, list[dict[int, float]]], path: str, threshold: float | None = None, title: str = ""
) -> str:
    """Eval AUC vs train step per init: mean over seeds as a line, min-max over seeds shaded."""
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
    ax.set_xlabel("train step")
    ax.set_ylabel("eval AUC")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def grouped_bars(
    values: dict[str, dict[str, float]],
    path: str,
    ylabel: str,
    title: str = "",
    errors: dict[str, dict[str, float]] | None = None,
) -> str:
    """values[series][category] as bars grouped by category (e.g. series = init, category = layer)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
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
    return _save(fig, path)
