"""The miniature study's report.md and figures: renders what the gates, verdicts and measures computed (nothing here
computes a number the verdicts or gates use), with paths relative to the work directory.

The verdicts section sits between markers (VERDICTS_BEGIN / VERDICTS_END) so that README.md and docs/RESULTS.md can
quote it verbatim (`quote_verdicts`), and a test checks that they do. `publish` puts a finished study's report where
the docs show it:

  python -c "from transfusion_jax.experiments.study import report; report.publish('DIR', 'docs/study_report',
             ['README.md', 'docs/RESULTS.md'])"
"""

import dataclasses
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

import jax
import numpy as np

import transfusion_jax
from transfusion_jax import hostinfo, pretrained
from transfusion_jax.analysis import stats
from transfusion_jax.analysis.formatting import interval_text as _interval_text
from transfusion_jax.analysis.formatting import signed
from transfusion_jax.experiments import figures
from transfusion_jax.experiments.report import markdown_table
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import MODELS
from transfusion_jax.experiments.study.gates import BORDERLINE, Gate
from transfusion_jax.experiments.study.representations import ModelSimilarity
from transfusion_jax.experiments.study.verdicts import (
    JUDGED,
    MISSING,
    MOST_SEEDS,
    NOT_RUN,
    Power,
    StudyVerdicts,
    Verdict,
    power_table,
)
from transfusion_jax.surgery import gabor_filters

VERDICTS_BEGIN = "<!-- study-verdicts:begin -->"
VERDICTS_END = "<!-- study-verdicts:end -->"
_MEASURE_NAMES = {"auc": "test AUC", "log_steps": "ln steps to threshold", "similarity": "similarity"}


@dataclasses.dataclass(frozen=True)
class Timing:
    """The invocation that wrote the report: wall and CPU seconds, load average at its start and end, runs trained
    in it out of all, peak resident memory of the process in bytes (`run.peak_memory`; 0: not measured)."""

    wall: float
    cpu: float
    load: tuple[float, float]
    trained: int
    runs: int
    peak_memory: float = 0.0


def machine() -> str:
    return f"{hostinfo.cpu_model()}, {os.cpu_count()} cores visible, JAX {jax.__version__} on {jax.default_backend()}"


CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(transfusion_jax.__file__)))


