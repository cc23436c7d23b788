"""Aggregate sweep workdirs (ROOT/<group>/<model>/<init>/seed_<k>/summary.json) into the paper's tables.

Statistics: mean and sample standard deviation (ddof=1, the usual "± over repetitions"; none for a single run) of
the test AUC at the final step and at the step selected on validation (the test split never chooses anything);
steps until the test AUC is above the threshold averaged over the runs that got there, with how many did; the test
expected calibration error (Guo et al.'s ECE: top-label confidence, equal-width bins) at the final step beside the
AUC. The paired effects with intervals and verdicts per claim follow in their own section (experiments.effects),
then the instruments beyond the paper (`instruments_section`): the feature-reuse decomposition of every group with
transfer, mean_var and random runs, and every analysis JSON the instruments' command lines wrote to ROOT/analyses/.
A row is marked as differing from the paper when |ours - paper| > max(DIFF_AUC_POINTS, 2 * our std) AUC points, or
when our steps-to-threshold is more than DIFF_STEPS_RATIO times off the paper's in either direction.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from transfusion_jax.analysis import stats
from transfusion_jax.analysis.formatting import interval_text
from transfusion_jax.data.tasks import CHEXPERT_PATHOLOGIES
from transfusion_jax.experiments import effects, instruments, paper_numbers, runs
from transfusion_jax.train import rundir

DIFF_AUC_POINTS = 1.0
DIFF_STEPS_RATIO = 1.5
ANALYSES = "analyses"  # ROOT/analyses/<name>.json: what the instruments' command lines write with --out


@dataclasses.dataclass
class RunResult:
    group: str
    model: str
    init: str
    seed: int
    final_auc: float | None  # test AUC at the final step
    selected_auc: float | None  # test AUC at the step of the best validation AUC
    steps_to_threshold: int | None  # first step with test AUC > threshold
    threshold: float | None
    final_test: dict  # the test evaluation at the final step (per-class AUCs)
    summary: dict
    workdir: str


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def collect(root: str) -> list[RunResult]:
    """Every finished run under `root` (unfinished ones have no summary.json and are left out)."""
    results = []
    for dirpath, _, filenames in os.walk(root):
        if rundir.SUMMARY not in filenames:
            continue
        rel = os.path.relpath(dirpath, root).split(os.sep)
        if len(rel) != 4 or not rel[3].startswith("seed_"):
            continue
        summary = rundir.read_summary(dirpath)
        results.append(
            RunResult(
                group=rel[0],
                model=rel[1],
                init=runs.init_from_dirname(rel[2]),
                seed=int(rel[3][len("seed_") :]),
                final_auc=_finite(runs.final_test_auc(summary)),
                selected_auc=_finite(runs.selected_test_auc(summary)),
                steps_to_threshold=runs.test_steps_to_threshold(summary),
                threshold=summary.get("auc_threshold"),
                final_test=(summary.get("test") or {}).get("final") or {},
                summary=summary,
                workdir=dirpath,
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
    selected_mean: float | None
    selected_std: float | None
    steps_mean: float | None
    steps_std: float | None
    reached: int
    per_class: dict[str, tuple[float | None, float | None]]
    ece_mean: float | None = None  # test ECE at the final step
    ece_std: float | None = None


def aggregate(results: Sequence[RunResult]) -> dict[str, list[Row]]:
    """group -> rows, one per (model, init), in first-seen order."""
    keyed: dict[tuple[str, str, str], list[RunResult]] = {}
    for r in results:
        keyed.setdefault((r.group, r.model, r.init), []).append(r)
    out: dict[str, list[Row]] = {}
    for (group, model, init), rs in keyed.items():
        auc_mean, auc_std, n = mean_std([r.final_auc for r in rs])
        selected_mean, selected_std, _ = mean_std([r.selected_auc for r in rs])
        reached = [float(r.steps_to_threshold) for r in rs if r.steps_to_threshold is not None]
        steps_mean, steps_std, _ = mean_std(reached)
        class_keys = sorted({k for r in rs for k in r.final_test if k.startswith("auc/")})
        per_class = {k[len("auc/") :]: mean_std([_finite(r.final_test.get(k)) for r in rs])[:2] for k in class_keys}
        ece_mean, ece_std, _ = mean_std([_finite(r.final_test.get("ece")) for r in rs])
        out.setdefault(group, []).append(
            Row(
                model,
                init,
                len(rs),
                auc_mean,
                auc_std,
                selected_mean,
                selected_std,
                steps_mean,
                steps_std,
                len(reached),
                per_class,
                ece_mean,
                ece_std,
            )
        )
    return out


def pct(mean: float | None, std: float | None = None) -> str:
    """AUC in [0, 1] as the paper prints it: percent, 2 decimals, '± std' in points."""
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def ece(row: Row) -> str:
    """Expected calibration error as a fraction, 3 decimals, '± std'."""
    if row.ece_mean is None:
        return "n/a"
    return f"{row.ece_mean:.3f}" + (f" ± {row.ece_std:.3f}" if row.ece_std is not None else "")


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
                ece(row),
                pct(row.selected_mean, row.selected_std),
                _steps(row),
                ref.format(1) + f" [{ref.tag}]" if ref else "—",
                mark,
            ]
        )
    return markdown_table(
        [
            "model",
            "init",
            "runs",
            "test AUC % final (ours)",
            "test ECE final (ours)",
            "test AUC % at the validation-selected step (ours)",
            "steps to test AUC > threshold",
            "paper AUC %",
            "",
        ],
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
        lines.append([row.model, row.init, str(row.n), pct(row.auc_mean, row.auc_std), ece(row)] + cells)
    return markdown_table(
        ["model", "init", "runs", "mean AUC %", "mean ECE"] + [f"{p} (ours / paper)" for p in CHEXPERT_PATHOLOGIES],
        lines,
    )


def convergence_table(rows: Sequence[Row], paper: dict) -> list[str]:
    """Hybrid inits: steps until the test AUC is first above the threshold, beside the paper's (eval every 1001)."""
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
                ece(row),
                ref.format() + f" [{ref.tag}]" if ref else "—",
                mark,
            ]
        )
    return markdown_table(
        [
            "model",
            "init",
            "runs",
            "steps to test AUC > threshold (ours)",
            "test AUC % final (ours)",
            "test ECE final (ours)",
            "paper steps to 0.91",
            "",
        ],
        lines,
    )


