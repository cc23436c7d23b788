"""Verdicts: from each claim's effect (its interval, `contrasts`) and the gates (`gates`) to 'supported' /
'contradicted' / 'inconclusive', as docs/study.md §6-7 define them. Pure functions of numbers (no files), tested on
constructed inputs whose answer is known.

A verdict comes from the interval and the margin only (`analysis.stats.verdict`). Then the gates a claim names
override it: G1 failed makes it "not testable" (the pretrained init is a random one); G3 or G4 failed makes a
supported or contradicted verdict inconclusive (and is named beside an inconclusive one); G2 failed adds a note. A
claim's precondition (C6: transfer itself speeds convergence) that does not hold makes it "not assessable"; a claim
of parts (C7) is supported when every part is, contradicted when any part is.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from transfusion_jax.analysis import stats
from transfusion_jax.experiments.study.claims import CLAIMS, Claim, Number, secondary
from transfusion_jax.experiments.study.contrasts import MEASURES, NOT_IN_DESIGN, NOT_RUN, Evidence, Measure
from transfusion_jax.experiments.study.design import MODELS
from transfusion_jax.experiments.study.gates import Gate, all_gates

JUDGED = ("supported", "contradicted", "inconclusive")
MISSING = (NOT_RUN, NOT_IN_DESIGN)


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: str
    finding: str
    scope: str
    contrast: str
    measure: str  # the scale: 'auc' | 'log_steps' | 'similarity' | parts joined by '+'
    kind: str  # 'equivalent' | 'greater'
    margin: float
    interval: stats.Interval | None  # None: no runs to judge (MISSING) or a claim of parts
    verdict: str  # JUDGED, or one of MISSING, 'not testable', 'not assessable'
    why: str
    checks: tuple[tuple[str, "Verdict"], ...] = ()  # shown beside it: the relative threshold's, another measure's
    parts: tuple["Verdict", ...] = ()  # C7: its AUC and steps parts
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Secondary:
    """A number the design reports without a verdict: its interval and where the interval lies against the margin."""

    name: str
    scope: str
    measure: str
    interval: stats.Interval
    margin: float
    outcome: str


@dataclasses.dataclass(frozen=True)
class StudyVerdicts:
    gates: list[Gate]
    verdicts: list[Verdict]
    secondary: list[Secondary]
    layers: dict[str, list[str]]


def judge(claim: Claim, measure: Measure, margin: float, interval: stats.Interval, contrast: str) -> Verdict:
    """The verdict the interval and the margin give, before any gate."""
    if interval.estimate is None:
        verdict, why = "inconclusive", "no runs to compare"
    else:
        verdict, why = stats.verdict(interval, margin, claim.kind)
    return Verdict(claim.id, claim.finding, claim.scope, contrast, measure.scale, claim.kind, margin, interval,
                   verdict, why)  # fmt: skip


def _overruled(v: Verdict, gate: str, failed: str) -> Verdict:
    """A failed gate G3/G4: a verdict the interval gives is inconclusive; an inconclusive one names the gate too."""
    if v.verdict in ("supported", "contradicted"):
        why = f"{v.verdict} by the interval, but {gate} failed for {failed}"
        return dataclasses.replace(v, verdict="inconclusive", why=why)
    return dataclasses.replace(v, why=f"{v.why}; {gate} failed for {failed} as well")


def gated(v: Verdict, claim: Claim, gates: Mapping[tuple[str, str], Gate]) -> Verdict:
    """`v` after the gates `claim` names (see the module docstring)."""
    model = claim.model
    if "G1" in claim.gates and not gates["G1", model].passed:
        why = f"G1 failed for the {model} model: the pretrained init is a random one"
        return dataclasses.replace(v, verdict="not testable", why=why)
    if "G3" in claim.gates and not gates["G3", model].passed:
        v = _overruled(v, "G3", f"the {model} model")
    if "G4" in claim.gates:
        groups = dict.fromkeys(" / ".join(term[1:]) for term in claim.terms)
        unstable = [g for g in groups if not gates["G4", g].passed]
        if unstable:
            v = _overruled(v, "G4", ", ".join(unstable))
    if "G2" in claim.gates and not gates["G2", model].passed:
        note = f"G2 failed for the {model} model: part of the threshold is reachable without learning features."
        v = dataclasses.replace(v, notes=(*v.notes, note))
    return v


def _with_checks(main: Verdict, beside: Sequence[tuple]) -> Verdict:
    """`main` with the verdicts of its measure's other variants beside it, and a note where they disagree."""
    notes = list(main.notes)
    for variant, v in beside:
        if v.verdict != main.verdict:
            notes.append(variant.disagree.format(verdict=v.verdict, why=v.why))
    return dataclasses.replace(main, checks=tuple((variant.beside, v) for variant, v in beside), notes=tuple(notes))


