"""The SSL study's verdict logic (experiments/ssl_study/verdicts.py) on constructed inputs whose answer is known:
S1's non-inferiority read against -margin (not as equivalence), S0/S2's directional reading with the smallest effect
of interest, the decision boundaries on the contrast's own scale, the gates (P, source, G4), the pre-registered
reading of S1 beside S0, and the contrasts computed from test scores against sklearn's AUCs."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from transfusion_jax.analysis import stats
from transfusion_jax.experiments.ssl_study import design, verdicts
from transfusion_jax.experiments.ssl_study.verdicts import CLAIMS, Check

C = design.get_config("default")
S1, S2, S0 = (next(x for x in CLAIMS if x.id == i) for i in ("S1", "S2", "S0"))


def interval(low, high):
    return stats.Interval((low + high) / 2, low, high, 5, "constructed")


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (-0.010, +0.050, "supported"),  # above -0.02; an equivalence reading (±0.02) would say inconclusive
        (-0.019, -0.001, "supported"),
        (-0.050, -0.025, "contradicted"),  # entirely below -0.02
        (-0.030, +0.010, "inconclusive"),  # crosses -0.02
        (+0.030, +0.060, "supported"),  # SSL above transfer is not against "reaches"
    ],
)
def test_s1_is_non_inferiority_against_minus_the_margin(low, high, expected):
    v = verdicts.judge(S1, interval(low, high), [], C)
    assert v.verdict == expected, v.why
    assert v.boundaries == pytest.approx((-C.noninferiority_margin,))
    assert v.interval.low == low and v.interval.high == high  # the report shows the contrast itself, unshifted


def test_s1_distance_is_in_half_widths_from_the_bound():
    v = verdicts.judge(S1, interval(-0.015, +0.010), [], C)  # half-width 0.0125; -0.015 is 0.005 above -0.02
    assert v.decision.distance == pytest.approx(0.005 / 0.0125)


@pytest.mark.parametrize(
    "low, high, expected, small",
    [
        (+0.030, +0.060, "supported", False),
        (+0.005, +0.015, "supported", True),  # excludes 0, but entirely below the smallest effect of interest
        (-0.010, +0.015, "contradicted", False),  # entirely below +0.02: at most a trivial gain
        (-0.060, -0.030, "contradicted", False),
        (-0.010, +0.030, "inconclusive", False),
    ],
)
def test_s0_and_s2_are_directional_with_a_smallest_effect_of_interest(low, high, expected, small):
    for claim in (S0, S2):
        v = verdicts.judge(claim, interval(low, high), [], C)
        assert v.verdict == expected, v.why
        assert ("entirely below the smallest effect of interest" in v.why) == small
        assert v.boundaries == pytest.approx((0.0, C.sesoi))


def _passing(**failed) -> list[Check]:
    scopes = {"P": "ssl", "source": "transfer"}
    checks = [Check(g, scopes[g], not failed.get(g, False), "") for g in ("P", "source")]
    return checks + [Check("G4", arm, arm not in failed.get("G4", ()), "") for arm in design.ARMS]


def _judged(claim, low=-0.01, high=0.05):
    return verdicts.judge(claim, interval(low, high), [], C)


def test_gates_make_the_claims_that_need_them_not_testable():
    p_failed = _passing(P=True)
    assert verdicts.gated(_judged(S1), p_failed).verdict == "not testable"
    assert verdicts.gated(_judged(S2, 0.03, 0.06), p_failed).verdict == "not testable"
    assert verdicts.gated(_judged(S0, 0.03, 0.06), p_failed).verdict == "supported"
    source_failed = _passing(source=True)
    assert verdicts.gated(_judged(S1), source_failed).verdict == "not testable"
    assert verdicts.gated(_judged(S0, 0.03, 0.06), source_failed).verdict == "not testable"
    assert verdicts.gated(_judged(S2, 0.03, 0.06), source_failed).verdict == "supported"


def test_g4_failing_makes_a_verdict_of_its_arm_inconclusive():
    unstable_ssl = _passing(G4=("ssl",))
    s1 = verdicts.gated(_judged(S1), unstable_ssl)
    assert s1.verdict == "inconclusive" and "G4 failed for ssl" in s1.why
    assert verdicts.gated(_judged(S0, 0.03, 0.06), unstable_ssl).verdict == "supported"  # compares no ssl runs
    crossing = verdicts.gated(_judged(S2, -0.01, 0.03), unstable_ssl)
    assert crossing.verdict == "inconclusive" and crossing.why.endswith("G4 failed for ssl as well")
    assert verdicts.gated(_judged(S1), _passing()).verdict == "supported"


def test_s1_supported_beside_an_unsupported_s0_carries_the_fixed_reading():
    s1, s2 = _judged(S1), _judged(S2, -0.01, 0.03)
    noted = verdicts.with_reading([s1, s2, _judged(S0, -0.01, 0.01)])
    assert any("comparator that does not itself help" in n for n in noted[0].notes)
    assert not noted[1].notes and not noted[2].notes
    assert not verdicts.with_reading([s1, s2, _judged(S0, 0.03, 0.06)])[0].notes


def _scores(rng, labels, strength, seeds):
    return {s: labels * strength + rng.normal(size=labels.size) for s in seeds}


def test_evaluate_reads_the_contrasts_of_the_runs_test_scores():
    """Arms whose separation is known: ssl and transfer equally strong, random far weaker. The per-seed contrasts
    equal sklearn's AUC differences, the estimate their mean, and the verdicts follow (5 seeds, 2,000 examples)."""
    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.4
    seeds = list(C.study.seeds)
    strength = {"random": 0.3, "transfer": 1.5, "ssl": 1.5}
    by_arm = {arm: _scores(rng, labels, strength[arm], seeds) for arm in design.ARMS}
    scores = {(arm, s): by_arm[arm][s] for arm in design.ARMS for s in seeds}
    found = {v.claim.id: v for v in verdicts.evaluate(C, scores, labels, _passing())}
    for claim in CLAIMS:
        expected = [sum(c * roc_auc_score(labels, by_arm[arm][s]) for c, arm in claim.terms) for s in seeds]
        assert found[claim.id].per_seed == pytest.approx(expected, abs=1e-12)
        assert found[claim.id].interval.estimate == pytest.approx(np.mean(expected), abs=1e-12)
    assert found["S1"].verdict == "supported"  # equal strengths: |difference| ~0.01, well above -0.02
    assert found["S2"].verdict == "supported" and found["S0"].verdict == "supported"  # gains of ~0.3 AUC