def _git(*args: str, checkout: str = CHECKOUT) -> str | None:
    """`git args` run in the package's checkout, its output stripped; None outside a git checkout."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> str:
    """The package version and, from a git checkout, its commit (with "+ local changes" when the tree differs): a
    report names the code that made it, since a change of float summation order alone moves trained AUCs."""
    version = f"transfusion_jax {transfusion_jax.__version__}"
    described = _git("describe", "--always", "--dirty", "--abbrev=7")
    if described is None:
        return version
    commit, dirty = described.removesuffix("-dirty"), described.endswith("-dirty")
    return f"{version}, commit {commit}" + (" + local changes" if dirty else "")


PREREGISTERED_SECTION = "## Round 7 (study v2): the design, pre-registered"
CHANGE_LOG = "## Changes after the design was fixed"


def preregistration(checkout: str = CHECKOUT) -> str:
    """Where the design this report reads was fixed: docs/study.md's round-7 section, and (from a git checkout) the
    last commit that changed that section, which must be an ancestor of the code's commit and predate the run. The
    log of execution changes after it (its own section) is not the design: an entry there moves no commit here."""
    where = f"docs/study.md, section '{PREREGISTERED_SECTION.removeprefix('## ')}'"
    lines = f"/^{PREREGISTERED_SECTION.split(' (')[0]}/,/^{CHANGE_LOG}/:docs/study.md"  # plain text: no regex metachars
    commit = _git("log", "-1", "--format=%h %cs", "--no-patch", "-L", lines, checkout=checkout)
    return f"{where}, last changed in commit {commit}" if commit else where


# ---------------------------------------------------------------- numbers and verdicts in words


def interval_text(interval, measure: str) -> str:
    """'+0.004 [-0.010, +0.018]'; a log-steps contrast also as the ratio of steps it means (exp of its ends)."""
    text = _interval_text(interval, signed(2 if measure == "log_steps" else 3))
    if measure == "log_steps" and interval is not None and interval.estimate is not None and interval.defined:
        text += f" (ratio ×{math.exp(interval.low):.2f} to ×{math.exp(interval.high):.2f})"
    return text


def _margin_text(margin: float, measure: str) -> str:
    return f"±{margin:.3f}" + (f" (×{math.exp(margin):.2f})" if measure == "log_steps" else "")


# Where the interval lies against the margin, in words (stats.outcome's names are about A - B > 0).
_OUTCOME_WORDS = {
    "better": "interval above +margin",
    "worse": "interval below -margin",
    "equivalent": "interval inside ±margin",
    "inconclusive": "interval crosses a margin",
}


def _verdict_text(v: Verdict) -> str:
    if v.verdict in MISSING:
        return v.verdict
    return f"**{v.verdict}** ({v.why})" if v.why else f"**{v.verdict}**"


_RULE_WORDS = {"equivalence": "equivalence", "directional": "directional", "noninferiority": "non-inferiority"}


def rule_text(v: Verdict) -> str:
    """The claim's rule and the numbers it reads the interval against, e.g. 'equivalence ±0.020',
    'directional > 0 (smallest effect 0.010)', 'non-inferiority > 0'."""
    if v.kind == "equivalence":
        return f"equivalence {_margin_text(v.margin, v.measure)}"
    side = ">" if v.direction > 0 else "<"
    if v.kind == "directional":
        return f"directional {side} 0 (smallest effect {v.direction * v.margin:+.3g})"
    return f"non-inferiority {side} 0"


def distance_text(v: Verdict) -> str:
    """The verdict's distance to its nearest decision boundary in half-widths: under 0.5 it could flip with a small
    change of the runs (another float summation order moved round-5 verdicts)."""
    parts = [p for p in (v.parts or [v]) if p.distance is not None]
    if not parts:
        return "—"
    d = min(p.distance for p in parts)
    return f"{d:.2f}" + (" (fragile)" if d < 0.5 else "")


def _power_note(power: Power | None) -> str:
    if power is None or power.power is None:
        return ""
    if power.needed is None:
        return f"underpowered: > {MOST_SEEDS} seeds for 80 % power"
    if power.needed > power.seeds:
        return f"underpowered: {power.needed} seeds for 80 % power"
    return ""


def _checks_text(v: Verdict) -> str:
    """The verdicts printed beside the main one: the relative threshold's (steps), the other measure's
    (similarity)."""
    return "; ".join(
        f"{name.split(' (')[0]}: {check.verdict}" for part in v.parts or [v] for name, check in part.checks
    )


def _mean_sd(values: Sequence[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _passes(gate: Gate, bold: bool = True) -> str:
    return "passes" if gate.passed else ("**FAILS**" if bold else "FAILS")


# ---------------------------------------------------------------- the verdicts block


def _verdict_row(v: Verdict, powers: Mapping[int, Power | None]) -> list:
    parts = v.parts or [v]
    estimate = "; ".join(
        (f"{_MEASURE_NAMES[p.measure]} " if len(parts) > 1 else "") + interval_text(p.interval, p.measure)
        for p in parts
    )
    rule = "; ".join(dict.fromkeys(rule_text(p) for p in parts))
    notes = [n for n in (_power_note(powers.get(id(p))) for p in parts) if n]
    verdict = _verdict_text(v) + (f"; {'; '.join(dict.fromkeys(notes))}" if notes else "")
    return [v.claim, v.finding, v.scope, estimate, rule, verdict, distance_text(v), _checks_text(v) or "—"]


def _gates_line(gates: Sequence[Gate]) -> str:
    text = ", ".join(f"{g.gate} {g.scope} {_passes(g, bold=False)}" for g in gates if g.gate != "G4")
    g4 = [g for g in gates if g.gate == "G4"]
    failed = [g.scope for g in g4 if not g.passed]
    return (
        text
        + f"; G4 passes in {len(g4) - len(failed)} of {len(g4)} groups"
        + (f" (fails: {', '.join(failed)})" if failed else "")
    )


def memory_text(timing: Timing) -> str:
    if not timing.peak_memory:
        return "peak memory not measured"
    return f"peak memory {timing.peak_memory / 2**30:.2f} GiB"


def verdicts_section(c, verdicts: StudyVerdicts, timing: Timing, powers: Mapping[int, Power | None] | None = None
                     ) -> list[str]:  # fmt: skip
    """What README.md and docs/RESULTS.md quote: where, how long and in how much memory it ran, the gates, and per
    claim and scope the effect with its 95 % interval, the rule, the verdict (with "underpowered" where the seeds
    cannot give the rule 80 % power at its pre-registered effect) and its distance to the nearest boundary."""
    powers = {} if powers is None else powers
    judged = [v for v in verdicts.verdicts if v.verdict in JUDGED]
    cut = [m for m in MODELS if m not in c.models_run]
    header = ["claim", "the paper's finding", "scope", "effect [95 % interval]", "rule", "verdict",
              "distance (half-widths)", "beside it"]  # fmt: skip
    return [
        VERDICTS_BEGIN,
        f"configs/study.py:{c.variant}"
        + (f" (the {', '.join(cut)} model not run)" if cut else "")
        + f" on {machine()} ({code_version()}); {timing.wall / 60:.1f} min wall time, {memory_text(timing)} (load "
        f"average {timing.load[0]:.1f} at the start, {timing.load[1]:.1f} at the end), {timing.trained} of "
        f"{timing.runs} runs trained in it.",
        "",
        f"**Gates**: {_gates_line(verdicts.gates)}.",
        "",
        *markdown_table(header, [_verdict_row(v, powers) for v in verdicts.verdicts]),
        "",
        f"Estimates are means over {len(c.seeds)} seeds of paired contrasts, intervals at {c.confidence:.0%} "
        f"(docs/statistics.md; AUC: test AUC at the final step, the seeds' spread plus the test-set noise the seeds "
        f"share (DeLong); steps: ln of the first step with validation AUC > {c.threshold:g}, each crossing censored to "
        f"its cell of the evaluation grid and a run that never crossed to beyond it (an open side is ±inf); "
        f"similarity: {c.similarity.verdict_method} between layers, to init minus the unrelated-network null, R over "
        f"every pair of seeds with a jackknife over seeds). Rules (docs/study.md, round 7): equivalence inside "
        f"±margin; directional supported when the interval excludes 0 in the claimed direction, contradicted when it "
        f"lies below the smallest effect of interest; non-inferiority against a bound built into the contrast. "
        f"Distance: from the nearest interval end to the nearest decision boundary, in half-widths (under 0.5: "
        f"fragile). Beside it: the verdict of the relative threshold ({c.relative_threshold:g} x each run's own final "
        f"validation AUC) for steps, of the other measure for similarity. {len(judged)} verdicts are read at "
        f'{c.confidence:.0%} each with no multiplicity correction: one "supported" or "contradicted" among them can '
        f"be a chance finding.",
        VERDICTS_END,
    ]


# ---------------------------------------------------------------- gates


def _g1_lines(c, model: str, g1: Gate, d) -> list[str]:
    v = g1.values
    rows = []
    for r in v.ratios:
        bn = d.pretrained.bn.get(r.layer, {})
        rows.append([
            r.layer, f"{r.pretrained:.3f}", _mean_sd(r.random), f"{r.distance:.0f}",
            f"{bn.get('scale_mean', math.nan):.3f} ± {bn.get('scale_std', math.nan):.3f}",
            f"{bn.get('bias_mean', math.nan):.3f} ± {bn.get('bias_std', math.nan):.3f}",
        ])  # fmt: skip
    header = ["layer", "kernel std / He std, pretrained", f"random inits ({len(d.random)})", "distance (sd)",
              "BN gamma mean ± sd (pretrained)", "BN beta mean ± sd (pretrained)"]  # fmt: skip
    share = f"{v.peakedness_share:.0%}" if v.peakedness_share is not None else "n/a"
    return [
        f"### G1, the source moved the weights: {model} model {tuple(d.widths)} — **{_passes(g1, bold=False)}**",
        "",
        *markdown_table(header, rows),
        "",
        f"conv1 spectral peakedness (share of power in the top 4 of {round(4 / d.peakedness_floor)} DFT bins; "
        f"white-noise floor {d.peakedness_floor:.3f}): pretrained {v.peakedness:.3f}, random "
        f"{_mean_sd(v.random_peakedness)} (max {max(v.random_peakedness):.3f}), Gabor bank {d.gabor_peakedness:.3f}. "
        f"Source test accuracy {d.source_accuracy:.3f} (chance {d.chance:.3f}). Gate: every layer outside mean ± "
        f"{c.gates.kernel_sd:g} sd of the random inits, peakedness above their largest, accuracy ≥ "
        f"{c.gates.chance_multiple:g} x chance." + ("" if g1.passed else f" Fails: {g1.detail}."),
        "",
        f"How structured is the conv1 that C8 compares the Gabor bank with: its peakedness lies {share} of the way "
        "from the random inits' mean to the Gabor bank's.",
        "",
    ]


def _g1_figure(g1s: Mapping[str, Gate], fig_dir: str) -> list[str]:
    if not g1s:
        return []
    ratios = {}
    for model, g1 in g1s.items():
        ratios[f"{model} pretrained"] = {r.layer: float(f"{r.pretrained:.3f}") for r in g1.values.ratios}  # as shown
        ratios[f"{model} random (mean)"] = {r.layer: r.mean for r in g1.values.ratios}
    figures.grouped_bars(
        ratios, os.path.join(fig_dir, "g1_kernel_std_ratio.png"), "kernel std / He std", "G1: pretrained vs random"
    )
    return ["![G1 kernel std ratios](figures/g1_kernel_std_ratio.png)", ""]


def _g2_lines(c, g2s: Mapping[str, Gate], probe_images: int, fig_dir: str) -> list[str]:
    if not g2s:
        return []
    ceiling = c.threshold - c.gates.probe_below_threshold
    rows, bars, errors, borderline = [], {}, {}, []
    for model, g2 in g2s.items():
        cells = []
        for p in g2.values.layers:
            cells.append(f"{_mean_sd(p.values)} (≤ {p.interval.high:.3f})")
            if p.borderline:
                borderline.append(f"{model} model's {p.layer} ({p.interval.high:.3f})")
            bars.setdefault(f"{model} model", {})[p.layer] = p.interval.estimate
            errors.setdefault(f"{model} model", {})[p.layer] = float(p.interval.high - p.interval.estimate)
        rows.append([model, *cells, _passes(g2)])
    layers = [p.layer for p in next(iter(g2s.values())).values.layers]
    title = f"G2: frozen random features (ceiling {ceiling:.2f})"
    figures.grouped_bars(bars, os.path.join(fig_dir, "g2_probe_auc.png"), "cross-validated probe AUC", title, errors)
    note = [
        f"Borderline (upper bound within {BORDERLINE} of the ceiling, either side): {', '.join(borderline)}; a less "
        "noisy probe could put it on the other side.",
        "",
    ]
    return [
        f"### G2, random features do not solve the target (ceiling: upper 95 % bound ≤ {ceiling:.2f})",
        "",
        f"Linear probe (standardised, L2 logistic regression) on frozen features of "
        f"{c.gates.random_inits} random inits per model, pooled per channel as {c.gates.probe_pooling} over space (a "
        f"mean alone is blind to a spot's polarity), AUC of out-of-fold scores, {c.gates.probe_folds}-fold "
        f"cross-validation within the {probe_images} train images: mean ± sd (upper end of the 95 % t interval of "
        f"the mean).",
        "",
        *markdown_table(["model", *layers, "G2"], rows),
        "",
        *(note if borderline else []),
        "![G2 probe AUC](figures/g2_probe_auc.png)",
        "",
    ]


def _g3_lines(c, g3s: Mapping[str, Gate]) -> list[str]:
    rows = []
    for model, g3 in g3s.items():
        v = g3.values
        steps = ", ".join(str(r.steps) if r.steps is not None else f"> {r.final_step}" for r in v.runs)
        finals = ", ".join(f"{r.final_val_auc:.3f}" for r in v.runs)
        bound = f"{v.final.low:.3f}" if v.final.defined else "—"
        rows.append([model, steps, f"{v.crossed:.0%}", finals, bound, _passes(g3)])
    header = ["model", f"steps to validation AUC > {c.threshold:g} (seeds {list(c.seeds)})", "share crossing",
              "final validation AUC", f"lower {c.confidence:.0%} bound of their mean", "G3"]  # fmt: skip
    return [
        f"### G3, learnable: at least {c.gates.crossing_share:.0%} of the random runs on the full data cross "
        f"{c.threshold:g}, and the lower bound of their mean final validation AUC is ≥ "
        f"{c.threshold + c.gates.final_above_threshold:.2f}",
        "",
        *markdown_table(header, rows),
        "",
    ]


def _g4_lines(c, g4s: Sequence[Gate]) -> list[str]:
    rows = [
        [g.scope, f"{g.values.within:.4f}", f"{g.values.across:.4f}", _passes(g)] for g in g4s
    ]  # fmt: skip
    return [
        f"### G4, stable: the median sd of each run's last {c.gates.last_evals} validation AUCs ≤ "
        f"{c.gates.plateau_sd:g} (a plateau)",
        "",
        *markdown_table(["model / data / init", "median sd within runs", "sd across seeds (for scale)", "G4"], rows),
        "",
    ]


def gates_section(c, gates: Sequence[Gate], diagnostics: Mapping, fig_dir: str) -> list[str]:
    """Each gate's numbers as its record holds them, with the diagnostics they were computed from."""
    by = {(g.gate, g.scope): g for g in gates}
    models = list(diagnostics)
    lines = ["## Gates: the design's diagnostics, before any claim", ""]
    for model in models:
        lines += _g1_lines(c, model, by["G1", model], diagnostics[model])
    lines += _g1_figure({m: by["G1", m] for m in models}, fig_dir)
    probe_images = next(iter(diagnostics.values())).probe_images if diagnostics else 0
    lines += _g2_lines(c, {m: by["G2", m] for m in models}, probe_images, fig_dir)
    lines += _g3_lines(c, {m: by["G3", m] for m in models})
    return lines + _g4_lines(c, [g for g in gates if g.gate == "G4"])


