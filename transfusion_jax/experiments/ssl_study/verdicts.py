"""The SSL study's claims and gates (docs/ssl_study.md §5-6): pure functions from the runs' test scores and the
pretraining summaries to each claim's interval and verdict, tested on constructed inputs whose answer is known.

A claim's interval is the study's AUC contrast (`stats.auc_contrast`, paired by seed); its verdict is
`stats.decide` under the claim's rule: S1 non-inferiority against -margin (decided on the contrast shifted by
+margin, so that the bound is 0), S0 and S2 directional with a smallest effect of interest. Then the gates: P
(the pretext task was learned) or the source accuracy failing makes the claims that need them "not testable"; G4
failing for a group a claim compares makes a supported or contradicted verdict inconclusive (the study's rule).
"""

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from transfusion_jax.analysis import stats
from transfusion_jax.experiments.study import gates as study_gates


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    contrast: str
    terms: tuple[tuple[float, str], ...]  # (coefficient, arm)
    rule: str  # 'noninferiority' | 'directional'
    needs: tuple[str, ...]  # gates that make it "not testable" when failed ('P', 'source')


CLAIMS = (
    Claim("S1", "In-domain self-supervised init reaches ImageNet-transfer performance on little data.",
          "AUC(ssl) - AUC(transfer)", ((1.0, "ssl"), (-1.0, "transfer")), "noninferiority", ("P", "source")),
    Claim("S2", "In-domain self-supervised init beats random init on little data.", "AUC(ssl) - AUC(random)",
          ((1.0, "ssl"), (-1.0, "random")), "directional", ("P",)),
    Claim("S0", "(the comparator) ImageNet transfer beats random init on little data.", "AUC(transfer) - AUC(random)",
          ((1.0, "transfer"), (-1.0, "random")), "directional", ("source",)),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Check:
    """A gate: P, source (G1's accuracy part) or G4 of one arm's runs."""

    gate: str
    scope: str
    passed: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: Claim
    interval: stats.Interval  # of the contrast itself (not shifted)
    per_seed: list[float]  # the contrast of each seed's runs (sum of c_t AUC)
    rule: stats.Rule
    shift: float  # added to the interval before `stats.decide` (S1: +margin)
    boundaries: tuple[float, ...]  # where the verdict changes, on the contrast's own scale
    decision: stats.Decision  # the interval's, before gates
    verdict: str  # after the gates
    why: str
    notes: tuple[str, ...] = ()


def rule_of(claim: Claim, c) -> tuple[stats.Rule, float]:
    """(rule, shift): S1's bound -margin becomes 0 by adding +margin to the contrast."""
    if claim.rule == "noninferiority":
        return stats.Rule("noninferiority"), float(c.noninferiority_margin)
    return stats.Rule("directional", margin=float(c.sesoi)), 0.0


def shifted(interval: stats.Interval, shift: float) -> stats.Interval:
    move = lambda x: None if x is None else x + shift  # noqa: E731
    return dataclasses.replace(interval, estimate=move(interval.estimate), low=move(interval.low),
                               high=move(interval.high))  # fmt: skip


def run_aucs(scores: Mapping[tuple[str, int], np.ndarray], labels: np.ndarray) -> dict[tuple[str, int], float]:
    """Each run's test AUC (DeLong's, which equals sklearn's roc_auc_score with ties counted one half)."""
    return {k: float(stats.delong(labels, v)[0][0]) for k, v in scores.items()}


def contrast_interval(scores: Mapping, labels: np.ndarray, terms, seeds: Sequence[int], confidence: float):
    """(interval, per-seed values) of sum_t c_t AUC(arm_t) over the seeds."""
    groups = [[scores[arm, s] for s in seeds] for _, arm in terms]
    interval = stats.auc_contrast(labels, groups, [coef for coef, _ in terms], confidence)
    aucs = run_aucs({(arm, s): scores[arm, s] for _, arm in terms for s in seeds}, labels)
    return interval, [sum(coef * aucs[arm, s] for coef, arm in terms) for s in seeds]


def judge(claim: Claim, interval: stats.Interval, per_seed: list[float], c) -> Verdict:
    rule, shift = rule_of(claim, c)
    decision = stats.decide(shifted(interval, shift), rule)
    boundaries = tuple(b - shift for b in rule.boundaries())
    return Verdict(claim, interval, per_seed, rule, shift, boundaries, decision, decision.verdict, decision.why)


def gated(v: Verdict, checks: Sequence[Check]) -> Verdict:
    """`v` after the gates (module docstring)."""
    failed = {(g.gate, g.scope) for g in checks if not g.passed}
    for gate in v.claim.needs:
        scopes = [s for g, s in failed if g == gate]
        if scopes:
            why = f"gate {gate} failed ({scopes[0]}): {GATE_MEANING[gate]}"
            return dataclasses.replace(v, verdict="not testable", why=why)
    unstable = [arm for _, arm in v.claim.terms if ("G4", arm) in failed]
    if unstable:
        if v.verdict in ("supported", "contradicted"):
            return dataclasses.replace(
                v, verdict="inconclusive", why=f"{v.verdict} by the interval, but G4 failed for {', '.join(unstable)}"
            )
        return dataclasses.replace(v, why=f"{v.why}; G4 failed for {', '.join(unstable)} as well")
    return v


GATE_MEANING = {
    "P": "the ssl arm is not a learned init",
    "source": "the transfer arm is not a learned init",
}


def with_reading(verdicts: list[Verdict]) -> list[Verdict]:
    """The reading fixed in docs/ssl_study.md §5: S1 supported while S0 is not says that SSL reached a comparator
    that does not itself beat random init here."""
    by = {v.claim.id: v for v in verdicts}
    s1, s0 = by.get("S1"), by.get("S0")
    if s1 is None or s0 is None or s1.verdict != "supported" or s0.verdict == "supported":
        return verdicts
    note = (f"S0 is {s0.verdict}: transfer does not beat random init here, so S1 says that SSL reached a comparator "
            "that does not itself help; whether SSL helps is S2's question.")  # fmt: skip
    return [dataclasses.replace(v, notes=(*v.notes, note)) if v is s1 else v for v in verdicts]


def evaluate(c, scores: Mapping[tuple[str, int], np.ndarray], labels: np.ndarray, checks: Sequence[Check]):
    """Every claim's verdict. `scores`: (arm, seed) -> the run's test ranking scores; `labels`: the test labels."""
    seeds = list(c.study.seeds)
    out = []
    for claim in CLAIMS:
        interval, per_seed = contrast_interval(scores, labels, claim.terms, seeds, c.confidence)
        out.append(gated(judge(claim, interval, per_seed, c), checks))
    return with_reading(out)


# ---------------------------------------------------------------- gates


def pretext_check(c, ssl_summary: Mapping) -> Check:
    """P: the SSL run's last logged contrastive accuracy >= multiple x chance (1 / (2B - 1) for SimCLR)."""
    final = ssl_summary.get("final") or {}
    accuracy = final.get("contrastive_accuracy")
    chance = 1.0 / (2 * int(ssl_summary["batch_size"]) - 1)
    floor = c.pretext_chance_multiple * chance
    if not isinstance(accuracy, float):
        return Check("P", "ssl", False, f"no contrastive accuracy logged (method {ssl_summary.get('method')})")
    detail = f"contrastive accuracy {accuracy:.3f} = {accuracy / chance:.0f} x chance ({chance:.4f}), floor {floor:.3f}"
    return Check("P", "ssl", accuracy >= floor, detail)


def source_check(c, pretrain_summary: Mapping) -> Check:
    """G1's accuracy part: the source test accuracy >= multiple x chance."""
    accuracy = ((pretrain_summary.get("val") or {}).get("final") or {}).get("accuracy")
    chance = 1.0 / c.study.source.classes
    if not isinstance(accuracy, float):
        return Check("source", "transfer", False, "no source test accuracy")
    detail = f"source test accuracy {accuracy:.3f} = {accuracy / chance:.0f} x chance ({chance:.3f})"
    return Check("source", "transfer", accuracy >= c.source_chance_multiple * chance, detail)


def stability_checks(c, measures: Mapping) -> list[Check]:
    """The study's G4 for each arm's group of runs (`study.gates.gate_g4`)."""
    out = []
    for arm in c.arms:
        g = study_gates.gate_g4(c.study, c.model, c.data, arm, measures)
        out.append(Check("G4", arm, g.passed, g.detail))
    return out


def power_rows(verdicts: Sequence[Verdict], c) -> list[tuple[str, float, float, int | None]]:
    """Per claim (post hoc, a planning number for a rerun): the per-seed sd of its contrast, the effect at which power
    is asked (S1: SSL equal to transfer; S0, S2: the smallest effect of interest), and the fewest seeds for 80 %
    power at that sd (`stats.seeds_for_power`)."""
    rows = []
    for v in verdicts:
        sd = float(np.std(v.per_seed, ddof=1)) if len(v.per_seed) > 1 else float("nan")
        effect = v.shift if v.claim.rule == "noninferiority" else float(c.sesoi)
        seeds = stats.seeds_for_power(sd, effect, v.rule, confidence=c.confidence) if sd > 0 else None
        rows.append((v.claim.id, sd, effect, seeds))
    return rows