def effects_section(grouped: dict[str, Sequence[RunResult]]) -> list[str]:
    """Markdown: per group, every paired effect (experiments.effects) with its interval, the paper's claim and the
    verdict."""
    out = [
        "## Effects: init - random, paired by seed (95% intervals)",
        "",
        f"AUC differences in AUC points: the seed pairs' spread plus the test-set noise the seeds share (DeLong); "
        f"margin ±{100 * effects.AUC_MARGIN:g} point. Steps: ln steps(A) - ln steps(B), shown as the ratio of steps, "
        f"each crossing censored to its cell of the evaluation grid and a run that never crossed to beyond it (an "
        f"open side shows ×0 or ×inf); margin ×{math.exp(effects.LOG_STEPS_MARGIN):g} either way "
        f"(docs/statistics.md). Verdicts come from the "
        f"interval and the margin only: 'supported' / 'contradicted' / 'inconclusive'; rows without a claim of the "
        f"paper show the interval's outcome (better / worse / equivalent / inconclusive). The test split is never "
        f"used to choose: 'selected' is the step of the best validation AUC.",
        "",
    ]
    for group, results in grouped.items():
        rows = effects.effects(group, results)
        if not rows:
            continue
        lines = [
            [
                e.model,
                e.init,
                e.measure,
                e.interval.n,
                effects.format_interval(e),
                e.claim.text if e.claim else "—",
                effects.describe(e),
            ]
            for e in rows
        ]
        header = ["model", "init - random", "measure", "seed pairs", "difference [95% CI]", "paper's claim", "verdict"]
        out += [f"### {group}", "", *markdown_table(header, lines), ""]
    return out