# ---------------------------------------------------------------- claims, measures, similarity, the rest


def claims_section(verdicts: StudyVerdicts) -> list[str]:
    lines = ["## Claims in detail", ""]
    for v in verdicts.verdicts:
        lines.append(f"- **{v.claim}**, {v.scope}: {v.contrast}. Rule: {rule_text(v)}.")
        for part in v.parts or [v]:
            if part.interval is not None:
                lines.append(
                    f"  - {_MEASURE_NAMES[part.measure]}: {interval_text(part.interval, part.measure)}, "
                    f"{rule_text(part)}, {part.interval.method} (n = {part.interval.n}): {_verdict_text(part)}; "
                    f"distance to the nearest boundary {distance_text(part)} half-widths."
                )
            for name, check in part.checks:
                lines.append(f"  - {name}: {interval_text(check.interval, check.measure)}: {_verdict_text(check)}.")
        for x in v.explained:
            lines.append(f"  - explained by {x.name}: {interval_text(x.interval, x.measure)}.")
        lines.append(f"  - Verdict: {_verdict_text(v)}.")
        lines += [f"  - {note}" for note in v.notes]
    lines.append("")
    return lines


def power_section(c, powers: Sequence[tuple[Verdict, Power | None]]) -> list[str]:
    """Per claim (and part): the spread its interval implies, its power with this design's seeds at its
    pre-registered effect, and the seeds 80 % power needs."""
    rows = []
    for v, p in powers:
        if p is None:
            continue
        name = f"{v.claim} {v.scope}" + (f" ({_MEASURE_NAMES[v.measure]})" if v.claim == "C7" else "")
        sd = f"{p.sd:.3g}" if p.sd is not None else "— (an open side)"
        now = f"{p.power:.0%}" if p.power is not None else "—"
        needed = str(p.needed) if p.needed is not None else (f"> {MOST_SEEDS}" if p.sd else "—")
        rows.append([name, rule_text(v), f"{p.effect:+.3g}", sd, now, needed])
    header = ["claim", "rule", "effect powered for", "per-seed sd implied by its interval",
              f"power with {len(c.seeds)} seeds", "seeds for 80 % power"]  # fmt: skip
    return [
        "## Power: the seeds each claim needs",
        "",
        'The probability that a claim\'s rule reads "supported" when the true contrast is its pre-registered effect '
        "(equivalence: 0; directional: the smallest effect of interest in the claimed direction; non-inferiority: "
        "the steps' smallest effect above the bound), for a t interval over seeds whose per-seed sd is the one this "
        "run's interval implies (half-width x sqrt(n) / t), by simulation (`analysis.stats.power`). A planning number "
        "for the next study, not a statement about this one's verdicts; where it is below 80 % the verdict row says "
        '"underpowered".',
        "",
        *markdown_table(header, rows),
        "",
    ]


