"""The paper's claims as paired effects: for each model, each init A against random init B of the same seeds,
the difference A - B in test AUC and in ln steps-to-threshold with a 95% interval, and a verdict per claim
(docs/statistics.md derives every interval and shows its coverage).

Measures (all from what each run recorded: summary.json and test_scores.npz):
- test AUC at the step selected on validation, and at the final step (binary tasks: the AUC; multi-output tasks:
  each class's AUC, as the paper's Table 2 reports each pathology). Interval: the seeds' spread plus the test-set
  noise the seeds share (DeLong; analysis.stats.auc_contrast); seeds only, said so, when a run lacks its
  test_scores.npz.
- ln of the steps until the test AUC is first above the paper's threshold (0.91 on Retina), and until the validation
  AUC is first above relative_threshold x the run's own final validation AUC. Interval: `stats.steps_interval`, each
  crossing censored to its cell of the run's evaluation grid, a run that never crossed to beyond its last
  evaluation (a side the censoring leaves unbounded is open).

Margins: AUC_MARGIN (one AUC point) for AUC; LOG_STEPS_MARGIN (a 25 % speed-up or slow-down) for steps.
Verdicts ("supported" / "contradicted" / "inconclusive") come from the interval and the margin, never from the point
estimate (analysis.stats.verdict); comparisons the paper makes no claim about get the interval's outcome only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from transfusion_jax.analysis import stats
from transfusion_jax.analysis.formatting import interval_text, points, ratio
from transfusion_jax.train import metrics as metrics_lib
from transfusion_jax.train import rundir

AUC_MARGIN = 0.01  # the paper's "comparable" differences are 0-0.3 AUC points (Table 1), its "helps" 2.4 (Table 3)
# Steps are compared on the log scale: a 25 % speed-up or slow-down (the paper's speed-ups are 1.3x-8.6x, §4.4)
LOG_STEPS_MARGIN = math.log(1.25)
LARGE_MODELS = ("resnet50", "inception_v3")


@dataclasses.dataclass(frozen=True)
class Claim:
    kind: str  # 'equivalent' | 'greater' | 'less', about A - B
    text: str


def claim_for(group: str, model: str, init: str, measure: str) -> Claim | None:
    """What the paper says about `init` - random for this group, model and measure ('auc' or 'steps')."""
    if init == "random":
        return None
    if measure == "auc":
        if group == "retina" and init == "transfer":
            return Claim("equivalent", "Table 1: transfer and random init perform comparably")
        if group == "retina_small" and init == "transfer":
            if model in LARGE_MODELS:
                return Claim("greater", "Table 3: with 5000 images transfer helps the large models")
            return Claim("equivalent", "Table 3: ... but not the small CBRs")
        if group == "chexpert" and init == "transfer":
            return Claim("equivalent", "Table 2: transfer does not help significantly")
    if measure == "steps" and group in ("retina", "hybrid"):
        return Claim("less", "Fig. 6 / Sec. 6: converges in fewer steps than random init")
    return None


@dataclasses.dataclass
class Effect:
    model: str
    init: str
    measure: str
    interval: stats.Interval
    margin: float
    claim: Claim | None
    verdict: str
    why: str


def _test_auc_keys(summary: dict) -> list[str]:
    final = (summary.get("test") or {}).get("final") or {}
    per_class = sorted(k for k in final if k.startswith("auc/"))
    return ["auc"] if len(per_class) <= 1 else per_class


def _auc_columns(scores: dict, key: str, when: str) -> tuple[np.ndarray, np.ndarray]:
    """(binary targets, ranking scores) behind one AUC key of test_scores.npz, as train.metrics ranks them (the
    logits' log-odds)."""
    logits, labels, mask = scores[f"{when}_logits"], scores["label"], scores["label_mask"]
    names = [str(n) for n in scores["label_names"]]
    columns = metrics_lib.auc_inputs(str(scores["loss"]), logits, labels, mask)
    return columns[0] if key == "auc" else columns[names.index(key[len("auc/") :])]


def auc_effect(pairs_a: list, pairs_b: list, key: str, when: str) -> stats.Interval:
    """Interval of the mean over seed pairs of test AUC(A) - AUC(B), `when` = 'selected' | 'final'. Each item of
    pairs_* is (summary, workdir) of one seed, in the same seed order."""
    scores = [rundir.load_test_scores(w) for _, w in pairs_a + pairs_b]
    usable = all(s is not None and f"{when}_logits" in s for s in scores) and all(
        np.array_equal(s["id"], scores[0]["id"]) for s in scores
    )
    if usable:
        labels = _auc_columns(scores[0], key, when)[0]
        columns = [_auc_columns(s, key, when)[1] for s in scores]
        n = len(pairs_a)
        return stats.averaged_auc_difference(labels, columns[:n], columns[n:])
    values = [(s.get("test") or {}).get(when, {}) or {} for s, _ in pairs_a + pairs_b]
    diffs = [a.get(key) - b.get(key) for a, b in zip(values[: len(pairs_a)], values[len(pairs_a) :])
             if isinstance(a.get(key), float) and isinstance(b.get(key), float)]  # fmt: skip
    interval = stats.t_interval(diffs)
    return dataclasses.replace(interval, method=interval.method + " (no test_scores.npz: seeds only)")


def evaluation_grid(summary: dict) -> list[int]:
    """The steps a run evaluated at: its explicit eval_steps, else every eval_every_steps, and its final step."""
    final = int(summary["final_step"])
    explicit = [int(s) for s in summary.get("eval_steps") or () if s <= final]
    every = int(summary.get("eval_every_steps") or final)
    return sorted(set(explicit or range(every, final + 1, every)) | {final})


def steps_effect(pairs_a: list, pairs_b: list, role: str, key: str) -> stats.Interval:
    """Interval of the mean over seed pairs of ln steps(A) - ln steps(B) on `role`'s curve (`stats.steps_interval`:
    each crossing censored to its cell of the evaluation grid, a run that never crossed to beyond its last step)."""
    grids = {tuple(evaluation_grid(s)) for s, _ in pairs_a + pairs_b}
    if len(grids) != 1:
        return stats.Interval(None, None, None, 0, "runs evaluated at different steps: no paired steps contrast")
    first_a = [(s.get(role) or {}).get(key) for s, _ in pairs_a]
    first_b = [(s.get(role) or {}).get(key) for s, _ in pairs_b]
    return stats.steps_interval(first_a, first_b, list(grids.pop()))


def _measures(summary: dict) -> list[tuple[str, str, str | None]]:
    """(label, kind, key) of every measure a pair of runs is compared on."""
    threshold, relative = summary.get("auc_threshold"), summary.get("relative_threshold")
    out = []
    for key in _test_auc_keys(summary):
        name = "" if key == "auc" else f" {key[len('auc/') :]}"
        out += [(f"test AUC{name} at the selected step", "auc", key), (f"test AUC{name} at the final step", "auc", key)]
    out += [
        (f"steps to test AUC > {threshold:g}", "steps", "test"),
        (f"steps to validation AUC > {relative:g} x final", "steps", "val"),
    ]
    return out


def effects(group: str, runs: Sequence) -> list[Effect]:
    """Every init against random init of the same model, over the seeds both have. `runs` items have .model, .init,
    .seed, .summary and .workdir (experiments.report.RunResult)."""
    by = {}
    for r in runs:
        by.setdefault((r.model, r.init), {})[r.seed] = (r.summary, r.workdir)
    out = []
    for (model, init), mine in by.items():
        base = by.get((model, "random"))
        if init == "random" or base is None:
            continue
        seeds = sorted(mine.keys() & base.keys())
        if not seeds:
            continue
        pairs_a, pairs_b = [mine[s] for s in seeds], [base[s] for s in seeds]
        for label, kind, key in _measures(pairs_a[0][0]):
            if kind == "auc":
                when = "selected" if "selected" in label else "final"
                interval, margin = auc_effect(pairs_a, pairs_b, key, when), AUC_MARGIN
            else:
                field = "steps_to_threshold" if key == "test" else "steps_to_relative_threshold"
                interval, margin = steps_effect(pairs_a, pairs_b, key, field), LOG_STEPS_MARGIN
            claim = claim_for(group, model, init, kind)
            if claim:
                verdict, why = stats.verdict(interval, margin, claim.kind)
            else:
                verdict, why = "", stats.outcome(interval, margin)
            out.append(Effect(model, init, label, interval, margin, claim, verdict, why))
    return out


# The interval's outcome for A - B in words that fit the measure (fewer steps is the good direction).
_WORDS = {
    "auc": {"better": "higher", "worse": "lower", "equivalent": "equivalent", "inconclusive": "spans the margin"},
    "steps": {
        "better": "more steps",
        "worse": "fewer steps",
        "equivalent": "equivalent",
        "inconclusive": "spans the margin",
    },
}


def describe(effect: Effect) -> str:
    """The verdict (or, without a claim, the outcome) with its reason in the measure's words."""
    words = _WORDS["steps" if effect.measure.startswith("steps") else "auc"]
    why = words.get(effect.why, effect.why)
    return f"**{effect.verdict}** ({why})" if effect.verdict else why


def format_interval(effect: Effect) -> str:
    """AUC in points; steps as the ratio of steps exp(ln A - ln B) the log contrast means."""
    return interval_text(effect.interval, ratio if effect.measure.startswith("steps") else points, missing="n/a")