def render(root: str) -> str:
    """The Markdown report of every group under `root`."""
    results = collect(root)
    grouped = aggregate(results)
    if not grouped:
        raise FileNotFoundError(f"No finished runs (ROOT/<group>/<model>/<init>/seed_<k>/summary.json) under {root!r}.")
    out = [
        f"# Results under `{root}`",
        "",
        f"Test AUC: mean ± sample std over seeds, at the final step and at the step selected on validation (the "
        f"test split never chooses). A row is marked **differs** when |ours - paper| > "
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
    by_group: dict[str, list[RunResult]] = {}
    for r in results:
        by_group.setdefault(r.group, []).append(r)
    out += effects_section(by_group)
    out += instruments_section(root, results)
    return "\n".join(out)


# ---------------------------------------------------------------- beyond the paper


def _signed(value: float, steps: bool) -> str:
    value += 0.0  # no "-0"
    return f"{value:+,.0f}" if steps else f"{100 * value:+.2f}"


def _gain(row: dict) -> str:
    gain, steps = row.get("gain"), row["measure"].startswith("steps")
    if not gain:
        return "n/a"
    return interval_text(stats.Interval(gain["estimate"], *gain["ci"], 0, ""), lambda v: _signed(v, steps))


def _share(row: dict) -> str:
    share = row["share"]
    if share["status"] != "defined":
        return f"undefined ({share['reason']})"
    return interval_text(stats.Interval(share["estimate"], *share["ci"], 0, ""), lambda v: f"{v:.2f}")


def reuse_section(results: Sequence[RunResult]) -> list[str]:
    """Markdown: the feature-reuse decomposition (experiments.instruments.reuse_decomposition) of every group and
    model with transfer, mean_var and random runs; empty when there is none."""
    rows = instruments.reuse_decomposition(results)["rows"]
    if not rows:
        return []
    lines = []
    for r in rows:
        seeds = f"{len(r['seeds']['WT'])} {'paired' if r['paired'] else 'unpaired'}"
        examples = ", ".join(f"{n:,}" for n in r["train_examples"]) or "?"
        lines.append([r["group"], r["model"], examples, r["description"], seeds, _gain(r), _share(r)])
    header = ["group", "model", "training examples", "measure", "seeds", "gain [95% CI]", "share due to reuse [95% CI]"]
    return [
        "### Feature-reuse decomposition (Matsoukas et al. 2022)",
        "",
        "WT = transfer, ST = Mean-Var (statistics transfer), RI = random init, means over seeds. Gain = WT - RI (AUC "
        "points; for steps RI - WT, steps saved), t interval. Share due to feature reuse = (WT - ST) / (WT - RI), "
        "Fieller's interval; undefined when the gain's interval includes 0 (nothing to apportion) or a run has no "
        "value (never reached the threshold). Seeds are paired when all three inits share them.",
        "",
        *markdown_table(header, lines),
        "",
    ]


def _auc4(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _probes_lines(result: dict) -> list[str]:
    out = []
    kinds = result.get("probes", ["knn", "linear"])
    for workdir, run in result["runs"].items():
        header = ["block"] + [f"{k} AUC {when}" for k in kinds for when in ("init", "final")]
        rows = [
            [block] + [_auc4(run[when][k][block]["auc"]) for k in kinds for when in ("init", "final")]
            for block in run["final"]["layers"]
        ]
        out += [f"`{workdir}` (fit on train, scored on {run['split']['name']}; k = {result['k']}):", ""]
        out += markdown_table(header, rows) + [""]
    return out


def _resilience_lines(result: dict) -> list[str]:
    out = []
    for workdir, run in result["runs"].items():
        base = run["baseline"]
        rows = [
            [b, _auc4(m.get("auc")), _auc4(m.get("auc_drop")), _auc4(m.get("loss_rise"))]
            for b, m in run["per_block"].items()
        ]
        out += [
            f"`{workdir}`, each block reset to {result['reference']}, on {run['split']['name']} (unreset: AUC "
            f"{_auc4(base.get('auc'))}, loss {_auc4(base.get('loss'))}):",
            "",
            *markdown_table(["block", "AUC", "AUC drop", "loss rise"], rows),
            "",
        ]
    return out


def _interpolation_row(name: str, result: dict) -> list:
    barrier = result["barrier"]
    a, b = result["runs"]
    split = result["split"]["name"]
    return [
        name,
        f"`{a}`",
        f"`{b}`",
        split,
        _auc4(barrier.get("loss")),
        _auc4(barrier.get("auc")),
        result["resolution"],
    ]


def _sanity_lines(result: dict) -> list[str]:
    out = []
    for layer, table in result["layers"].items():
        ks = [str(k) for k in table["ks"]]
        header = ["measure", "seed vs seed", "null (shuffled)"] + [f"top {k} PCs removed" for k in ks]
        rows = [
            [r["measure"], f"{r['specificity']:.3f}", f"{r['null']:.3f}"]
            + [f"{r['sensitivity'][k]:.3f}" + (" (detected)" if r["detects"][k] else "") for k in ks]
            for r in table["rows"]
        ]
        out += [f"{layer} ({table['n_examples']} datapoints; distances, 0 = same):", ""]
        out += markdown_table(header, rows) + [""]
    return out


def _calibration_lines(result: dict) -> list[str]:
    rows = [
        [f"`{w}`", r["step"], r["bins"], _auc4(r.get("auc")), _auc4(r.get("ece")), _auc4(r.get("ace"))]
        for w, r in result["runs"].items()
    ]
    header = ["run", f"{result['when']} step", "bins", "test AUC", "test ECE", "test ACE"]
    return markdown_table(header, rows) + [""]


def analyses_section(folder: str) -> list[str]:
    """Markdown of every analysis JSON in `folder` (ROOT/analyses), by kind; files that are not one are listed."""
    if not os.path.isdir(folder):
        return []
    found: dict[str, Mapping] = {}
    other = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(folder, name)) as f:
            try:
                result = json.load(f)
            except json.JSONDecodeError:
                result = None
        if isinstance(result, dict) and "analysis" in result:
            found[name] = result
        else:
            other.append(name)
    out = [f"### Analyses in `{folder}`", ""]
    render = {
        "probes": ("Layer-wise probes on frozen features", _probes_lines),
        "resilience": ("Re-initialisation resilience", _resilience_lines),
        "sanity": ("Sanity checks of the similarity measures (Ding et al. 2021)", _sanity_lines),
        "calibration": ("Calibration", _calibration_lines),
    }
    interpolations = []
    for name, result in found.items():
        kind = result["analysis"]
        if kind in render:
            title, lines = render[kind]
            out += [f"#### {title}: `{name}`", "", *lines(result)]
        elif kind == "interpolation":
            interpolations.append(_interpolation_row(name, result))
        elif kind != "reuse":  # the decomposition is computed from the runs above
            other.append(f"{name} ({kind}: see its PNG)")
    if interpolations:
        header = ["file", "a (alpha = 0)", "b (alpha = 1)", "split", "loss barrier", "AUC barrier", "grid step"]
        out += [
            "#### Linear interpolation between solutions (Neyshabur et al. 2020)",
            "",
            *markdown_table(header, interpolations),
            "",
        ]
    if other:
        out += ["Other files: " + ", ".join(other), ""]
    return out if len(out) > 2 else []


def instruments_section(root: str, results: Sequence[RunResult]) -> list[str]:
    """Markdown: the reuse decomposition and the analyses under ROOT/analyses; empty when there is neither."""
    parts = reuse_section(results) + analyses_section(os.path.join(root, ANALYSES))
    if not parts:
        return []
    intro = (
        "Probes are fitted on the training split and scored on validation; resilience and interpolation report on "
        "validation unless their JSON says otherwise; calibration and the decomposition read the test split at the "
        "steps the table above reports. None of them chooses anything on the test split."
    )
    return ["## Beyond the paper: feature reuse, probes, resilience, interpolation, calibration", "", intro, "", *parts]
