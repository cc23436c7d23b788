"""The design's gates G1-G4 (docs/study.md §7), each computed once into a record of every number it compared: the
verdicts read whether a gate passed, the report renders its numbers; nothing recomputes them.

  G1  the source moved the weights: every layer's kernel std ratio outside mean +- k sd of the random inits, conv1
      peakedness above the random inits' largest, source accuracy >= m x chance (per model)
  G2  random features do not solve the target: per layer, the upper bound of the mean frozen-random-feature probe
      AUC <= threshold - gap (per model)
  G3  learnable: every random run on the full training set crosses the threshold and ends >= threshold + gap
      (per model)
  G4  stable: the median over a group's runs of the sd of their last evaluations is below the sd across seeds of the
      final validation AUC (per model / training set / init)
"""

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from transfusion_jax.analysis import stats
from transfusion_jax.experiments.study.diagnose import Diagnostics
from transfusion_jax.experiments.study.measures import RunMeasures

BORDERLINE = 0.01  # a G2 upper bound this close to its ceiling is reported as borderline


@dataclasses.dataclass(frozen=True)
class KernelRatio:
    """G1 for one layer: the pretrained kernel's std ratio against the random inits'."""

    layer: str
    pretrained: float
    random: list[float]
    mean: float
    sd: float
    distance: float  # |pretrained - mean| / sd


@dataclasses.dataclass(frozen=True)
class G1Values:
    ratios: list[KernelRatio]
    peakedness: float  # conv1's, pretrained
    random_peakedness: list[float]
    peakedness_share: float | None  # where the pretrained conv1 lies from the random inits' mean (0) to Gabor (1)
    source_accuracy: float | None
    chance: float
    failures: list[str]


@dataclasses.dataclass(frozen=True)
class ProbeLayer:
    """G2 for one layer: the random-feature probe AUCs and the t interval of their mean."""

    layer: str
    values: list[float]
    interval: stats.Interval
    borderline: bool  # the upper bound within BORDERLINE of the ceiling, either side


@dataclasses.dataclass(frozen=True)
class G2Values:
    ceiling: float
    layers: list[ProbeLayer]


@dataclasses.dataclass(frozen=True)
class RandomRun:
    """G3 for one random run on the full data."""

    seed: int
    steps: int | None  # None: never crossed within final_step
    final_step: int
    final_val_auc: float


@dataclasses.dataclass(frozen=True)
class G3Values:
    floor: float
    runs: list[RandomRun]  # by seed


@dataclasses.dataclass(frozen=True)
class G4Values:
    within: float  # median over the group's runs of the sd of their last evaluations
    across: float  # sd across seeds of the final validation AUC


@dataclasses.dataclass(frozen=True)
class Gate:
    gate: str  # 'G1' ... 'G4'
    scope: str  # a model, or 'model / training set / init'
    passed: bool
    detail: str  # the comparison in words (what failed, when it failed)
    values: G1Values | G2Values | G3Values | G4Values


def sd(values) -> float:
    return float(np.std(np.asarray(values, np.float64), ddof=1))


def _kernel_ratio(layer: str, value: float, random: list[float]) -> KernelRatio:
    mean, spread = float(np.mean(random)), sd(random)
    distance = abs(value - mean) / spread if spread > 0 else (math.inf if value != mean else 0.0)
    return KernelRatio(layer, value, random, mean, spread, distance)


def gate_g1(c, model: str, d: Diagnostics) -> Gate:
    """The source moved the weights."""
    ratios = [
        _kernel_ratio(layer, value, [r.kernel_std_ratio[layer] for r in d.random])
        for layer, value in d.pretrained.kernel_std_ratio.items()
    ]
    failures = [
        f"{r.layer}'s kernel std ratio within {c.gates.kernel_sd:g} sd of random"
        for r in ratios
        if not r.distance > c.gates.kernel_sd
    ]
    peak, random_peaks = d.pretrained.conv1_peakedness, [r.conv1_peakedness for r in d.random]
    if not peak > max(random_peaks):
        failures.append(f"conv1 peakedness {peak:.3f} not above the random inits' largest {max(random_peaks):.3f}")
    accuracy, chance = d.source_accuracy, d.chance
    if accuracy is None or not accuracy >= c.gates.chance_multiple * chance:
        failures.append(f"source accuracy {accuracy} below {c.gates.chance_multiple:g} x chance ({chance:.3f})")
    parts = "; ".join(
        f"{r.layer} {r.pretrained:.3f} vs {r.mean:.3f} ± {r.sd:.3f} ({r.distance:.0f} sd)" for r in ratios
    )
    detail = (
        f"kernel std / He std: {parts}; conv1 peakedness {peak:.3f} vs random max {max(random_peaks):.3f}; "
        f"source accuracy {accuracy:.3f} = {accuracy / chance:.0f} x chance"
        if accuracy is not None
        else "no source accuracy"
    )
    low, high = float(np.mean(random_peaks)), d.gabor_peakedness
    share = (peak - low) / (high - low) if high != low else None
    values = G1Values(ratios, peak, random_peaks, share, accuracy, chance, failures)
    return Gate("G1", model, not failures, "; ".join(failures) if failures else detail, values)


