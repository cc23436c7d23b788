"""The SSL study's report.md, its figures and ssl_study.json (every number of the report, strict JSON), rendered
from the records the other modules computed (nothing here computes a number a verdict uses), with paths relative
to the work directory only. `publish` copies a finished report where the docs show it:

  python -c "from transfusion_jax.experiments.ssl_study import report; report.publish('DIR', 'docs/ssl_report')"
"""

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

import transfusion_jax
from transfusion_jax.analysis import stats
from transfusion_jax.analysis.formatting import interval_text, signed
from transfusion_jax.experiments import figures
from transfusion_jax.experiments.report import markdown_table
from transfusion_jax.experiments.ssl_study.reuse import ProbeSummary, SimilarityCell
from transfusion_jax.experiments.ssl_study.verdicts import Check, Verdict
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.report import Timing, code_version, machine
from transfusion_jax.train import writer

REPORT = "report.md"
RECORD = "ssl_study.json"
FIGURES = workdir_lib.FIGURES
ARM_NAMES = {"random": "random init", "transfer": "ImageNet-style transfer", "ssl": "in-domain SSL"}

auc = signed(3)


@dataclasses.dataclass(frozen=True)
class Findings:
    """Everything the report shows."""

    verdicts: list[Verdict]
    checks: list[Check]
    aucs: dict[tuple[str, int], float]  # (arm, seed) -> test AUC
    final_val: dict[tuple[str, int], float]  # (arm, seed) -> final validation AUC
    curves: dict[str, list[dict[int, float]]]  # arm -> each seed's validation curve
    probes: ProbeSummary
    similarity: dict[str, dict[str, dict[str, SimilarityCell]]]  # method -> arm -> layer -> cell
    similarity_contrasts: dict[str, dict[str, dict[str, stats.Interval]]]  # method -> 'a - b' -> layer -> interval
    similarity_size: dict  # num_images, reduction, per layer n and d
    power: list[tuple[str, float, float, int | None]]
    ssl_summary: dict
    source_accuracy: float | None


# ---------------------------------------------------------------- words and numbers


def design_commit() -> str:
    """The commit that last changed docs/ssl_study.md (the pre-registration), from a git checkout; '' elsewhere."""
    try:
        return subprocess.run(
            ["git", "log", "-1", "--format=%h, %cs", "--", "docs/ssl_study.md"],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(transfusion_jax.__file__))),
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""


def _decision_text(v: Verdict) -> str:
    return f"**{v.verdict}** ({v.why})"


def _rule_text(v: Verdict) -> str:
    if v.claim.rule == "noninferiority":
        return f"non-inferiority: lower end > {-v.shift:+.3f}"
    return f"directional (> 0); smallest effect of interest {v.rule.margin:+.3f}"


def _distance(v: Verdict) -> str:
    d = v.decision.distance
    return "—" if d is None else f"{d:.2f}"


def _mean_sd(values: Sequence[float]) -> str:
    values = [float(x) for x in values]
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _interval_json(i: stats.Interval | None) -> dict | None:
    if i is None:
        return None
    return {"estimate": i.estimate, "low": i.low, "high": i.high, "n": i.n, "method": i.method}


# ---------------------------------------------------------------- figures


