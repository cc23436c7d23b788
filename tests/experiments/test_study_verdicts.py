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
from transfusion_jax.experiments.study.contrasts import NOT_RUN, auc_interval, steps_interval
from transfusion_jax.experiments.study.design import RunKey
from transfusion_jax.experiments.study.gates import gate_g1, gate_g2, gate_g4


def test_a_world_like_the_paper_supports_every_claim():
    result, by = verdicts_of(config())
    assert all(g.passed for g in result.gates), [g for g in result.gates if not g.passed]
    assert {key: v.verdict for key, v in by.items()} == {key: "supported" for key in by}
    assert len(by) == 17  # C1 x2, C2a x2, C2b, C3a, C3b x2, C4 x2, R x2, C5 x2, C6, C7, C8
    c7 = by["C7", "large model"]
    assert [p.verdict for p in c7.parts] == ["supported", "supported"]
    c5 = by["C5", "large model"]
    # The jitter cancels up to where on the grid (cells ~15 % apart) each crossing is seen.
    assert c5.interval.estimate == pytest.approx(math.log(100 / 30), abs=0.15)
    assert c5.checks and c5.checks[0][1].verdict == "supported"  # the relative threshold, beside it
    assert by["R", "small model"].kind == "equivalent" and by["R", "large model"].kind == "greater"


def test_the_opposite_world_contradicts_them():
    c = config()
    measures = world(
        c,
        steps={"mean_var": 300, "slim": 60, "gabor": 160, "transfusion:layer2": 90},
        mu={("large", "full", "transfer"): 2.5, ("small", "full", "transfer"): 2.5},
    )
    sim = similar(
        c,
        to_init={("large", "transfer"): [0.95, 0.90, 0.95, 0.90], ("small", "transfer"): [0.90, 0.80, 0.80, 0.70]},
        pairs={("large", "rand_imnet"): 0.70, ("small", "rand_imnet"): 0.45},
    )
    _, by = verdicts_of(c, measures, sim)
    for key in [
        ("C1", "small model"),
        ("C1", "large model"),
        ("C4", "large model"),
        ("C4", "small model"),
        ("R", "large model"),
        ("R", "small model"),
        ("C5", "large model"),
        ("C6", "large model"),
        ("C7", "large model"),
        ("C8", "large model"),
    ]:
        assert by[key].verdict == "contradicted", (key, by[key])
    assert by["C1", "large model"].why == "better"  # transfer clearly above random on the full data


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
    assert c5.verdict == "contradicted" and c5.why == "worse"
    # Random never crosses: open above, above +margin below: Mean-Var faster is supported, an equivalence refuted.
    terms = [(1, "small", "full", "random"), (-1, "small", "full", "mean_var")]
    interval = steps_interval(world(c, steps={"random": None}), terms, c.confidence)
    assert interval.high == math.inf and interval.low > c.margins.log_steps
    assert stats.verdict(interval, c.margins.log_steps, "greater")[0] == "supported"
    assert stats.verdict(interval, c.margins.log_steps, "equivalent")[0] == "contradicted"
    # Neither arm of C8 crosses: nothing bounds the contrast, no verdict.
    _, by = verdicts_of(c, world(c, steps={"gabor": None, "transfusion:layer1": None}))
    assert by["C8", "large model"].verdict == "inconclusive" and by["C8", "large model"].interval.n == 0


def test_steps_contrast_reads_each_seeds_first_steps_on_the_runs_grid():
    """C6's (1, -2, 1) contrast: the first steps of each group, seed by seed, on the grid the runs evaluated at,
    are what stats.steps_contrast gets; and at a confidence of 0.8 the interval is narrower."""
    c = config()
    measures = world(c)
    terms = [
        (1, "large", "full", "random"),
        (-2, "large", "full", "transfusion:layer2"),
        (1, "large", "full", "transfer"),
    ]
    interval = steps_interval(measures, terms, 0.95)
    firsts = [[measures[RunKey("large", "full", init, s)].steps for s in c.seeds] for _, _, _, init in terms]
    want = stats.steps_contrast(firsts, [1, -2, 1], sorted(GRID), 0.95)
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
    assert by["C5", "large model"].why == "inconclusive; G3 failed for the large model as well"
    # G4: one group's last evaluations swing more than its seeds differ -> its AUC verdicts are inconclusive.
    measures = world(c)
    for seed in c.seeds:
        run = measures[RunKey("small", "full", "transfer", seed)]
        last = sorted(run.curve)[-5:]
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
    assert by["C1", "small model"].why == "inconclusive; G4 failed for small / full / transfer as well"


def test_the_cpu_cut_reports_what_it_did_not_run():
    c = config(models_run=("small",))
    result, by = verdicts_of(c)
    not_run = {key for key, v in by.items() if v.verdict == NOT_RUN}
    assert not_run == {
        ("C1", "large model"),
        ("C2a", "large model"),
        ("C2b", "large - small model"),
        ("C3a", "large - small model"),
        ("C3b", "large model"),
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


def test_gate_g4_compares_medians_with_the_seeds_sd():
    c = config()
    measures = world(c)
    gate = gate_g4(c, "small", "full", "random", measures)
    finals = [measures[RunKey("small", "full", "random", s)].final_val_auc for s in c.seeds]
    assert gate.passed and gate.values.across == pytest.approx(np.std(finals, ddof=1))
    same = {k: dataclasses.replace(m, final_val_auc=0.95) for k, m in measures.items()}  # no spread across seeds
    assert not gate_g4(c, "small", "full", "random", same).passed
