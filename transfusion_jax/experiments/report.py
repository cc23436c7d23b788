"""Aggregate sweep workdirs (ROOT/<group>/<model>/<init>/seed_<k>/summary.json) into the paper's tables.

Statistics: mean and sample standard deviation (ddof=1, the usual "± over repetitions"; none for a single run) of
the final evaluation's AUC; steps-to-threshold averaged over the runs that reached the threshold, with how many did.
A row is marked as differing from the paper when |ours - paper| > max(DIFF_AUC_POINTS, 2 * our std) AUC points, or
when our steps-to-threshold is more than DIFF_STEPS_RATIO times off the paper's in either direction.
"""

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from transfusion_jax.data.tasks import CHEXPERT_PATHOLOGIES
from transfusion_jax.experiments import paper_numbers, runs

DIFF_AUC_POINTS = 1.0
DIFF_STEPS_RATIO = 1.5


@dataclasses.dataclass
class RunResult:
    group: str
    model: str
    init: str
    seed: int
    final_auc: float | None
    best_auc: float | None
    steps_to_threshold: int | None
    threshold: float | None
    final_eval: dict


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def collect(root: str) -> list[RunResult]:
    """Every finished run under `root` (unfinished ones have no summary.json and are left out)."""
    results = []
    for dirpath, _, filenames in os.walk(root):
        if runs.SUMMARY not in filenames:
            continue
        rel = os.path.relpath(dirpath, root).split(os.sep)
        if len(rel) != 4 or not rel[3].startswith("seed_"):
            continue
        with open(os.path.join(dirpath, runs.SUMMARY)) as f:
            summary = json.load(f)
        final = summary.get("final_eval") or {}
        results.append(
            RunResult(
                group=rel[0],
                model=rel[1],
                init=runs.init_from_dirname(rel[2]),
                seed=int(rel[3][len("seed_") :]),
                final_auc=_finite(final.get("auc")),
                best_auc=_finite(summary.get("best_auc")),
                steps_to_threshold=summary.get("steps_to_threshold"),
                threshold=summary.get("auc_threshold"),
                final_eval=final,
            )
        )
    return sorted(results, key=lambda r: (r.group, r.model, r.init, r.seed))


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std or None for n < 2, n) of the finite values."""
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if xs.size == 0:
        return None, None, 0
    return float(xs.mean()), (float(xs.std(ddof=1)) if xs.size > 1 else None), int(xs.size)


@dataclasses.dataclass
class Row:
    model: str
    init: str
    n: int
    auc_mean: float | None
    auc_std: float | None
    best_mean: float | None
    steps_mean: float | None
    steps_std: float | None
    reached: int
    per_class: dict[str, tuple[float | None, float | None]]


def aggregate(results: Sequence[RunResult]) -> dict[str, list[Row]]:
    """group -> rows, one per (model, init), in first-seen order."""
    keyed: dict[tuple[str, str, str], list[RunResult]] = {}
    for r in results:
        keyed.setdefault((r.group, r.model, r.init), []).append(r)
    out: dict[str, list[Row]] = {}
    for (group, model, init), rs in keyed.items():
        auc_mean, auc_std, n = mean_std([r.final_auc for r in rs])
        best_mean, _, _ = mean_std([r.best_auc for r in rs])
        reached = [float(r.steps_to_threshold) for r in rs if r.steps_to_threshold is not None]
        steps_mean, steps_std, _ = mean_std(reached)
        class_keys = sorted({k for r in rs for k in r.final_eval if k.startswith("auc/")})
        per_class = {k[len("auc/") :]: mean_std([_finite(r.final_eval.get(k)) for r in rs])[:2] for k in class_keys}
        out.setdefault(group, []).append(
            Row(model, init, len(rs), auc_mean, auc_std, best_mean, steps_mean, steps_std, len(reached), per_class)
        )
    return out


def pct(mean: float | None, std: float | None = None) -> str:
    """AUC in [0, 1] as the paper prints it: percent, 2 decimals, '± std' in points."""
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def auc_differs(mean: float | None, std: float | None, paper: paper_numbers.PaperValue) -> bool:
    if mean is None:
        return False
    return abs(100 * mean - paper.mean) > max(DIFF_AUC_POINTS, 2 * 100 * (std or 0.0))


def steps_differ(steps: float | None, paper: paper_numbers.PaperValue) -> bool:
    if steps is None:
        return True
    ratio = steps / paper.mean
    return ratio > DIFF_STEPS_RATIO or ratio < 1 / DIFF_STEPS_RATIO


def _steps(row: Row) -> str:
    if row.reached == 0:
        return "not reached"
    text = f"{row.steps_mean:,.0f}" + (f" ± {row.steps_std:,.0f}" if row.steps_std is not None else "")
    return text + (f" ({row.reached}/{row.n} reached)" if row.reached < row.n else "")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    """A Markdown table's lines (every report and notebook here writes its tables with this)."""
    return ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(str, row)) + " |" for row in rows
    ]