def forest(verdicts: Sequence[Verdict], path: str) -> str:
    """Each claim's contrast: its 95 % interval as a bar, the estimate, every seed's value as a dot, and the rule's
    decision boundaries as dashed lines (0 solid)."""
    fig = Figure(figsize=(7.5, 1.1 + 0.8 * len(verdicts)))
    ax = fig.add_subplot()
    ends = [0.0]
    for y, v in enumerate(verdicts):
        i = v.interval
        ax.plot([i.low, i.high], [y, y], color="C0", lw=3, solid_capstyle="butt")
        ax.plot([i.estimate], [y], "o", color="C0", ms=7)
        ax.plot(v.per_seed, [y + 0.18] * len(v.per_seed), ".", color="0.4", ms=6)
        for b in v.boundaries:
            ax.plot([b, b], [y - 0.35, y + 0.35], "--", color="C3", lw=1)
        ax.text(i.high, y - 0.22, f"  {v.verdict}", fontsize=8, va="center")
        ends += [i.low, i.high, *v.per_seed, *v.boundaries]
    ax.axvline(0.0, color="k", lw=0.8)
    span = max(ends) - min(ends) or 0.02
    ax.set_xlim(min(ends) - 0.1 * span, max(ends) + 0.35 * span)
    ax.set_yticks(range(len(verdicts)), [f"{v.claim.id}: {v.claim.contrast}" for v in verdicts], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test AUC difference (95 % interval; dots: seeds; dashed: decision boundaries)")
    ax.grid(axis="x", alpha=0.3)
    return figures.save_figure(fig, path)


def similarity_figure(cells: Mapping[str, Mapping[str, SimilarityCell]], method: str, path: str) -> str:
    """Per block and arm: similarity to init with its 95 % interval (filled), the unrelated-network null (open
    circle) and the shuffled-image null's largest value (x)."""
    fig = Figure(figsize=(7.5, 4))
    ax = fig.add_subplot()
    layers = list(next(iter(cells.values())))
    width = 0.8 / len(cells)
    for k, (arm, by_layer) in enumerate(cells.items()):
        x = np.arange(len(layers)) + (k - (len(cells) - 1) / 2) * width
        est = [by_layer[layer].to_init.estimate for layer in layers]
        err = [[e - by_layer[layer].to_init.low for e, layer in zip(est, layers)],
               [by_layer[layer].to_init.high - e for e, layer in zip(est, layers)]]  # fmt: skip
        ax.errorbar(x, est, yerr=err, fmt="o", color=f"C{k}", capsize=3, label=f"{arm}: to init")
        ax.plot(x, [by_layer[layer].unrelated for layer in layers], "o", mfc="none", color=f"C{k}",
                label=f"{arm}: unrelated-network null")  # fmt: skip
        ax.plot(x, [by_layer[layer].shuffled_max for layer in layers], "x", color=f"C{k}", alpha=0.6)
    ax.plot([], [], "x", color="0.4", label="shuffled-image null (largest)")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel(f"{method}(block at step 0, at the end)")
    ax.set_title(f"Similarity to init per block, beside its nulls ({method})")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return figures.save_figure(fig, path)


def probe_figure(summary: ProbeSummary, path: str) -> str:
    values = {arm: {x: i.estimate for x, i in by.items()} for arm, by in summary.auc.items()}
    errors = {arm: {x: i.high - i.estimate for x, i in by.items()} for arm, by in summary.auc.items()}
    return figures.grouped_bars(values, path, "test AUC of a linear probe of the init",
                                "Probes of each arm's init per block (95 % intervals; chance 0.5)", errors)  # fmt: skip


# ---------------------------------------------------------------- sections


def setup_lines(c, f: Findings, timing: Timing) -> list[str]:
    s, sc = c.study, f.ssl_summary
    commit = design_commit()
    return [
        f"- Code: {code_version()}."
        + (f" The design (docs/ssl_study.md) was last changed at commit {commit}." if commit else ""),
        f"- Machine: {machine()}; load average {timing.load[0]:.1f} at the start, {timing.load[1]:.1f} at the end.",
        f"- Wall time of the invocation that wrote this report: {timing.wall:.0f} s ({timing.wall / 60:.1f} min; CPU "
        f"{timing.cpu:.0f} s); it trained {timing.trained} of the {timing.runs} runs (pretraining included).",
        f"- Data: the miniature study's (docs/study.md §1): source {s.source.classes} fractal classes; target "
        f"{s.target.train} train, {s.target.validation} validation, {s.target.test} test images, {s.image_size} px. "
        f"Little data: {s.target.small_train} labelled images, a stratified subset per seed.",
        f"- Model: the study's {c.model} CBR {tuple(s.widths[c.model])}. Fine-tuning: the study's recipe, "
        f"{s.finetune.steps} steps, batch {s.batch_size}; validation at steps {', '.join(map(str, c.eval_steps))}; "
        f"seeds {list(s.seeds)}.",
        f"- transfer: the study's source checkpoint ({s.pretrain.steps} steps of supervised pretraining; source test "
        f"accuracy {f.source_accuracy:.3f})."
        if f.source_accuracy is not None
        else "- transfer: the study's source checkpoint.",
        f"- ssl: {sc['method']} on the {sc['train_examples']} unlabeled target training images, {sc['num_train_steps']}"
        f" steps of {sc['batch_size']} ({sc['epochs']:.1f} epochs), overrides {list(c.ssl.overrides)}; final loss "
        f"{(sc.get('final') or {}).get('loss', float('nan')):.3f}.",
    ]


def verdicts_section(c, f: Findings) -> list[str]:
    header = ["id", "claim", "contrast", "effect [95 % interval]", "rule", "verdict", "distance (half-widths)"]
    rows = [[v.claim.id, v.claim.statement, v.claim.contrast, interval_text(v.interval, auc), _rule_text(v),
             _decision_text(v), _distance(v)] for v in f.verdicts]  # fmt: skip
    gates = ", ".join(f"{g.gate} {g.scope} {'passes' if g.passed else 'FAILS'}" for g in f.checks)
    notes = [f"- {v.claim.id}: {note}" for v in f.verdicts for note in v.notes]
    return [
        f"**Gates**: {gates}.",
        "",
        *markdown_table(header, rows),
        "",
        *notes,
        *([""] if notes else []),
        f"Estimates are means over {len(c.study.seeds)} seeds of paired contrasts of the test AUC at the final step; "
        f"intervals at {c.confidence:.0%}: the seeds' spread plus the test-set noise the seeds share (DeLong; "
        "`stats.auc_contrast`). Verdicts by `stats.decide` (docs/ssl_study.md §5); the distance is how far the nearest "
        f"interval end lies from a decision boundary, in half-widths. {len(f.verdicts)} verdicts at "
        f'{c.confidence:.0%} each, no multiplicity correction: one "supported" or "contradicted" among them can be a '
        "chance finding.",
        "",
        "![forest plot of the claims](figures/ssl_forest.png)",
        "",
    ]


def gates_section(f: Findings) -> list[str]:
    rows = [[g.gate, g.scope, "passes" if g.passed else "**FAILS**", g.detail] for g in f.checks]
    return ["## Gates", "", *markdown_table(["gate", "scope", "outcome", "numbers"], rows), ""]


def auc_section(c, f: Findings) -> list[str]:
    seeds = list(c.study.seeds)
    rows = [[ARM_NAMES[a], _mean_sd([f.final_val[a, s] for s in seeds]),
             ", ".join(f"{f.aucs[a, s]:.3f}" for s in seeds), _mean_sd([f.aucs[a, s] for s in seeds])]
            for a in c.arms]  # fmt: skip
    header = ["arm", "final validation AUC", f"test AUC, seeds {seeds}", "test AUC mean ± sd"]
    return [
        "## Test AUC per arm",
        "",
        *markdown_table(header, rows),
        "",
        "![validation AUC per arm](figures/ssl_val_auc.png)",
        "",
    ]


def probes_section(c, f: Findings) -> list[str]:
    p = f.probes
    header = ["block", *[ARM_NAMES[a] for a in c.arms], *p.contrasts]
    rows = [[x, *[interval_text(p.auc[a][x], lambda v: f"{v:.3f}") for a in c.arms],
             *[interval_text(p.contrasts[k][x], auc) for k in p.contrasts]] for x in p.layers]  # fmt: skip
    return [
        "### Linear probes of the init, per block",
        "",
        f"Each run's step-0 network (eval mode), global-average-pooled block features, a linear probe (standardised, "
        f"L2 logistic regression, C = {c.probe_c:g}) fitted on that seed's {c.study.target.small_train} labelled "
        f"images and scored on the {c.study.target.test} test images: mean AUC over seeds and contrasts between arms, "
        "95 % intervals (`stats.auc_contrast`). Random init's column is the baseline: what a block holds before any "
        "pretraining.",
        "",
        *markdown_table(header, rows),
        "",
        "![probes per block](figures/ssl_probes.png)",
        "",
    ]


def similarity_section(c, f: Findings) -> list[str]:
    lines = [
        "### Similarity to init, per block, beside its nulls",
        "",
        f"Per run and block: the block's activations at step 0 against step {c.study.finetune.steps} of the same run, "
        f"on the {f.similarity_size['num_images']} test images, spatial positions as datapoints (at most "
        f"{c.study.similarity.positions} per image; {f.similarity_size['sizes']}). Nulls: the shuffled-image null "
        f"({c.study.similarity.null_permutations} permutations; mean, largest) and the unrelated-network null (the "
        "run's step-0 block against the final block of the random-init runs of the other seeds). Kept = similarity "
        "to init minus the unrelated-network null, per seed; 95 % t intervals over seeds.",
        "",
    ]
    for method, cells in f.similarity.items():
        header = ["arm", "block", "to init [95 %]", "shuffled-image null (mean; max)", "unrelated-network null",
                  "kept [95 %]"]  # fmt: skip
        rows = [[ARM_NAMES[a], x, interval_text(cell.to_init, lambda v: f"{v:.3f}"),
                 f"{cell.shuffled_mean:.3f}; {cell.shuffled_max:.3f}", f"{cell.unrelated:.3f}",
                 interval_text(cell.kept, auc)] for a, by in cells.items() for x, cell in by.items()]  # fmt: skip
        contrasts = f.similarity_contrasts[method]
        layers = list(next(iter(cells.values())))
        crows = [[k, *[interval_text(contrasts[k][x], auc) for x in layers]] for k in contrasts]
        lines += [
            f"**{method}**",
            "",
            *markdown_table(header, rows),
            "",
            f"Kept, paired by seed ({method}):",
            "",
            *markdown_table(["contrast", *layers], crows),
            "",
            f"![similarity to init, {method}](figures/ssl_similarity_{method}.png)",
            "",
        ]
    return lines


def power_section(f: Findings) -> list[str]:
    rows = [[cid, f"{sd:.4f}", f"{effect:+.3f}", "more than 200" if n is None else n] for cid, sd, effect, n in f.power]
    return [
        "## Power at the observed spread (post hoc: a planning number for a rerun)",
        "",
        "Seeds each claim would need for 80 % power (`stats.power`: the t interval of N(effect, sd²) per seed) at the "
        "per-seed sd this run observed; S1 at SSL equal to transfer (effect = the margin on the shifted scale), S0 and "
        "S2 at the smallest effect of interest. The design's own power table is docs/ssl_study.md §8.",
        "",
        *markdown_table(["claim", "per-seed sd of the contrast", "effect", "seeds for 80 % power"], rows),
        "",
    ]


def limits_lines(c) -> list[str]:
    return [
        "## What this run cannot show",
        "",
        f"- One model (the study's {c.model} CBR) and one training-set size: the large model does not fit the "
        "10-minute budget (docs/ssl_study.md §2).",
        "- One checkpoint per pretraining (source and SSL, seed 0 each): the intervals hold the fine-tuning seeds' "
        "variability, not that of pretraining.",
        "- Generated data in which the label is the polarity of small lesions (docs/study.md §1.2): a world built so "
        "that frozen random features do not solve the task; natural and medical images differ from it.",
        "",
    ]


def record(c, f: Findings, timing: Timing) -> dict:
    """Every number of the report, as strict JSON."""
    seeds = list(c.study.seeds)
    return {
        "design": c.to_dict(),
        "code": code_version(),
        "design_commit": design_commit(),
        "timing": dataclasses.asdict(timing),
        "gates": [dataclasses.asdict(g) for g in f.checks],
        "verdicts": [
            {
                "claim": v.claim.id,
                "statement": v.claim.statement,
                "contrast": v.claim.contrast,
                "rule": dataclasses.asdict(v.rule),
                "shift": v.shift,
                "boundaries": list(v.boundaries),
                "interval": _interval_json(v.interval),
                "per_seed": v.per_seed,
                "decision": dataclasses.asdict(v.decision),
                "verdict": v.verdict,
                "why": v.why,
                "notes": list(v.notes),
            }
            for v in f.verdicts
        ],  # fmt: skip
        "test_auc": {a: {str(s): f.aucs[a, s] for s in seeds} for a in c.arms},
        "final_validation_auc": {a: {str(s): f.final_val[a, s] for s in seeds} for a in c.arms},
        "probes": {
            "auc": {a: {x: _interval_json(i) for x, i in by.items()} for a, by in f.probes.auc.items()},
            "contrasts": {k: {x: _interval_json(i) for x, i in by.items()} for k, by in f.probes.contrasts.items()},
        },
        "similarity": {
            method: {
                "cells": {
                    a: {
                        x: {
                            **{k: v for k, v in dataclasses.asdict(cell).items() if k not in ("to_init", "kept")},
                            "to_init": _interval_json(cell.to_init),
                            "kept": _interval_json(cell.kept),
                        }
                        for x, cell in by.items()
                    }
                    for a, by in cells.items()
                },
                "kept_contrasts": {
                    k: {x: _interval_json(i) for x, i in by.items()} for k, by in f.similarity_contrasts[method].items()
                },
            }
            for method, cells in f.similarity.items()
        },  # fmt: skip
        "similarity_size": f.similarity_size,
        "power": [{"claim": cid, "sd": sd, "effect": e, "seeds_for_80": n} for cid, sd, e, n in f.power],
        "ssl_pretraining": {k: v for k, v in f.ssl_summary.items() if k != "pretrained"},
        "source_accuracy": f.source_accuracy,
    }


def write(workdir: str, c, f: Findings, timing: Timing) -> str:
    """DIR/report.md, DIR/ssl_study.json and the figures under DIR/figures; returns the report's path."""
    fig_dir = os.path.join(workdir, FIGURES)
    os.makedirs(fig_dir, exist_ok=True)
    forest(f.verdicts, os.path.join(fig_dir, "ssl_forest.png"))
    figures.auc_curves(f.curves, os.path.join(fig_dir, "ssl_val_auc.png"), c.study.threshold,
                       f"{c.model} model, {c.study.target.small_train} labelled images: validation AUC (mean, min-max)",
                       ylabel="validation AUC", log_steps=True)  # fmt: skip
    probe_figure(f.probes, os.path.join(fig_dir, "ssl_probes.png"))
    for method, cells in f.similarity.items():
        similarity_figure(cells, method, os.path.join(fig_dir, f"ssl_similarity_{method}.png"))
    lines = [
        "# In-domain self-supervised init against ImageNet-style transfer on little data: report",
        "",
        "Computed from the runs under `runs/` and `ssl/` of this report's work directory by `python -m "
        f"transfusion_jax.experiments.ssl_study` ({c.variant}; design, fixed before the run: docs/ssl_study.md). "
        "Nothing is typed in; rerun to regenerate.",
        "",
        "## Setup",
        "",
        *setup_lines(c, f, timing),
        "",
        "## Verdicts",
        "",
        *verdicts_section(c, f),
        *gates_section(f),
        *auc_section(c, f),
        "## Where the features are reused",
        "",
        *probes_section(c, f),
        *similarity_section(c, f),
        *power_section(f),
        *limits_lines(c),
    ]
    path = os.path.join(workdir, REPORT)
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
    with open(os.path.join(workdir, RECORD), "w") as out:
        out.write(writer.dumps(record(c, f, timing), indent=1) + "\n")
    return path


def publish(workdir: str, out_dir: str) -> str:
    """Copies DIR/report.md, DIR/ssl_study.json and the figures the report links into `out_dir` (its old figures
    go); returns the copied report's path."""
    with open(os.path.join(workdir, REPORT)) as f:
        text = f.read()
    linked = sorted(set(re.findall(r"\]\((figures/[^)]+)\)", text)))
    shutil.rmtree(os.path.join(out_dir, FIGURES), ignore_errors=True)
    os.makedirs(os.path.join(out_dir, FIGURES))
    for name in [*linked, REPORT, RECORD]:
        shutil.copyfile(os.path.join(workdir, name), os.path.join(out_dir, name))
    return os.path.join(out_dir, REPORT)


def sizes_text(sim) -> str:
    """'layer1 n = 35,200, d = 8; ...' of a similarity record (the first run's first measure)."""
    first = next(iter(sim.to_init.values()))
    parts = []
    for x in sim.layers:
        score = next(iter(first[x].values()))
        parts.append(f"{x} n = {score.n:,}, d = {score.dx} (n/d = {score.n_per_dim:.0f})")
    return "; ".join(parts)
