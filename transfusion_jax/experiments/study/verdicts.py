"""Verdicts: from each claim's effect (its interval, `contrasts`) and the gates (`gates`) to 'supported' /
'contradicted' / 'inconclusive', as docs/study.md §6-7 define them. Pure functions of numbers (no files, float64),
tested on constructed inputs whose answer is known.

A verdict comes from the interval and the claim's rule only (`analysis.stats.decide`: equivalence, directional with a
smallest effect of interest, non-inferiority), with its distance to the nearest decision boundary in half-widths.
Then the gates a claim names override it: G1 failed makes it "not testable" (the pretrained init is a random one);
G3 or G4 failed makes a supported or contradicted verdict inconclusive (and is named beside an inconclusive one); G2
failed adds a note. A claim's precondition (C6: transfer itself speeds convergence, a directional contrast
supported) that does not hold makes it "not assessable"; a claim of parts (C7) is supported when every part is,
contradicted when any part is. `power_table`: the seeds each claim's rule needs for 80 % power at its pre-registered
effect, from the spread its interval implies.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

from transfusion_jax.analysis import stats
from transfusion_jax.experiments.study.claims import Claim, Number, secondary, table
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
    kind: str  # analysis.stats.RULES
    margin: float
    interval: stats.Interval | None  # None: no runs to judge (MISSING) or a claim of parts
    verdict: str  # JUDGED, or one of MISSING, 'not testable', 'not assessable'
    why: str
    checks: tuple[tuple[str, "Verdict"], ...] = ()  # shown beside it: the relative threshold's, another measure's
    parts: tuple["Verdict", ...] = ()  # C7: its AUC and steps parts
    notes: tuple[str, ...] = ()
    distance: float | None = None  # half-widths from the nearest decision boundary (stats.robustness)
    direction: int = 1
    explained: tuple["Secondary", ...] = ()  # contrasts that split its effect (C5: scale and the rest)
    per_seed: tuple = ()  # each seed's value of the contrast, or the (low, high) censoring bounds it to


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
    final_auc: dict = dataclasses.field(default_factory=dict)  # RunKey -> the run's test AUC (what C1, C2, C7 read)


def judge(claim: Claim, measure: Measure, margin: float, interval: stats.Interval, contrast: str) -> Verdict:
    """The verdict the interval and the claim's rule give, before any gate."""
    if interval.estimate is None:
        verdict, why, distance = "inconclusive", "no runs to compare", None
    else:
        decision = stats.decide(interval, stats.Rule(claim.kind, margin, claim.direction))
        verdict, why, distance = decision.verdict, decision.why, decision.distance
    return Verdict(claim.id, claim.finding, claim.scope, contrast, measure.scale, claim.kind, margin, interval,
                   verdict, why, distance=distance, direction=claim.direction)  # fmt: skip


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
    found = stats.decide(interval, stats.Rule("directional", float(ev.c.sesoi[measure.scale]))).verdict
    if found == "supported":
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
                   None, verdict, why, parts=tuple(parts), notes=notes,
                   distance=min((p.distance for p in parts if p.distance is not None), default=None))  # fmt: skip


def claim_verdict(claim: Claim, ev: Evidence, gates, registry: Mapping[str, Measure] = MEASURES) -> Verdict:
    """One claim's verdict: its measure's interval per variant, judged, gated; the others beside the first."""
    if claim.parts:
        return _combined(claim, [claim_verdict(p, ev, gates, registry) for p in claim.parts])
    measure = registry[claim.measure]
    margin = claim.margin_of(ev.c)
    missing = measure.missing(ev, claim.terms)
    if missing:
        return Verdict(claim.id, claim.finding, claim.scope, claim.contrast, measure.scale, claim.kind, margin, None,
                       missing, missing, direction=claim.direction)  # fmt: skip
    variants = measure.variants(ev.c) if claim.beside else measure.variants(ev.c)[:1]
    per_seed = tuple(measure.per_seed(ev, claim.terms, variants[0].name))
    judged = []
    for variant in variants:
        interval = measure.interval(ev, claim.terms, variant.name)
        v = judge(claim, measure, margin, interval, claim.contrast + variant.contrast)
        judged.append((variant, gated(v, claim, gates)))
    main = _with_checks(judged[0][1], judged[1:])
    explained = tuple(x for x in (secondary_number(n, ev, registry) for n in claim.explained) if x is not None)
    main = dataclasses.replace(main, explained=explained, per_seed=per_seed)
    return _checked_precondition(main, claim, ev, registry) if claim.precondition else main


def secondary_number(n: Number, ev: Evidence, registry: Mapping[str, Measure] = MEASURES) -> Secondary | None:
    measure = registry[n.measure]
    if measure.missing(ev, n.terms):
        return None
    interval = measure.interval(ev, n.terms, measure.variants(ev.c)[0].name)
    margin = ev.c.margins[measure.scale]
    return Secondary(n.name, n.scope, measure.scale, interval, margin, stats.outcome(interval, margin))