def _measures_row(model: str, data: str, init: str, items: list) -> list:
    steps = [m.steps for m in items]
    reached = sorted(s for s in steps if s is not None)
    censored = len(steps) - len(reached)
    rel = sorted(m.steps_relative for m in items if m.steps_relative is not None)
    return [
        model, data, init, len(items), _mean_sd([m.final_val_auc for m in items]),
        ", ".join(map(str, reached)) + (f" (+{censored} never)" if censored else ""), ", ".join(map(str, rel)),
        _mean_sd([float(np.median([m.weight_change[b] for b in m.weight_change])) for m in items]),
    ]  # fmt: skip


def _curves_lines(c, groups: Mapping, fig_dir: str) -> list[str]:
    """Per model and training set: each arm's validation AUC per seed on log steps, with the threshold."""
    lines = []
    for model in c.models_run:
        for data in ("full", "small"):
            cell = {i: dict(items) for (mo, d, i), items in groups.items() if (mo, d) == (model, data)}
            if not cell:
                continue
            name = f"val_auc_{model}_{data}.png"
            title = f"{model} model, {data} training set: validation AUC per seed (threshold dashed)"
            curves = {init: {seed: m.curve for seed, m in sorted(by_seed.items())} for init, by_seed in cell.items()}
            figures.seed_curves(curves, os.path.join(fig_dir, name), c.threshold, title)
            lines += [f"![validation AUC per seed, {model} model, {data} data](figures/{name})", ""]
    return lines