def _checked_precondition(v: Verdict, claim: Claim, ev: Evidence, registry: Mapping[str, Measure]) -> Verdict:
    p = claim.precondition
    measure = registry[p.measure]
    interval = measure.interval(ev, p.terms, measure.variants(ev.c)[0].name)
    found = stats.outcome(interval, ev.c.margins[measure.scale])
    if found == p.outcome:
        return v
    note = f"{p.failure} ({p.contrast}: {found}), so {claim.id} is not assessable (docs/study.md §6)."
    why = f"{v.verdict} by the interval; {p.what} is {found}"
    return dataclasses.replace(v, verdict="not assessable", why=why, notes=(*v.notes, note))


def _combined(claim: Claim, parts: list[Verdict]) -> Verdict:
    """A claim of parts (`claims.AllParts`)."""
    verdicts = [p.verdict for p in parts]
    if parts[0].interval is None:
        verdict = why = parts[0].verdict
    elif "contradicted" in verdicts:
        verdict, why = "contradicted", claim.combine.contradicted
    elif all(x == "supported" for x in verdicts):
        verdict, why = "supported", claim.combine.supported
    else:
        verdict, why = "inconclusive", claim.combine.otherwise
    notes = tuple(note for p in parts for note in p.notes)
    return Verdict(claim.id, claim.finding, claim.scope, claim.contrast, claim.measure, claim.kind, parts[0].margin,
                   None, verdict, why, parts=tuple(parts), notes=notes)  # fmt: skip


def claim_verdict(claim: Claim, ev: Evidence, gates, registry: Mapping[str, Measure] = MEASURES) -> Verdict:
    """One claim's verdict: its measure's interval per variant, judged, gated; the others beside the first."""
    if claim.parts:
        return _combined(claim, [claim_verdict(p, ev, gates, registry) for p in claim.parts])
    measure = registry[claim.measure]
    margin = ev.c.margins[claim.margin]
    missing = measure.missing(ev, claim.terms)
    if missing:
        return Verdict(claim.id, claim.finding, claim.scope, claim.contrast, measure.scale, claim.kind, margin, None,
                       missing, missing)  # fmt: skip
    variants = measure.variants(ev.c) if claim.beside else measure.variants(ev.c)[:1]
    judged = []
    for variant in variants:
        interval = measure.interval(ev, claim.terms, variant.name)
        v = judge(claim, measure, margin, interval, claim.contrast + variant.contrast)
        judged.append((variant, gated(v, claim, gates)))
    main = _with_checks(judged[0][1], judged[1:])
    return _checked_precondition(main, claim, ev, registry) if claim.precondition else main


def secondary_number(n: Number, ev: Evidence, registry: Mapping[str, Measure] = MEASURES) -> Secondary | None:
    measure = registry[n.measure]
    if measure.missing(ev, n.terms):
        return None
    interval = measure.interval(ev, n.terms, measure.variants(ev.c)[0].name)
    margin = ev.c.margins[measure.scale]
    return Secondary(n.name, n.scope, measure.scale, interval, margin, stats.outcome(interval, margin))


def evaluate(
    c,
    measures: Mapping,
    labels: np.ndarray,
    diagnostics: Mapping,
    similarity: Mapping,
    layers: Mapping[str, Sequence[str]] | None = None,
    claims: Sequence[Claim] = CLAIMS,
    registry: Mapping[str, Measure] = MEASURES,
) -> StudyVerdicts:
    """The gates and every verdict of the design. `measures`: {design.RunKey: measures.RunMeasures}; `labels`: the
    test labels; `diagnostics` / `similarity`: per model run, diagnose.Diagnostics / representations.ModelSimilarity;
    `layers`: each model's block names (default layer1..n); `claims` and `registry`: the claims table and the
    measures it names."""
    layers = {m: list((layers or {}).get(m) or [f"layer{i + 1}" for i in range(len(c.widths[m]))]) for m in MODELS}
    gates = all_gates(c, measures, diagnostics)
    by_scope = {(g.gate, g.scope): g for g in gates}
    ev = Evidence(c, measures, labels, similarity, layers)
    verdicts = [claim_verdict(claim.resolved(layers), ev, by_scope, registry) for claim in claims]
    numbers = [secondary_number(n, ev, registry) for n in secondary(layers)]
    return StudyVerdicts(gates, verdicts, [n for n in numbers if n is not None], layers)