@dataclasses.dataclass(frozen=True)
class Power:
    """How many seeds a claim's rule needs for 80 % power at its pre-registered effect, from the spread its own
    interval implies (`power_of`)."""

    effect: float  # the true contrast power is computed at: 0 (equivalence), the smallest effect of interest
    sd: float | None  # per-seed sd the interval implies; None where a side is open
    seeds: int  # seeds in this design
    power: float | None  # at `seeds`
    needed: int | None  # fewest seeds for `TARGET_POWER`; None: more than MOST_SEEDS (or no sd)


TARGET_POWER = 0.8
MOST_SEEDS = 100


def implied_sd(interval: stats.Interval, confidence: float) -> float | None:
    """The per-seed sd a t interval of this width over interval.n seeds would have: half-width x sqrt(n) /
    t_{(1+c)/2, n-1}. For the AUC, steps and R intervals (not plain t intervals) it is the sd of a t interval
    equally wide: the planning number the power table needs, with their extra terms (the shared test noise, the
    grid's censoring) folded in."""
    if interval is None or not interval.defined or interval.n < 2:
        return None
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return None
    t = float(scipy_stats.t.ppf((1 + confidence) / 2, interval.n - 1))
    return (interval.high - interval.low) / 2 * math.sqrt(interval.n) / t


def _needed(sd: float, effect: float, rule: stats.Rule, confidence: float) -> int | None:
    """Fewest seeds with power >= TARGET_POWER (doubling then bisection over `stats.power`, monotone in seeds)."""

    def enough(n: int) -> bool:
        return stats.power(sd, effect, rule, n, confidence, studies=4000) >= TARGET_POWER

    high = 2
    while not enough(high):
        if high >= MOST_SEEDS:
            return None
        high = min(2 * high, MOST_SEEDS)
    low = high // 2 if high > 2 else 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def power_of(v: Verdict, c) -> Power | None:
    """The claim's power at its pre-registered effect (equivalence: a true contrast of 0; directional: the smallest
    effect of interest in the claimed direction; non-inferiority: the steps' smallest effect of interest above the
    bound), with the per-seed sd its interval implies; None for a claim without an interval."""
    if v.interval is None or v.interval.estimate is None:
        return None
    if v.kind == "equivalence":
        effect = 0.0
    elif v.kind == "directional":
        effect = v.direction * v.margin
    else:
        effect = v.direction * float(c.sesoi[v.measure])
    rule = stats.Rule(v.kind, v.margin, v.direction)
    seeds = len(c.seeds)
    sd = implied_sd(v.interval, c.confidence)
    if sd is None or sd <= 0:
        return Power(effect, sd, seeds, None, None)
    now = stats.power(sd, effect, rule, seeds, c.confidence, studies=4000)
    return Power(effect, sd, seeds, now, _needed(sd, effect, rule, c.confidence))


def power_table(verdicts: "StudyVerdicts", c) -> list[tuple[Verdict, Power | None]]:
    """(verdict or part, its power) for every judged claim and part, in the report's order."""
    return [(p, power_of(p, c)) for v in verdicts.verdicts for p in (v.parts or [v]) if p.interval is not None]


def evaluate(
    c,
    measures: Mapping,
    labels: np.ndarray,
    diagnostics: Mapping,
    similarity: Mapping,
    layers: Mapping[str, Sequence[str]] | None = None,
    claims: Sequence[Claim] | None = None,
    registry: Mapping[str, Measure] = MEASURES,
) -> StudyVerdicts:
    """The gates and every verdict of the design. `measures`: {design.RunKey: measures.RunMeasures}; `labels`: the
    test labels; `diagnostics` / `similarity`: per model run, diagnose.Diagnostics / representations.ModelSimilarity;
    `layers`: each model's block names (default layer1..n); `claims` and `registry`: the claims table (default the
    design's, `claims.table(c)`) and the measures it names."""
    layers = {m: list((layers or {}).get(m) or [f"layer{i + 1}" for i in range(len(c.widths[m]))]) for m in MODELS}
    gates = all_gates(c, measures, diagnostics)
    by_scope = {(g.gate, g.scope): g for g in gates}
    ev = Evidence(c, measures, labels, similarity, layers)
    claims = table(c) if claims is None else claims
    verdicts = [claim_verdict(claim.resolved(layers), ev, by_scope, registry) for claim in claims]
    numbers = [secondary_number(n, ev, registry) for n in secondary(layers)]
    final_auc = {key: float(stats.delong(labels, m.test_scores)[0][0]) for key, m in measures.items()}
    return StudyVerdicts(gates, verdicts, [n for n in numbers if n is not None], layers, final_auc)