def _violin_lines(c, verdicts: StudyVerdicts, fig_dir: str) -> list[str]:
    """Fig. 2's form: the final test AUC of every run, per arm, one figure per model and training set."""
    lines = []
    for model in c.models_run:
        for data in ("full", "small"):
            groups: dict[str, list[float]] = {}
            for key, auc in sorted(verdicts.final_auc.items(), key=lambda item: (item[0].init, item[0].seed)):
                if (key.model, key.data) == (model, data):
                    groups.setdefault(key.init, []).append(auc)
            if not groups:
                continue
            name = f"final_auc_{model}_{data}.png"
            title = f"{model} model, {data} training set: final test AUC per run"
            figures.violins(groups, os.path.join(fig_dir, name), "test AUC", title)
            lines += [f"![final test AUC, {model} model, {data} data](figures/{name})", ""]
    return lines


def measures_section(c, measures: Mapping, verdicts: StudyVerdicts, fig_dir: str) -> list[str]:
    groups: dict[tuple, dict] = {}
    for key, m in sorted(measures.items(), key=lambda item: item[0].seed):
        groups.setdefault((key.model, key.data, key.init), {})[key.seed] = m
    header = ["model", "data", "init", "runs", "final validation AUC", f"steps to validation AUC > {c.threshold:g}",
              f"steps to > {c.relative_threshold:g} x own final", "median relative weight change"]  # fmt: skip
    rows = [_measures_row(*group, list(items.values())) for group, items in groups.items()]
    return [
        "## Measures per group",
        "",
        *markdown_table(header, rows),
        "",
        *_curves_lines(c, groups, fig_dir),
        *_violin_lines(c, verdicts, fig_dir),
    ]