def test_pretext_gate_reads_contrastive_accuracy_against_chance():
    summary = {"batch_size": 128, "method": "simclr", "final": {"contrastive_accuracy": 0.05}}
    assert verdicts.pretext_check(C, summary).passed  # chance 1/255: floor 0.039
    summary["final"]["contrastive_accuracy"] = 0.03
    assert not verdicts.pretext_check(C, summary).passed
    summary["final"] = {"loss": 1.0}  # BYOL logs no contrastive accuracy: nothing shows the pretext was learned
    assert not verdicts.pretext_check(C, summary).passed


def test_source_gate_reads_the_source_accuracy_against_chance():
    assert verdicts.source_check(C, {"val": {"final": {"accuracy": 0.16}}}).passed  # 64 classes: floor 0.156
    assert not verdicts.source_check(C, {"val": {"final": {"accuracy": 0.15}}}).passed
    assert not verdicts.source_check(C, {}).passed


def test_power_rows_ask_each_rule_at_its_effect():
    per_seed = [-0.004, 0.001, 0.006, -0.002, 0.003]
    v = verdicts.judge(S1, stats.t_interval(per_seed), per_seed, C)
    ((claim, sd, effect, seeds),) = verdicts.power_rows([v], C)
    assert claim == "S1" and sd == pytest.approx(np.std(per_seed, ddof=1)) and effect == C.noninferiority_margin
    assert seeds == stats.seeds_for_power(sd, effect, stats.Rule("noninferiority"))
    assert seeds is not None and stats.power(sd, effect, stats.Rule("noninferiority"), seeds) >= 0.8


def test_contrasts_are_paired_by_seed():
    """Seeds that differ a lot (strength 0.2-2.0) while ssl and transfer of one seed are nearly the same run: the
    paired interval of S1 is narrow. Pairing seed s of one arm with another seed of the other would make it wide."""
    rng = np.random.default_rng(1)
    labels = rng.random(2000) < 0.4
    seeds = list(C.study.seeds)
    transfer = {s: labels * (0.2 + 0.45 * s) + rng.normal(size=labels.size) for s in seeds}
    scores = {("transfer", s): transfer[s] for s in seeds}
    scores.update({("ssl", s): transfer[s] + 0.05 * rng.normal(size=labels.size) for s in seeds})
    scores.update({("random", s): transfer[s] + rng.normal(size=labels.size) for s in seeds})
    s1 = next(v for v in verdicts.evaluate(C, scores, labels, _passing()) if v.claim.id == "S1")
    assert s1.interval.high - s1.interval.low < 0.01
    assert s1.verdict == "supported"
