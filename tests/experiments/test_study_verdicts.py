"""The study's verdicts and gates on constructed measures whose answer is known: a world that behaves as the paper
says supports every claim, its opposite contradicts them, runs that never cross leave their side open, the gates
override, and the CPU cut reports what it did not run."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from study_world import (
    GRID,
    LABELS,
    LAYERS,
    config,
    diagnostics,
    g3_fails_c5_spans_its_margin,
    similar,
    verdicts_of,
    world,
)

from transfusion_jax.analysis import stats
from transfusion_jax.experiments.study import verdicts as verdicts_lib
from transfusion_jax.experiments.study.contrasts import NOT_RUN, auc_interval, steps_interval
from transfusion_jax.experiments.study.design import RunKey
from transfusion_jax.experiments.study.gates import gate_g1, gate_g2, gate_g3, gate_g4


def test_a_world_like_the_paper_supports_every_claim():
    result, by = verdicts_of(config())
    assert all(g.passed for g in result.gates), [g for g in result.gates if not g.passed]
    assert {key: v.verdict for key, v in by.items()} == {key: "supported" for key in by}
    assert len(by) == 16  # C1 x2, C2a x2, C2b, C3a, C3b, C4 x2, R x2, C5 x2, C6, C7, C8
    assert {v.kind for v in by.values()} == {"equivalence", "directional", "noninferiority"}
    assert by["R", "small model"].kind == by["R", "large model"].kind == "equivalence"  # the CBR rows of Fig. 2
    c7 = by["C7", "large model"]
    assert [p.verdict for p in c7.parts] == ["supported", "supported"]
    c5 = by["C5", "large model"]
    # The jitter cancels up to where on the grid (cells ~15 % apart) each crossing is seen.
    assert c5.interval.estimate == pytest.approx(math.log(100 / 30), abs=0.15)
    assert c5.checks and c5.checks[0][1].verdict == "supported"  # the relative threshold, beside it
    # C5 split into the kernels' scale (random -> random_scaled) and the rest (random_scaled -> mean_var).
    scale, rest = c5.explained
    assert scale.interval.estimate == pytest.approx(math.log(100 / 50), abs=0.15)
    assert rest.interval.estimate == pytest.approx(math.log(50 / 30), abs=0.15)
    # Additive up to the censored estimate's placement within grid cells (not a mean of exact values).
    assert scale.interval.estimate + rest.interval.estimate == pytest.approx(c5.interval.estimate, abs=0.05)
    # Every verdict says how far it is from changing, and shows each seed's value.
    for v in by.values():
        for part in v.parts or [v]:
            assert part.distance is not None and part.distance > 0, (v.claim, v.scope)
    assert len(by["C1", "small model"].per_seed) == 5 and len(c5.per_seed) == 5


def test_the_opposite_world_contradicts_them():
    c = config()
    measures = world(
        c,
        steps={"mean_var": 300, "random_scaled": 300, "slim": 60, "gabor": 160, "transfusion:layer2": 90},
        mu={("large", "full", "transfer"): 2.5, ("small", "full", "transfer"): 2.5},
    )
    sim = similar(
        c,
        to_init={("large", "transfer"): [0.95, 0.90, 0.75, 0.65], ("small", "transfer"): [0.80, 0.72, 0.76, 0.70]},
        pairs={("large", "rand_imnet"): 0.60, ("small", "rand_imnet"): 0.45},
    )
    _, by = verdicts_of(c, measures, sim)
    for key in [
        ("C1", "small model"),
        ("C1", "large model"),
        ("C2a", "small model"),  # transfer helps more with *plenty* of data here
        ("C4", "large model"),
        ("C4", "small model"),
        ("R", "large model"),
        ("R", "small model"),
        ("C5", "large model"),
        ("C5", "small model"),
        ("C6", "large model"),
        ("C7", "large model"),
        ("C8", "large model"),
    ]:
        assert by[key].verdict == "contradicted", (key, by[key])
    assert by["C1", "large model"].why == "interval outside ±margin"  # transfer far above random on the full data
    assert by["C5", "large model"].why == "interval below the smallest effect of interest"


def test_a_directional_claim_can_be_supported_below_its_smallest_effect_and_contradicted_near_zero():
    """C2a as the paper states it ("transfer helps more with little data"): round 6 read it against its equivalence
    margin, so it could never come out supported. Now an interval excluding 0 in the claimed direction supports
    it, flagged when it lies below the smallest effect of interest, and an interval near 0 contradicts it."""
    c = config()
    small_gain = world(c, mu={("small", "small", "random"): 1.46, ("large", "small", "random"): 1.46})
    _, by = verdicts_of(c, small_gain)
    v = by["C2a", "small model"]
    assert 0 < v.interval.low and v.interval.high < c.sesoi.auc
    assert v.verdict == "supported" and "below the smallest effect of interest" in v.why
    none = world(c, mu={("small", "small", "random"): 1.5, ("large", "small", "random"): 1.5})
    _, by = verdicts_of(c, none)
    v = by["C2a", "small model"]
    assert v.interval.low < 0 < v.interval.high < c.sesoi.auc and v.verdict == "contradicted"


def test_c3b_reads_the_interaction_across_sizes_not_the_gap_within_a_model():
    """Within a model the lowest layer keeps more of its init than the highest almost by construction; the claim is
    that the gap is larger in the large model. Equal gaps at both sizes contradict C3b while the within-model
    diagnostics (reported beside their null, not judged) stay large."""
    c = config()
    same_gap = {("large", "random"): [0.95, 0.90, 0.50, 0.40], ("small", "random"): [0.95, 0.90, 0.50, 0.40]}
    result, by = verdicts_of(c, sim=similar(c, to_init=same_gap))
    assert by["C3b", "large - small model"].verdict == "contradicted"
    within = [s for s in result.secondary if s.name.startswith("adjusted sim_init, lowest - highest layer")]
    assert len(within) == 2 and all(s.interval.low > 0.15 for s in within)


def test_c3a_is_read_against_each_models_unrelated_network_null():
    """A large model whose layers only look closer to their init because unrelated networks of its size are more
    similar to each other: the raw similarity to init is higher, the null-adjusted one is not, and C3a is not
    supported."""
    c = config()
    to_init = {("large", "random"): [0.90, 0.82, 0.76, 0.70], ("small", "random"): [0.80, 0.72, 0.66, 0.60]}
    null = {"large": [0.60, 0.50, 0.40, 0.30], "small": [0.50, 0.40, 0.30, 0.20]}
    _, by = verdicts_of(c, sim=similar(c, to_init=to_init, null=null))
    v = by["C3a", "large - small model"]
    assert abs(v.interval.estimate) < 0.01 and v.verdict == "contradicted"
    _, raw = verdicts_of(c, sim=similar(c, to_init=to_init, null={"large": null["small"]}))
    assert raw["C3a", "large - small model"].verdict == "supported"


def test_c5_says_whether_mean_vars_effect_is_the_kernels_scale():
    """All of Mean-Var's speed-up is the kernels' scale when the scale-matched random init is as fast: the scale
    part's interval excludes 0, the rest's lies around it."""
    c = config()
    _, by = verdicts_of(c, world(c, steps={"random_scaled": 30}))
    scale, rest = by["C5", "large model"].explained
    assert scale.interval.low > 0 and rest.interval.low < 0 < rest.interval.high


def test_c6_reads_the_share_of_transfers_speed_up_against_its_bound():
    """Transfusing the lower half gives 30 % of transfer's speed-up (ln scale) against a pre-registered 50 %: the
    non-inferiority contrast lies below its bound; at 80 % above it."""
    c = config()
    for share, verdict in ((0.3, "contradicted"), (0.8, "supported")):
        t2 = math.exp(math.log(100) - share * (math.log(100) - math.log(16)))
        _, by = verdicts_of(c, world(c, steps={"transfusion:layer2": t2}, jitter=0.0))
        assert by["C6", "large model"].verdict == verdict, (share, by["C6", "large model"])


def test_verdicts_do_not_depend_on_the_order_of_seeds_or_runs():
    """The same runs presented in another order (the seeds listed otherwise, the runs' records in the order a
    sequential or a stacked execution returns them, the similarity records shuffled) give the same verdicts,
    intervals and distances bit for bit: every computation sorts by seed first."""
    c = config()
    measures, sim = world(c), similar(c)
    result, _ = verdicts_of(c, measures, sim)
    rng = np.random.default_rng(0)
    shuffled_c = config()
    shuffled_c.seeds = tuple(int(s) for s in rng.permutation(c.seeds))
    keys = list(measures)
    shuffled = {keys[i]: measures[keys[i]] for i in rng.permutation(len(keys))}

    def shuffle(d):
        items = list(d.items())
        return {items[i][0]: items[i][1] for i in rng.permutation(len(items))}

    sim2 = {
        m: dataclasses.replace(s, to_init=shuffle(s.to_init), unrelated=shuffle(s.unrelated), pairs=shuffle(s.pairs))
        for m, s in sim.items()
    }
    again, _ = verdicts_of(shuffled_c, shuffled, sim2)
    assert shuffled_c.seeds != c.seeds and list(shuffled) != keys
    for a, b in zip(result.verdicts, again.verdicts):
        for pa, pb in zip(a.parts or [a], b.parts or [b]):
            assert (pa.verdict, pa.interval, pa.distance, pa.per_seed) == (pb.verdict, pb.interval, pb.distance,
                                                                          pb.per_seed), (a.claim, a.scope)  # fmt: skip
    assert [(g.gate, g.scope, g.passed, g.detail) for g in result.gates] == [
        (g.gate, g.scope, g.passed, g.detail) for g in again.gates
    ]


def test_an_interval_that_spans_the_margin_is_inconclusive():
    """Steps that scatter across seeds (x3 either way): neither better nor equivalent can be concluded."""
    c = config()
    noisy = {0: 20, 1: 400, 2: 30, 3: 250, 4: 60}
    _, by = verdicts_of(c, world(c, steps={"mean_var": lambda key: noisy[key.seed]}))
    assert by["C5", "small model"].verdict == "inconclusive"
    assert by["C5", "small model"].interval.low < -0.3 < 0.3 < by["C5", "small model"].interval.high


def test_runs_that_never_cross_leave_their_side_open():
    """A run that never crosses is only known to cross beyond the grid's last step: its side of the interval is
    open, and only what the other side shows counts."""
    c = config()
    # Mean-Var never crosses: ln steps(random) - ln steps(mean_var) is open below and well below -margin above.
    _, by = verdicts_of(c, world(c, steps={"mean_var": None}))
    c5 = by["C5", "small model"]
    assert c5.interval.low == -math.inf and c5.interval.high < -c.margins.log_steps
    assert c5.verdict == "contradicted" and c5.why == "interval below the smallest effect of interest"
    # Random never crosses: open above, above +margin below: Mean-Var faster is supported, an equivalence refuted.
    terms = [(1, "small", "full", "random"), (-1, "small", "full", "mean_var")]
    interval = steps_interval(world(c, steps={"random": None}), terms, c.confidence)
    assert interval.high == math.inf and interval.low > c.margins.log_steps
    assert stats.decide(interval, stats.Rule("directional", c.sesoi.log_steps)).verdict == "supported"
    assert stats.decide(interval, stats.Rule("equivalence", c.margins.log_steps)).verdict == "contradicted"
    # Neither arm of C8 crosses: nothing bounds the contrast, no verdict.
    _, by = verdicts_of(c, world(c, steps={"gabor": None, "transfusion:layer1": None}))
    assert by["C8", "large model"].verdict == "inconclusive" and by["C8", "large model"].interval.n == 0


def test_steps_contrast_reads_each_seeds_first_steps_on_the_runs_grid():
    """C6's (0.5, -1, 0.5) contrast: the first steps of each group, seed by seed, on the grid the runs evaluated at,
    are what stats.steps_contrast gets; and at a confidence of 0.8 the interval is narrower."""
    c = config()
    measures = world(c)
    terms = [
        (0.5, "large", "full", "random"),
        (-1, "large", "full", "transfusion:layer2"),
        (0.5, "large", "full", "transfer"),
    ]
    interval = steps_interval(measures, terms, 0.95)
    firsts = [[measures[RunKey("large", "full", init, s)].steps for s in c.seeds] for _, _, _, init in terms]
    want = stats.steps_contrast(firsts, [0.5, -1, 0.5], sorted(GRID), 0.95)
    assert (interval.estimate, interval.low, interval.high, interval.n) == (want.estimate, want.low, want.high, 5)
    narrow = steps_interval(measures, terms, 0.8)
    assert interval.low < narrow.low < narrow.high < interval.high


def test_auc_contrast_pairs_runs_by_seed():
    """Dropping a seed of one group drops it from every group of the contrast."""
    c = config()
    measures = world(c)
    del measures[RunKey("small", "full", "transfer", 3)]
    interval = auc_interval(
        measures, LABELS, [(1, "small", "full", "transfer"), (-1, "small", "full", "random")], c.confidence
    )
    assert interval.n == 4


def test_c6_is_not_assessable_when_transfer_does_not_speed_convergence():
    c = config()
    _, by = verdicts_of(c, world(c, steps={"transfer": 95, "transfusion:layer2": 60}))
    assert by["C6", "large model"].verdict == "not assessable"


def test_gates_override_the_verdicts():
    c = config()
    # G1: the pretrained weights look random -> Mean-Var and Gabor claims are not testable.
    result, by = verdicts_of(c, diag=diagnostics(c, moved=False))
    assert not any(g.passed for g in result.gates if g.gate == "G1")
    assert by["C5", "small model"].verdict == by["C8", "large model"].verdict == "not testable"
    assert by["C1", "small model"].verdict == "supported"  # AUC claims do not depend on G1
    # G2: random features reach the threshold's neighbourhood -> a note on the speed claims.
    result, by = verdicts_of(c, diag=diagnostics(c, probe=0.85))
    assert not any(g.passed for g in result.gates if g.gate == "G2")
    assert any("G2 failed" in note for note in by["C5", "large model"].notes)
    # G3: random runs never cross -> steps-based verdicts inconclusive (their interval would support C5).
    result, by = verdicts_of(c, world(c, steps={"random": None}))
    assert not [g for g in result.gates if g.gate == "G3" and g.scope == "large"][0].passed
    assert by["C5", "large model"].verdict == "inconclusive" and "G3" in by["C5", "large model"].why
    # ... and a verdict the interval alone leaves inconclusive still names the failed gate.
    _, by = verdicts_of(c, g3_fails_c5_spans_its_margin(c))
    assert by["C5", "large model"].verdict == "inconclusive"
    assert by["C5", "large model"].why == (
        "interval includes 0 and the smallest effect of interest; G3 failed for the large model as well"
    )
    # G4: one group's last evaluations swing more than its seeds differ -> its AUC verdicts are inconclusive.
    measures = world(c)
    for seed in c.seeds:
        run = measures[RunKey("small", "full", "transfer", seed)]
        last = sorted(run.curve)[-3:]
        run.curve.update({s: run.final_val_auc + (0.05 if i % 2 else -0.05) for i, s in enumerate(last)})
    result, by = verdicts_of(c, measures)
    failed = [g.scope for g in result.gates if g.gate == "G4" and not g.passed]
    assert failed == ["small / full / transfer"]
    assert by["C1", "small model"].verdict == by["C2a", "small model"].verdict == "inconclusive"
    assert "G4" in by["C1", "small model"].why and by["C1", "large model"].verdict == "supported"
    # ... and a verdict the interval alone leaves inconclusive still names the failed gate.
    for key, run in world(c, mu={("small", "full", "random"): 1.38}).items():  # C1's estimate at its margin
        measures[key].test_scores = run.test_scores
    _, by = verdicts_of(c, measures)
    assert by["C1", "small model"].why == "interval crosses a margin; G4 failed for small / full / transfer as well"


def test_the_cpu_cut_reports_what_it_did_not_run():
    c = config(models_run=("small",))
    result, by = verdicts_of(c)
    not_run = {key for key, v in by.items() if v.verdict == NOT_RUN}
    assert not_run == {
        ("C1", "large model"),
        ("C2a", "large model"),
        ("C2b", "large - small model"),
        ("C3a", "large - small model"),
        ("C3b", "large - small model"),
        ("C4", "large model"),
        ("R", "large model"),
        ("C5", "large model"),
        ("C6", "large model"),
        ("C7", "large model"),
        ("C8", "large model"),
    }
    assert all(v.verdict == "supported" for key, v in by.items() if key not in not_run)
    assert {g.scope for g in result.gates if g.gate != "G4"} == {"small"}


def test_gate_g1_against_hand_computed_distances():
    c = config()
    d = diagnostics(c)["small"]
    assert gate_g1(c, "small", d).passed
    sd = np.std([1.0 + 0.01 * (k - 2) for k in range(5)], ddof=1)  # 0.0158
    d.pretrained.kernel_std_ratio["layer3"] = 1.0 + 4.9 * sd  # inside 5 sd: fails
    gate = gate_g1(c, "small", d)
    assert not gate.passed and "layer3" in gate.detail
    assert gate.values.ratios[2].distance == pytest.approx(4.9)  # what the report shows, computed once
    d.pretrained.kernel_std_ratio["layer3"] = 1.0 + 5.1 * sd
    assert gate_g1(c, "small", d).passed
    assert "source accuracy" in gate_g1(c, "small", dataclasses.replace(d, source_accuracy=9.9 / 64)).detail


def test_gate_g2_uses_the_upper_end_of_the_t_interval():
    c = config()
    d = diagnostics(c)["small"]
    values = [0.74, 0.78, 0.76, 0.79, 0.75]  # mean 0.764, upper bound 0.790 (t with 4 df)
    d = dataclasses.replace(d, probe=[{layer: v for layer in LAYERS} for v in values])
    upper = np.mean(values) + scipy_stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / math.sqrt(5)
    gate = gate_g2(c, "small", d)
    assert upper < 0.80 and gate.passed
    assert gate.values.layers[0].interval.high == pytest.approx(upper) and not gate.values.layers[0].borderline
    d = dataclasses.replace(d, probe=[{layer: v + 0.02 for layer in LAYERS} for v in values])  # upper bound 0.810
    gate = gate_g2(c, "small", d)
    assert not gate.passed and gate.values.layers[0].borderline  # within 0.01 of the ceiling, above it


def test_gate_g3_asks_a_share_of_crossings_and_a_lower_bound_of_the_mean_final_auc():
    c = config()
    measures = world(c)
    gate = gate_g3(c, "small", measures)
    finals = [measures[RunKey("small", "full", "random", s)].final_val_auc for s in c.seeds]
    low = np.mean(finals) - scipy_stats.t.ppf(0.975, 4) * np.std(finals, ddof=1) / math.sqrt(5)
    assert gate.passed and gate.values.crossed == 1.0 and gate.values.final.low == pytest.approx(low)
    # One run of five never crosses: 80 % still pass; two do not.
    for seeds, passed in (((0,), True), ((0, 1), False)):
        changed = dict(measures)
        for seed in seeds:
            key = RunKey("small", "full", "random", seed)
            changed[key] = dataclasses.replace(measures[key], steps=None)
        assert gate_g3(c, "small", changed).passed is passed, seeds
    # Every run crosses but the mean final AUC's lower bound sits below threshold + 0.02.
    low_finals = {k: dataclasses.replace(m, final_val_auc=m.final_val_auc - 0.035) for k, m in measures.items()}
    gate = gate_g3(c, "small", low_finals)
    assert not gate.passed and gate.values.final.low < c.threshold + c.gates.final_above_threshold


def test_gate_g4_is_a_plateau_rule():
    """The median sd of the last evaluations against the plateau tolerance: seeds that agree closely (round 6's rule
    failed them) pass, last evaluations that still move by 0.01 fail."""
    c = config()
    measures = world(c)
    gate = gate_g4(c, "small", "full", "random", measures)
    finals = [measures[RunKey("small", "full", "random", s)].final_val_auc for s in c.seeds]
    assert gate.passed and gate.values.across == pytest.approx(np.std(finals, ddof=1))
    same = {k: dataclasses.replace(m, final_val_auc=0.95) for k, m in measures.items()}  # no spread across seeds
    assert gate_g4(c, "small", "full", "random", same).passed
    moving = {}
    for k, m in measures.items():
        last = sorted(m.curve)[-c.gates.last_evals :]
        moving[k] = dataclasses.replace(m, curve={**m.curve, **{s: 0.93 + 0.01 * i for i, s in enumerate(last)}})
    gate = gate_g4(c, "small", "full", "random", moving)
    assert not gate.passed and gate.values.within == pytest.approx(0.01)


def test_the_sd_a_t_interval_implies_is_the_values_sd():
    """The power table's planning sd: for a plain t interval over seeds it is the per-seed values' sample sd, at
    any confidence; an open side has none."""
    values = [0.3, 0.1, 0.45, 0.2, 0.33]
    for confidence in (0.8, 0.95):
        interval = stats.t_interval(values, confidence)
        assert verdicts_lib.implied_sd(interval, confidence) == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert verdicts_lib.implied_sd(stats.Interval(0.2, 0.1, math.inf, 5, "open"), 0.95) is None