def _averaged(entries: Sequence[Mapping], method: str) -> str:
    """Mean ± sd over seeds (pairs) of one layer's scores, beside their nulls' mean and largest value."""
    scores = [e[method].score for e in entries]
    nulls_ = [e[method].null_mean for e in entries]
    return f"{_mean_sd(scores)} (null {np.mean(nulls_):.3f}, max {max(e[method].null_max for e in entries):.3f})"


def _unrelated_entries(s: ModelSimilarity, init: str) -> list[Mapping]:
    """The unrelated-network comparisons of one init's similarity to init (step 0 of a run against random runs of
    other seeds; for transfer, the checkpoint against each random run), in key order."""
    return [v for k, v in sorted(s.unrelated.items()) if k[0] == init]


def _similarity_rows(s: ModelSimilarity, methods: list[str]) -> tuple[list, list]:
    rows, pair_rows = [], []
    for init in ("random", "transfer"):
        entries = [v for k, v in sorted(s.to_init.items()) if k[0] == init]
        unrelated = _unrelated_entries(s, init)
        for layer in s.layers:
            cells = []
            for m in methods:
                null = [e[layer][m].score for e in unrelated]
                cells.append(f"{_averaged([e[layer] for e in entries], m)}; unrelated networks {_mean_sd(null)}")
            rows.append([init, layer, *cells])
    for kind, name in (("rand_rand", "Rand-Rand"), ("rand_imnet", "Rand-ImNet")):
        entries = [v for k, v in sorted(s.pairs.items()) if k[0] == kind]
        pair_rows += [[name, x, *[_averaged([e[x] for e in entries], m) for m in methods]] for x in s.layers]
    return rows, pair_rows


def _layer_figure(model: str, s: ModelSimilarity, method: str, confidence: float, fig_dir: str) -> str:
    """Per layer: similarity to init of random and transfer runs (mean over seeds, t interval) beside the
    unrelated-network null (mean, min-max band)."""
    series, nulls = {}, {}
    for init in ("random", "transfer"):
        entries = [v for k, v in sorted(s.to_init.items()) if k[0] == init]
        unrelated = _unrelated_entries(s, init)
        series[init], nulls[init] = {}, {}
        for layer in s.layers:
            i = stats.t_interval([e[layer][method].score for e in entries], confidence)
            low, high = (i.low, i.high) if i.defined else (i.estimate, i.estimate)
            series[init][layer] = (i.estimate, low, high)
            null = [e[layer][method].score for e in unrelated]
            nulls[init][layer] = (float(np.mean(null)), float(np.min(null)), float(np.max(null)))
    name = f"similarity_to_init_{model}.png"
    title = f"{model} model: {method}(step 0, final), {confidence:.0%} interval; unrelated-network null shaded"
    figures.layer_intervals(series, os.path.join(fig_dir, name), f"{method}(init, final)", nulls, title)
    return name


def _model_similarity_lines(c, model: str, s: ModelSimilarity, methods: list[str], fig_dir: str) -> list[str]:
    first = next(iter(s.to_init.values()))
    size = [
        f"{layer} n = {first[layer][methods[0]].n:,}, d = {first[layer][methods[0]].dx} "
        f"(n/d = {first[layer][methods[0]].n_per_dim:.0f})"
        for layer in s.layers
    ]
    rows, pair_rows = _similarity_rows(s, methods)
    name = _layer_figure(model, s, methods[0], c.confidence, fig_dir)
    return [
        f"### {model} model ({s.num_images} test images; {'; '.join(size)})",
        "",
        "Similarity of each layer at step 0 to itself after training (same run), full training set, beside two nulls: "
        "shuffled images, and unrelated networks (step 0 of the run against the random runs of the other seeds, "
        "which never started there; for transfer the checkpoint against each random run). C3 and C4 read the "
        "similarity minus the unrelated-network null:",
        "",
        *markdown_table(["init", "layer", *methods], rows),
        "",
        "Rand-Rand: every pair of random-init seeds (i < j); Rand-ImNet: random seed i vs transfer seed j, i != j:",
        "",
        *markdown_table(["pair", "layer", *methods], pair_rows),
        "",
        f"![similarity to init, {model} model](figures/{name})",
        "",
    ]


def similarity_section(c, similarity: Mapping[str, ModelSimilarity], fig_dir: str) -> list[str]:
    if not similarity:
        return []
    methods = list(c.similarity.methods)
    lines = [
        "## Representational similarity, each number beside its null",
        "",
        f"Per layer, {', '.join(methods)} (SVCCA keeps {c.similarity.svcca_keep:.0%} of the variance, its score is the "
        f"mean canonical correlation) on every test image, spatial positions as datapoints (at most "
        f"{c.similarity.positions} per image). Null: the same measure with one side's images shuffled "
        f"({c.similarity.null_permutations} permutations; mean and, after the seeds, the largest value), at the same "
        "n and d. Mean ± sd over seeds (pairs).",
        "",
    ]
    for model, s in similarity.items():
        lines += _model_similarity_lines(c, model, s, methods, fig_dir)
    return lines