def auc_table(rows: Sequence[Row], paper: dict) -> list[str]:
    """Tables 1 and 3: final AUC (%) mean ± std per model x init beside the paper's."""
    lines = []
    for row in rows:
        ref = paper.get((row.model, row.init))
        mark = "**differs**" if ref is not None and auc_differs(row.auc_mean, row.auc_std, ref) else ""
        lines.append(
            [
                row.model,
                row.init,
                str(row.n),
                pct(row.auc_mean, row.auc_std),
                pct(row.best_mean),
                _steps(row),
                ref.format(1) + f" [{ref.tag}]" if ref else "—",
                mark,
            ]
        )
    return markdown_table(
        ["model", "init", "runs", "final AUC % (ours)", "best AUC % (ours)", "steps to threshold", "paper AUC %", ""],
        lines,
    )


def chexpert_table(rows: Sequence[Row], paper: dict) -> list[str]:
    """Table 2: per-pathology final AUC (%), ours / paper."""
    lines = []
    for row in rows:
        ref = paper.get((row.model, row.init), {})
        cells = []
        for name in CHEXPERT_PATHOLOGIES:
            mean, std = row.per_class.get(name, (None, None))
            cell = pct(mean, std)
            if name in ref:
                cell += f" / {ref[name].format(2)}" + (" **differs**" if auc_differs(mean, std, ref[name]) else "")
            cells.append(cell)
        lines.append([row.model, row.init, str(row.n), pct(row.auc_mean, row.auc_std)] + cells)
    return markdown_table(
        ["model", "init", "runs", "mean AUC %"] + [f"{p} (ours / paper)" for p in CHEXPERT_PATHOLOGIES],
        lines,
    )


def convergence_table(rows: Sequence[Row], paper: dict) -> list[str]:
    """Hybrid inits: steps until eval AUC first reaches the threshold, beside the paper's (eval every 1001 steps)."""
    lines = []
    for row in rows:
        ref = paper.get((row.model, row.init))
        mark = "**differs**" if ref is not None and steps_differ(row.steps_mean if row.reached else None, ref) else ""
        lines.append(
            [
                row.model,
                row.init,
                str(row.n),
                _steps(row),
                pct(row.auc_mean, row.auc_std),
                ref.format() + f" [{ref.tag}]" if ref else "—",
                mark,
            ]
        )
    return markdown_table(
        ["model", "init", "runs", "steps to threshold (ours)", "final AUC % (ours)", "paper steps to 0.91", ""], lines
    )


def render(root: str) -> str:
    """The Markdown report of every group under `root`."""
    grouped = aggregate(collect(root))
    if not grouped:
        raise FileNotFoundError(f"No finished runs (ROOT/<group>/<model>/<init>/seed_<k>/summary.json) under {root!r}.")
    out = [
        f"# Results under `{root}`",
        "",
        f"Final AUC: mean ± sample std over seeds. A row is marked **differs** when |ours - paper| > "
        f"max({DIFF_AUC_POINTS:g}, 2·std) AUC points, or steps are more than {DIFF_STEPS_RATIO:g}x off. Paper "
        f"values marked (?) are unconfirmed (docs/paper.md); tags: P-fig figure, S secondary source.",
        "",
    ]
    for group, rows in grouped.items():
        title, paper = paper_numbers.GROUP_TABLES.get(group, (f"{group} (no paper table)", {}))
        out += [f"## {group}: {title}", ""]
        if group == "chexpert":
            out += chexpert_table(rows, paper)
        elif group == "hybrid":
            out += convergence_table(rows, paper)
        else:
            out += auc_table(rows, paper)
        out.append("")
    return "\n".join(out)
