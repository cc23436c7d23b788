"""Each gate's pass probability, by simulation through the gate functions themselves: at least 0.9 under a working
design, at most 0.1 under a broken one (a gate that always passes, or never, would test nothing). The designs are
stated here and in docs/study.md (round 7, §7), with the numbers these simulations give:

  G1  5 random inits' kernel std ratios per layer ~ N(1.0, sd) with the pilot's per-layer sds (0.012, 0.007,
      0.004, 0.002) and conv1 peakedness ~ N(0.18, 0.005); the pretrained model's, working: the pilot's smallest
      moved values (ratios 1.14, 1.19, 1.35, 1.13; peakedness 0.27; source accuracy 0.53 at chance 1/64); broken:
      an unmoved checkpoint, one more draw of the random inits' distributions (accuracy at chance x 3)
  G2  per layer, the random inits' probe AUCs ~ N(mu, sd) with the pilot's per-layer sds (0.052, 0.024, 0.025,
      0.007, the large model's, the noisier one); working: mu = 0.65 (random features well short of the ceiling
      0.80 = threshold - 0.1); broken: mu = 0.85 (random features nearly solve the target)
  G3  5 random runs, each crossing the threshold with probability p, final validation AUCs ~ N(m, 0.006) (the
      pilot's seed sd); working: p = 0.95, m = 0.94 (the pilot: 0.936-0.951); broken: p = 0.6, m = 0.91 (a target
      barely learnt in the budget)
  G4  5 runs, each one's last 3 evaluations = its final AUC + N(0, s); working: s = 0.002 (the pilot's largest
      within-run sd was 0.0014); broken: still climbing, +0.008 per evaluation plus the same noise
"""

import dataclasses

import numpy as np
import pytest
from study_world import config, diagnostics

from transfusion_jax.experiments.study.design import RunKey
from transfusion_jax.experiments.study.diagnose import WeightDiagnostics
from transfusion_jax.experiments.study.gates import gate_g1, gate_g2, gate_g3, gate_g4
from transfusion_jax.experiments.study.measures import RunMeasures

STUDIES = 2000
PILOT_PROBE_SD = (0.052, 0.024, 0.025, 0.007)
PILOT_RATIO_SD = (0.012, 0.007, 0.004, 0.002)
PILOT_MOVED = (1.14, 1.19, 1.35, 1.13)


def _g1_rate(moved: bool, seed: int) -> float:
    c = config()
    base = diagnostics(c)["small"]
    rng = np.random.default_rng(seed)
    layers = list(base.pretrained.kernel_std_ratio)
    passed = 0
    for _ in range(STUDIES):

        def draw():
            return {x: rng.normal(1.0, sd) for x, sd in zip(layers, PILOT_RATIO_SD)}

        random = [WeightDiagnostics(draw(), {}, rng.normal(0.18, 0.005)) for _ in range(c.gates.random_inits)]
        if moved:
            pretrained, accuracy = WeightDiagnostics(dict(zip(layers, PILOT_MOVED)), {}, 0.27), 0.53
        else:
            pretrained, accuracy = WeightDiagnostics(draw(), {}, rng.normal(0.18, 0.005)), 3 / 64
        d = dataclasses.replace(base, pretrained=pretrained, random=random, source_accuracy=accuracy)
        passed += gate_g1(c, "small", d).passed
    return passed / STUDIES


def _g2_rate(mu: float, seed: int) -> float:
    c = config()
    base = diagnostics(c)["large"]
    rng = np.random.default_rng(seed)
    layers = list(base.probe[0])
    passed = 0
    for _ in range(STUDIES):
        draws = {layer: rng.normal(mu, sd, c.gates.random_inits) for layer, sd in zip(layers, PILOT_PROBE_SD)}
        probe = [{layer: float(draws[layer][k]) for layer in layers} for k in range(c.gates.random_inits)]
        passed += gate_g2(c, "large", dataclasses.replace(base, probe=probe)).passed
    return passed / STUDIES


def _run(final: float, crossed: bool, last: np.ndarray, grid: tuple[int, ...]) -> RunMeasures:
    curve = {s: 0.5 for s in grid}
    curve.update({s: float(v) for s, v in zip(grid[-len(last) :], last)})
    return RunMeasures(curve, grid[-1], grid[3] if crossed else None, None, final, np.zeros(1), {})


def _g3_rate(p: float, mean: float, seed: int) -> float:
    c = config()
    rng = np.random.default_rng(seed)
    grid = tuple(c.eval_steps.full)
    passed = 0
    for _ in range(STUDIES):
        finals, crossed = rng.normal(mean, 0.006, len(c.seeds)), rng.random(len(c.seeds)) < p
        measures = {
            RunKey("small", "full", "random", s): _run(f, x, np.full(3, f), grid)
            for s, f, x in zip(c.seeds, finals, crossed)
        }
        passed += gate_g3(c, "small", measures).passed
    return passed / STUDIES


def _g4_rate(climb: float, seed: int) -> float:
    c = config()
    rng = np.random.default_rng(seed)
    grid = tuple(c.eval_steps.full)
    k = c.gates.last_evals
    passed = 0
    for _ in range(STUDIES):
        measures = {}
        for s in c.seeds:
            final = rng.normal(0.94, 0.006)
            last = final + climb * (np.arange(k) - (k - 1)) + rng.normal(0, 0.002, k)
            measures[RunKey("small", "full", "random", s)] = _run(final, True, last, grid)
        passed += gate_g4(c, "small", "full", "random", measures).passed
    return passed / STUDIES


@pytest.mark.parametrize(
    "gate, working, broken",
    [
        ("G1", lambda: _g1_rate(True, 8), lambda: _g1_rate(False, 9)),
        ("G2", lambda: _g2_rate(0.65, 0), lambda: _g2_rate(0.85, 1)),
        ("G3", lambda: _g3_rate(0.95, 0.94, 2), lambda: _g3_rate(0.6, 0.91, 3)),
        ("G4", lambda: _g4_rate(0.0, 4), lambda: _g4_rate(0.008, 5)),
    ],
)
def test_each_gate_passes_a_working_design_and_fails_a_broken_one(gate, working, broken):
    works, breaks = working(), broken()
    print(f"{gate}: pass probability {works:.3f} working, {breaks:.3f} broken ({STUDIES} studies)")
    assert works >= 0.9, (gate, works)
    assert breaks <= 0.1, (gate, breaks)


def test_round_6s_g3_failed_a_working_design_too_often():
    """Round 6's G3 (every run crosses and every final AUC >= threshold + 0.03: ten conditions on five runs) passes
    the working design above with probability ~0.6 only (lower still where the final AUCs sit nearer the floor:
    the issue found ~0.18 for round 6's runs); the v2 rule, ~0.98."""
    rng = np.random.default_rng(6)
    crossed = rng.random((STUDIES, 5)) < 0.95
    finals = rng.normal(0.94, 0.006, (STUDIES, 5))
    old = (crossed.all(axis=1) & (finals >= 0.93).all(axis=1)).mean()
    assert old < 0.7 and _g3_rate(0.95, 0.94, 7) > 0.95