def secondary_section(verdicts: StudyVerdicts) -> list[str]:
    if not verdicts.secondary:
        return []
    rows = [
        [s.name, s.scope, interval_text(s.interval, s.measure), _margin_text(s.margin, s.measure),
         _OUTCOME_WORDS.get(s.outcome, s.outcome)]
        for s in verdicts.secondary
    ]  # fmt: skip
    header = ["contrast", "scope", "estimate [95 % interval]", "margin", "interval vs margin"]
    return ["## Secondary numbers (reported, not judged)", "", *markdown_table(header, rows), ""]


def filters_section(checkpoints: Mapping[str, str], fig_dir: str) -> list[str]:
    rows = []
    for model, path in checkpoints.items():
        variables, _ = pretrained.load(path)
        kernel = np.asarray(variables["params"]["layer1"]["conv"]["kernel"])
        cells = [model]
        for name, k in {"pretrained": kernel, "Gabor bank": gabor_filters.gabor_bank(kernel.shape)}.items():
            file = f"conv1_{model}_{name.split()[0].lower()}.png"
            figures.filter_grid(k, os.path.join(fig_dir, file), scale=8)
            cells.append(f"![{name}](figures/{file})")
        rows.append(cells)
    if not rows:
        return []
    return [
        "## conv1 filters: pretrained on the source vs the synthetic Gabor bank",
        "",
        *markdown_table(["model", "pretrained conv1", "Gabor bank (C8)"], rows),
        "",
    ]


# ---------------------------------------------------------------- the whole report


def forest_rows(verdicts: StudyVerdicts) -> list[dict]:
    """One row per judged claim (and part) for `figures.forest_plot`: its interval, each seed's value, the rule's
    boundaries (the equivalence band shaded) and the verdict."""
    rows = []
    for v in verdicts.verdicts:
        for p in v.parts or [v]:
            if p.interval is None or not p.interval.defined or p.interval.estimate is None:
                continue
            bounds = stats.Rule(p.kind, p.margin, p.direction).boundaries()
            rows.append({
                "label": f"{p.claim} {p.scope}",
                "measure": _MEASURE_NAMES[p.measure],
                "estimate": p.interval.estimate,
                "low": p.interval.low,
                "high": p.interval.high,
                "boundaries": bounds,
                "band": (-p.margin, p.margin) if p.kind == "equivalence" else None,
                "per_seed": list(p.per_seed),
                "verdict": v.verdict,
            })  # fmt: skip
    return rows


def _verdicts_figure(verdicts: StudyVerdicts, fig_dir: str) -> None:
    figures.forest_plot(forest_rows(verdicts), os.path.join(fig_dir, "verdicts.png"))