def gate_g2(c, model: str, d: Diagnostics) -> Gate:
    """Random features do not solve the target."""
    ceiling = c.threshold - c.gates.probe_below_threshold
    layers = []
    for layer in d.probe[0]:
        values = [p[layer] for p in d.probe]
        interval = stats.t_interval(values, c.confidence)
        layers.append(ProbeLayer(layer, values, interval, abs(interval.high - ceiling) < BORDERLINE))
    failures = [f"{p.layer}: upper bound {p.interval.high:.3f} > {ceiling:.2f}" for p in layers
                if not p.interval.high <= ceiling]  # fmt: skip
    text = f"probe AUC mean (upper 95 % bound) against {ceiling:.2f}: " + "; ".join(
        f"{p.layer} {p.interval.estimate:.3f} (≤ {p.interval.high:.3f})" for p in layers
    )
    detail = text + ("; FAILS at " + ", ".join(failures) if failures else "")
    return Gate("G2", model, not failures, detail, G2Values(ceiling, layers))


def group_of(measures: Mapping, model: str, data: str, init: str) -> dict[int, RunMeasures]:
    """seed -> RunMeasures of one (model, training set, init) group."""
    return {k.seed: m for k, m in measures.items() if (k.model, k.data, k.init) == (model, data, init)}


def gate_g3(c, model: str, measures: Mapping) -> Gate:
    """Learnable."""
    group = group_of(measures, model, "full", "random")
    floor = c.threshold + c.gates.final_above_threshold
    crossed = [s for s, m in group.items() if m.steps is not None]
    high = [s for s, m in group.items() if m.final_val_auc >= floor]
    finals = [m.final_val_auc for m in group.values()]
    passed = bool(group) and len(crossed) == len(high) == len(group)
    detail = (
        f"{len(crossed)}/{len(group)} random runs cross {c.threshold:g} (steps "
        f"{sorted(m.steps for m in group.values() if m.steps is not None)}); final validation AUC "
        f"{min(finals, default=float('nan')):.3f}-{max(finals, default=float('nan')):.3f} against {floor:.2f}"
    )
    runs = [RandomRun(s, m.steps, m.final_step, m.final_val_auc) for s, m in sorted(group.items())]
    return Gate("G3", model, passed, detail, G3Values(floor, runs))


def last_evals_sd(run: RunMeasures, count: int) -> float:
    """Sample sd (ddof 1) of the run's last `count` validation AUCs."""
    return sd([run.curve[s] for s in sorted(run.curve)[-count:]])


def gate_g4(c, model: str, data: str, init: str, measures: Mapping) -> Gate:
    """Stable."""
    group = group_of(measures, model, data, init)
    within = float(np.median([last_evals_sd(m, c.gates.last_evals) for m in group.values()]))
    across = sd([m.final_val_auc for m in group.values()])
    detail = f"last {c.gates.last_evals} evaluations: median sd {within:.4f}; across seeds {across:.4f}"
    return Gate("G4", f"{model} / {data} / {init}", within < across, detail, G4Values(within, across))


def all_gates(c, measures: Mapping, diagnostics: Mapping[str, Diagnostics]) -> list[Gate]:
    """G1-G3 of every model run, then G4 of every group of the models run, in the design's order."""
    gates = []
    for m in c.models_run:
        gates += [gate_g1(c, m, diagnostics[m]), gate_g2(c, m, diagnostics[m]), gate_g3(c, m, measures)]
    for model, data, inits in c.cells:
        if model in c.models_run:
            gates += [gate_g4(c, model, data, init, measures) for init in inits]
    return gates