def _eval_steps_text(steps: Sequence[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 12 else f"{', '.join(map(str, steps[:10]))}, ..., {steps[-1]}"


def setup_lines(c, timing: Timing) -> list[str]:
    cut = [m for m in MODELS if m not in c.models_run]
    grids = "; ".join(
        f"{data} data at {len(c.eval_steps[data])} steps ({_eval_steps_text(tuple(c.eval_steps[data]))})"
        for data in ("full", "small")
    )
    shipped = "the checkpoints shipped in the package (sha256 checked)" if c.sources == "shipped" else "pretrained here"
    lines = [
        f"- Code: {code_version()}.",
        f"- Pre-registration: {preregistration()}.",
        f"- Machine: {machine()}; load average {timing.load[0]:.1f} at the start, {timing.load[1]:.1f} at the end.",
        f"- Wall time of the invocation that wrote this report: {timing.wall:.0f} s ({timing.wall / 60:.1f} min; "
        f"CPU {timing.cpu:.0f} s), {memory_text(timing)}; it trained {timing.trained} of the {timing.runs} runs"
        + (" (the others had finished before or were shipped)." if timing.trained < timing.runs else "."),
        f"- Source: {c.source.classes} IFS-fractal classes, {c.source.train_per_class} train and "
        f"{c.source.test_per_class} test images each, {c.image_size} px; pretraining {c.pretrain.steps} steps of Adam "
        f"{c.pretrain.learning_rate:g} (constant), batch {c.batch_size}, no augmentation; here: {shipped}.",
        f"- Target: polarity lesions in the Kaggle DR layout, moderate DR (grade ≥ 2); {c.target.train} train images "
        f"(small training set: {c.target.small_train}, a stratified subset per seed), {c.target.validation} "
        f"validation (Public: steps to threshold, G3, G4), {c.target.test} test (Private: every AUC, final step).",
        f"- Models (CBR, 7x7 convs): small {tuple(c.widths.small)}, large {tuple(c.widths.large)}, Slim of the large "
        f"{tuple(c.slim_widths)}. Fine-tuning: {c.finetune.steps} steps of Adam {c.finetune.learning_rate:g} with "
        f"cosine decay, batch {c.batch_size}; validation on log-spaced steps: {grids}; seeds {list(c.seeds)}.",
        f"- Threshold {c.threshold:g} (absolute) and {c.relative_threshold:g} x each run's final validation AUC "
        f"(relative); equivalence margins: AUC {c.margins.auc:g}, steps ln {math.exp(c.margins.log_steps):.2f}, "
        f"similarity {c.margins.similarity:g}; smallest effects of interest: AUC {c.sesoi.auc:g}, steps ln "
        f"{math.exp(c.sesoi.log_steps):.2f}, similarity {c.sesoi.similarity:g}; C6's share {c.share:g}.",
    ]
    if cut:
        lines.append(f'- Not run here: the {", ".join(cut)} model (`models_run`); its claims read "{NOT_RUN}".')
    return lines


def write(
    workdir: str,
    c,
    verdicts: StudyVerdicts,
    measures: Mapping,
    diagnostics: Mapping,
    similarity: Mapping[str, ModelSimilarity],
    checkpoints: Mapping[str, str],
    timing: Timing,
) -> str:
    """DIR/report.md plus its PNGs under DIR/figures; returns the report's path. `checkpoints`: each model's
    pretrained checkpoint (its conv1 is drawn). The report names files relative to DIR only."""
    fig_dir = os.path.join(workdir, workdir_lib.FIGURES)
    os.makedirs(fig_dir, exist_ok=True)
    _verdicts_figure(verdicts, fig_dir)
    powers = power_table(verdicts, c)
    lines = [
        "# The miniature study: report",
        "",
        "Computed from the runs under `runs/` of this report's work directory by `python -m "
        f"transfusion_jax.experiments.quickstart` (configs/study.py:{c.variant}; design: docs/study.md). Nothing is "
        "typed in; rerun to regenerate.",
        "",
        "## Setup",
        "",
        *setup_lines(c, timing),
        "",
        "## Verdicts",
        "",
        *verdicts_section(c, verdicts, timing, {id(v): p for v, p in powers}),
        "",
        "Every claim: estimate and interval (open sides as arrows), each seed's value (a censored one as the range it "
        "lies in), the rule's boundaries (the equivalence band shaded; 0 and the smallest effect of interest as "
        "lines):",
        "",
        "![verdicts](figures/verdicts.png)",
        "",
        *gates_section(c, verdicts.gates, diagnostics, fig_dir),
        *claims_section(verdicts),
        *power_section(c, powers),
        *measures_section(c, measures, verdicts, fig_dir),
        *similarity_section(c, similarity, fig_dir),
        *secondary_section(verdicts),
        *filters_section(checkpoints, fig_dir),
    ]
    path = os.path.join(workdir, workdir_lib.REPORT)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- quoting and publishing


def verdicts_block(report_text: str) -> str:
    """The verdicts section of a report, markers included."""
    start, end = report_text.find(VERDICTS_BEGIN), report_text.find(VERDICTS_END)
    if start < 0 or end < start:
        raise ValueError("The report has no verdicts section (markers missing).")
    return report_text[start : end + len(VERDICTS_END)]


def quote_verdicts(report_path: str, documents: Sequence[str]) -> None:
    """Replaces the verdicts block of each document (between the same markers) with the report's, verbatim."""
    with open(report_path) as f:
        block = verdicts_block(f.read())
    for path in documents:
        with open(path) as f:
            text = f.read()
        old = verdicts_block(text)
        with open(path, "w") as f:
            f.write(text.replace(old, block))


def publish(workdir: str, out_dir: str, documents: Sequence[str]) -> str:
    """Copies DIR/report.md and the figures it links into `out_dir` (its old figures go), then quotes its verdicts
    block into each document; returns the copied report's path."""
    with open(os.path.join(workdir, workdir_lib.REPORT)) as f:
        text = f.read()
    linked = sorted(set(re.findall(r"\]\((figures/[^)]+)\)", text)))
    missing = [name for name in linked if not os.path.isfile(os.path.join(workdir, name))]
    if missing:
        raise FileNotFoundError(f"{workdir}/report.md links figures that are not there: {missing}")
    shutil.rmtree(os.path.join(out_dir, workdir_lib.FIGURES), ignore_errors=True)
    os.makedirs(os.path.join(out_dir, workdir_lib.FIGURES))
    for name in linked:
        shutil.copyfile(os.path.join(workdir, name), os.path.join(out_dir, name))
    report = os.path.join(out_dir, workdir_lib.REPORT)
    with open(report, "w") as f:
        f.write(text)
    quote_verdicts(report, documents)
    return report
