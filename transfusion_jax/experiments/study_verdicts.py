"""The miniature study's gates (G1-G4) and verdicts (C1-C8, R) exactly as docs/study.md §6-7 define them, from the
runs' measures: pure functions of numbers (no files), tested on constructed inputs whose answer is known.

Every contrast is paired by seed and judged from its interval (`c.confidence`) with `analysis.stats`
(docs/statistics.md): AUC contrasts by `stats.auc_contrast` (the seeds' spread plus the test-set noise all seeds
share), steps by `stats.steps_contrast` on the log scale (a crossing is known only to lie in its cell of the
evaluation grid, a run that never crossed only to lie beyond it: both censor the interval, never give it zero width,
and can leave a side open), similarity to init by `stats.t_interval` over seeds, R by `stats.seed_pair_interval`
over every pair of seeds (pairs share runs: a jackknife over seeds). The gates then override: G1 makes C5 and C8
"not testable" for a model, G3 its steps-based verdicts inconclusive, G4 the AUC-based verdicts of a (model, training
set, init) group inconclusive (a verdict the interval already leaves inconclusive names the failed gate too); G2 adds
a note.
"""

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from transfusion_jax.analysis import stats
from transfusion_jax.experiments import runs

MODELS = ("small", "large")
NOT_RUN = "not run on the CPU: --scale (or --full)"

# The paper's findings (docs/study.md, the claims table) and the kind of contrast that tests each.
FINDINGS = {
    "C1": "With plenty of data, transfer and random init reach comparable performance.",
    "C2a": "Transfer helps more with little data.",
    "C2b": "... and mainly for large models.",
    "C3a": "Larger models change less through training.",
    "C3b": "The lowest layers change least.",
    "C4": "Feature reuse is mostly restricted to the lowest (two) layers.",
    "R": "Large models: random-init representations are more similar to each other than to transfer-trained ones; "
    "small models: they overlap.",
    "C5": "Mean-Var init speeds convergence over random init.",
    "C6": "Transfusing the lowest blocks gives most of the convergence speed-up of full transfer.",
    "C7": "Slim (pretrained lowest blocks, a halved random top) matches full transfer.",
    "C8": "Synthetic Gabor filters in conv1 have the same effect as pretrained conv1 weights.",
}


@dataclasses.dataclass(frozen=True)
class RunKey:
    """One fine-tuning run of the design."""

    model: str  # 'small' | 'large'
    data: str  # 'full' | 'small' (the per-seed subset)
    init: str
    seed: int

    def workdir(self, root: str) -> str:
        return os.path.join(root, "runs", self.model, self.data, runs.init_dirname(self.init), f"seed_{self.seed}")

    def label(self) -> str:
        return f"{self.model} model, {self.data} data, {self.init}, seed {self.seed}"


@dataclasses.dataclass
class RunMeasures:
    """What the verdicts read of one run: the validation curve and its thresholds, final validation AUC, test scores
    at the final step, weight change per block."""

    curve: dict[int, float]
    final_step: int
    steps: int | None  # first evaluation with validation AUC > threshold (None: never; censored at final_step)
    steps_relative: int | None  # ... > relative_threshold x the run's own final validation AUC
    final_val_auc: float
    selected_step: int | None
    test_scores: np.ndarray
    weight_change: dict[str, float]


@dataclasses.dataclass
class Gate:
    gate: str  # 'G1' ... 'G4'
    scope: str  # a model, or 'model / training set / init'
    passed: bool
    detail: str
    values: dict = dataclasses.field(default_factory=dict)  # the numbers the gate compared


@dataclasses.dataclass
class Verdict:
    claim: str
    scope: str
    contrast: str
    measure: str  # 'auc' | 'log_steps' | 'similarity'
    kind: str  # 'equivalent' | 'greater'
    margin: float
    interval: stats.Interval | None
    verdict: str  # 'supported' | 'contradicted' | 'inconclusive' | NOT_RUN | 'not testable' | 'not assessable' | ...
    why: str
    checks: list[tuple[str, "Verdict"]] = dataclasses.field(default_factory=list)  # e.g. the relative threshold's
    parts: list["Verdict"] = dataclasses.field(default_factory=list)  # C7: its AUC and steps parts
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Secondary:
    """A number the design reports without a verdict: its interval and where the interval lies against the margin."""

    name: str
    scope: str
    measure: str
    interval: stats.Interval
    margin: float
    outcome: str


@dataclasses.dataclass
class StudyVerdicts:
    gates: list[Gate]
    verdicts: list[Verdict]
    secondary: list[Secondary]
    layers: dict[str, list[str]]


# ---------------------------------------------------------------- contrasts

Term = tuple[float, str, str, str]  # (coefficient, model, training set, init)


def _group(measures: Mapping[RunKey, RunMeasures], model: str, data: str, init: str) -> dict[int, RunMeasures]:
    return {k.seed: m for k, m in measures.items() if (k.model, k.data, k.init) == (model, data, init)}


def _common_seeds(measures, terms: Sequence[Term]) -> list[int]:
    seeds = None
    for _, model, data, init in terms:
        got = set(_group(measures, model, data, init))
        seeds = got if seeds is None else seeds & got
    return sorted(seeds or ())


def auc_interval(measures, labels: np.ndarray, terms: Sequence[Term], confidence: float) -> stats.Interval:
    """sum_t c_t AUC(test scores of group t), averaged over the seeds every group has, with its interval."""
    seeds = _common_seeds(measures, terms)
    if not seeds:
        return stats.Interval(None, None, None, 0, "no runs")
    groups = [[_group(measures, m, d, i)[s].test_scores for s in seeds] for _, m, d, i in terms]
    return stats.auc_contrast(labels, groups, [coef for coef, *_ in terms], confidence)


def evaluation_grid(runs: Sequence[RunMeasures]) -> list[int]:
    """The evaluation steps the runs share (each run's validation curve's steps); runs on different grids are not
    one design's."""
    grids = {tuple(sorted(r.curve)) for r in runs}
    if len(grids) != 1:
        raise ValueError(f"Runs of one contrast were evaluated at different steps: {sorted(grids)[:2]}")
    return list(grids.pop())


def steps_interval(measures, terms: Sequence[Term], confidence: float, relative: bool = False) -> stats.Interval:
    """sum_t c_t ln(steps to threshold of group t), averaged over the seeds every group has, with its interval
    (`stats.steps_contrast`: each crossing censored to its cell of the evaluation grid, a run that never crossed to
    beyond the grid's last step)."""
    seeds = _common_seeds(measures, terms)
    if not seeds:
        return stats.Interval(None, None, None, 0, "no runs")
    groups = [[_group(measures, m, d, i)[s] for s in seeds] for _, m, d, i in terms]
    first = [[run.steps_relative if relative else run.steps for run in group] for group in groups]
    grid = evaluation_grid([run for group in groups for run in group])
    return stats.steps_contrast(first, [coef for coef, *_ in terms], grid, confidence)


def _judge(claim, scope, contrast, measure, kind, margin, interval) -> Verdict:
    if interval.estimate is None:
        return Verdict(claim, scope, contrast, measure, kind, margin, interval, "inconclusive", "no runs to compare")
    verdict, why = stats.verdict(interval, margin, kind)
    return Verdict(claim, scope, contrast, measure, kind, margin, interval, verdict, why)


def _missing(claim, scope, contrast, measure, kind, margin, verdict: str, why: str) -> Verdict:
    return Verdict(claim, scope, contrast, measure, kind, margin, None, verdict, why)


# ---------------------------------------------------------------- gates


def _sd(values) -> float:
    return float(np.std(np.asarray(values, np.float64), ddof=1))


def gate_g1(c, model: str, d: Mapping) -> Gate:
    """The source moved the weights: every layer's kernel std ratio outside mean +- k sd of the random inits, conv1
    peakedness above the random inits' largest, source accuracy >= m x chance."""
    failures, parts = [], []
    for layer, value in d["pretrained"]["kernel_std_ratio"].items():
        random = [r["kernel_std_ratio"][layer] for r in d["random"]]
        mean, sd = float(np.mean(random)), _sd(random)
        distance = abs(value - mean) / sd if sd > 0 else (math.inf if value != mean else 0.0)
        parts.append(f"{layer} {value:.3f} vs {mean:.3f} ± {sd:.3f} ({distance:.0f} sd)")
        if not distance > c.gates.kernel_sd:
            failures.append(f"{layer}'s kernel std ratio within {c.gates.kernel_sd:g} sd of random")
    peak, random_peaks = d["pretrained"]["conv1_peakedness"], [r["conv1_peakedness"] for r in d["random"]]
    if not peak > max(random_peaks):
        failures.append(f"conv1 peakedness {peak:.3f} not above the random inits' largest {max(random_peaks):.3f}")
    accuracy, chance = d["source_accuracy"], d["chance"]
    if accuracy is None or not accuracy >= c.gates.chance_multiple * chance:
        failures.append(f"source accuracy {accuracy} below {c.gates.chance_multiple:g} x chance ({chance:.3f})")
    detail = (
        f"kernel std / He std: {'; '.join(parts)}; conv1 peakedness {peak:.3f} vs random max {max(random_peaks):.3f}; "
        f"source accuracy {accuracy:.3f} = {accuracy / chance:.0f} x chance"
        if accuracy is not None
        else "no source accuracy"
    )
    return Gate("G1", model, not failures, "; ".join(failures) if failures else detail)


def gate_g2(c, model: str, d: Mapping) -> Gate:
    """Random features do not solve the target: per layer, the upper 95 % bound of the mean frozen-random-feature
    probe AUC <= threshold - gap."""
    ceiling = c.threshold - c.gates.probe_below_threshold
    failures, parts = [], []
    for layer in d["probe"][0]:
        interval = stats.t_interval([p[layer] for p in d["probe"]], c.confidence)
        parts.append(f"{layer} {interval.estimate:.3f} (≤ {interval.high:.3f})")
        if not interval.high <= ceiling:
            failures.append(f"{layer}: upper bound {interval.high:.3f} > {ceiling:.2f}")
    text = f"probe AUC mean (upper 95 % bound) against {ceiling:.2f}: " + "; ".join(parts)
    return Gate("G2", model, not failures, text + ("; FAILS at " + ", ".join(failures) if failures else ""))


def gate_g3(c, model: str, measures) -> Gate:
    """Learnable: every random-init run on the full training set crosses the threshold and ends >= threshold + gap."""
    group = _group(measures, model, "full", "random")
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
    return Gate("G3", model, passed, detail)


def last_evals_sd(run: RunMeasures, count: int) -> float:
    """Sample sd (ddof 1) of the run's last `count` validation AUCs."""
    return _sd([run.curve[s] for s in sorted(run.curve)[-count:]])


def gate_g4(c, model: str, data: str, init: str, measures) -> Gate:
    """Stable: the median over the group's runs of the sd of their last evaluations is below the sd across seeds of
    the final validation AUC."""
    group = _group(measures, model, data, init)
    within = float(np.median([last_evals_sd(m, c.gates.last_evals) for m in group.values()]))
    across = _sd([m.final_val_auc for m in group.values()])
    detail = f"last {c.gates.last_evals} evaluations: median sd {within:.4f}; across seeds {across:.4f}"
    return Gate("G4", f"{model} / {data} / {init}", within < across, detail, {"within": within, "across": across})


# ---------------------------------------------------------------- the claims


def _has(c, model: str, data: str, init: str) -> bool:
    return any(m == model and d == data and init in inits for m, d, inits in c.cells)


def _sim(similar: Mapping, model: str, init: str, seed: int, layer: str, method: str) -> float:
    return float(similar[model]["to_init"][f"{init}/{seed}"][layer][method]["score"])


def _pair(similar: Mapping, model: str, key: str, layer: str, method: str) -> float:
    return float(similar[model]["pairs"][key][layer][method]["score"])


class _Claims:
    """Builds every verdict of the design from one study's measures."""

    def __init__(self, c, measures, labels, diagnostics, similar, layers):
        self.c, self.measures, self.labels = c, measures, labels
        self.diagnostics, self.similar, self.layers = diagnostics, similar, layers
        self.m = c.margins
        self.methods = [c.similarity.verdict_method] + [
            x for x in c.similarity.methods if x != c.similarity.verdict_method
        ]
        self.gates: dict = {}
        self.verdicts: list[Verdict] = []
        self.secondary: list[Secondary] = []

    # --- availability

    def missing(self, groups: Sequence[tuple[str, str, str]]) -> str | None:
        if any(not _has(self.c, m, d, i) for m, d, i in groups):
            return "not in this design"
        if any(m not in self.c.models_run for m, _, _ in groups):
            return NOT_RUN
        return None

    # --- AUC, steps, similarity claims

    def auc(self, claim, scope, contrast, kind, terms: Sequence[Term]) -> Verdict:
        groups = [(m, d, i) for _, m, d, i in terms]
        why = self.missing(groups)
        if why:
            return _missing(claim, scope, contrast, "auc", kind, self.m.auc, why, why)
        interval = auc_interval(self.measures, self.labels, terms, self.c.confidence)
        v = _judge(claim, scope, contrast, "auc", kind, self.m.auc, interval)
        unstable = [g for g in dict.fromkeys(groups) if not self.gates["G4", g].passed]
        failed = ", ".join(" / ".join(g) for g in unstable)
        if unstable and v.verdict in ("supported", "contradicted"):
            v.why = f"{v.verdict} by the interval, but G4 failed for {failed}"
            v.verdict = "inconclusive"
        elif unstable:  # say it even where the interval alone leaves it inconclusive
            v.why = f"{v.why}; G4 failed for {failed} as well"
        return v

    def steps(self, claim, scope, contrast, kind, terms: Sequence[Term], model: str, g1: bool = False) -> Verdict:
        groups = [(m, d, i) for _, m, d, i in terms]
        why = self.missing(groups)
        if why:
            return _missing(claim, scope, contrast, "log_steps", kind, self.m.log_steps, why, why)
        results = []
        for relative in (False, True):
            interval = steps_interval(self.measures, terms, self.c.confidence, relative)
            v = _judge(claim, scope, contrast, "log_steps", kind, self.m.log_steps, interval)
            self._steps_gates(v, model, g1)
            results.append(v)
        main, rel = results
        main.checks.append((f"relative threshold ({self.c.relative_threshold:g} x own final)", rel))
        if rel.verdict != main.verdict:
            main.notes.append(f"The relative threshold gives {rel.verdict} ({rel.why}): the two thresholds disagree.")
        return main

    def _steps_gates(self, v: Verdict, model: str, g1: bool) -> None:
        if g1 and not self.gates["G1", model].passed:
            v.verdict, v.why = "not testable", f"G1 failed for the {model} model: the pretrained init is a random one"
            return
        if not self.gates["G3", model].passed and v.verdict in ("supported", "contradicted"):
            v.why = f"{v.verdict} by the interval, but G3 failed for the {model} model"
            v.verdict = "inconclusive"
        elif not self.gates["G3", model].passed:  # say it even where the interval alone leaves it inconclusive
            v.why = f"{v.why}; G3 failed for the {model} model as well"
        if not self.gates["G2", model].passed:
            v.notes.append(
                f"G2 failed for the {model} model: part of the threshold is reachable without learning features."
            )

    def similarity(self, claim, scope, contrast, kind, per_method) -> Verdict:
        """per_method(method) -> per-seed values (a t interval over seeds) or an Interval, or None when the runs are
        missing."""
        main = None
        for method in self.methods:
            values = per_method(method)
            if values is None:
                return _missing(claim, scope, contrast, "similarity", kind, self.m.similarity, NOT_RUN, NOT_RUN)
            if not isinstance(values, stats.Interval):
                values = stats.t_interval(values, self.c.confidence)
            v = _judge(claim, scope, f"{contrast} [{method}]", "similarity", kind, self.m.similarity, values)
            if main is None:
                main = v
            else:
                main.checks.append((method, v))
                if v.verdict != main.verdict:
                    main.notes.append(f"{method} gives {v.verdict} ({v.why}): the two measures disagree.")
        return main

    # --- secondary numbers

    def add_secondary(self, name, scope, measure, terms: Sequence[Term]) -> None:
        if self.missing([(m, d, i) for _, m, d, i in terms]):
            return
        if measure == "auc":
            interval, margin = auc_interval(self.measures, self.labels, terms, self.c.confidence), self.m.auc
        else:
            interval, margin = steps_interval(self.measures, terms, self.c.confidence), self.m.log_steps
        self.secondary.append(Secondary(name, scope, measure, interval, margin, stats.outcome(interval, margin)))

    # --- the design's table (docs/study.md §6)

    def build(self) -> None:
        # "Layers 1-2" and "layers 3-4" of the design: the lower and the upper half of each model's blocks.
        lo_hi = {m: (names[: len(names) // 2], names[len(names) // 2 :]) for m, names in self.layers.items()}
        add = self.verdicts.append
        for m in MODELS:
            add(
                self.auc(
                    "C1",
                    f"{m} model",
                    "AUC(transfer) - AUC(random), full data",
                    "equivalent",
                    [(1, m, "full", "transfer"), (-1, m, "full", "random")],
                )
            )
        for m in MODELS:
            add(
                self.auc(
                    "C2a",
                    f"{m} model",
                    "[AUC(transfer) - AUC(random)] small data - [same] full data",
                    "greater",
                    [
                        (1, m, "small", "transfer"),
                        (-1, m, "small", "random"),
                        (-1, m, "full", "transfer"),
                        (1, m, "full", "random"),
                    ],
                )
            )
        add(
            self.auc(
                "C2b",
                "large - small model",
                "[AUC(transfer) - AUC(random)] small data: large - small model",
                "greater",
                [
                    (1, "large", "small", "transfer"),
                    (-1, "large", "small", "random"),
                    (-1, "small", "small", "transfer"),
                    (1, "small", "small", "random"),
                ],
            )
        )

        def seeds(model, init):
            return sorted(_group(self.measures, model, "full", init)) if model in self.similar else []

        def c3a(method):
            if not all(m in self.similar for m in MODELS):
                return None
            both = sorted(set(seeds("large", "random")) & set(seeds("small", "random")))
            return [
                np.mean([_sim(self.similar, "large", "random", s, x, method) for x in self.layers["large"]])
                - np.mean([_sim(self.similar, "small", "random", s, x, method) for x in self.layers["small"]])
                for s in both
            ]

        add(
            self.similarity(
                "C3a", "large - small model", "mean over layers of sim_init, random init, full data", "greater", c3a
            )
        )
        for m in MODELS:

            def c3b(method, m=m):
                if m not in self.similar:
                    return None
                first, last = self.layers[m][0], self.layers[m][-1]
                return [
                    _sim(self.similar, m, "random", s, first, method) - _sim(self.similar, m, "random", s, last, method)
                    for s in seeds(m, "random")
                ]

            add(
                self.similarity(
                    "C3b",
                    f"{m} model",
                    f"sim_init({self.layers_of(m, 0)}) - sim_init({self.layers_of(m, -1)}), random init, full data",
                    "greater",
                    c3b,
                )
            )
        for m in MODELS:

            def c4(method, m=m):
                if m not in self.similar:
                    return None
                low, high = lo_hi[m]
                out = []
                for s in sorted(set(seeds(m, "random")) & set(seeds(m, "transfer"))):
                    reuse = {
                        x: _sim(self.similar, m, "transfer", s, x, method)
                        - _sim(self.similar, m, "random", s, x, method)
                        for x in self.layers[m]
                    }
                    out.append(np.mean([reuse[x] for x in low]) - np.mean([reuse[x] for x in high]))
                return out

            add(
                self.similarity(
                    "C4",
                    f"{m} model",
                    "reuse(l) = sim_init(l | transfer) - sim_init(l | random); mean "
                    "over the lower half of the layers - mean over the upper half",
                    "greater",
                    c4,
                )
            )
        for m, kind in (("large", "greater"), ("small", "equivalent")):

            def r(method, m=m):
                if m not in self.similar:
                    return None
                high, pairs = lo_hi[m][1], {}
                for key in self.similar[m]["pairs"]:
                    kind_, i, j = key.split("/")
                    value = np.mean([_pair(self.similar, m, key, x, method) for x in high])
                    pairs.setdefault(kind_, {})[int(i), int(j)] = float(value)
                return stats.seed_pair_interval(pairs["rand_rand"], pairs["rand_imnet"], self.c.confidence)

            add(
                self.similarity(
                    "R",
                    f"{m} model",
                    "mean sim(R_i, R_j) over seeds i < j - mean sim(R_i, T_j) over seeds i != j, upper half of the "
                    "layers",
                    kind,
                    r,
                )
            )
        for m in MODELS:
            add(
                self.steps(
                    "C5",
                    f"{m} model",
                    "ln steps(random) - ln steps(mean_var), full data",
                    "greater",
                    [(1, m, "full", "random"), (-1, m, "full", "mean_var")],
                    m,
                    g1=True,
                )
            )
        add(self.c6())
        add(self.c7())
        add(
            self.steps(
                "C8",
                "large model",
                "ln steps(gabor) - ln steps(transfusion:layer1), full data",
                "equivalent",
                [(1, "large", "full", "gabor"), (-1, "large", "full", "transfusion:layer1")],
                "large",
                g1=True,
            )
        )
        # Secondary numbers (docs/study.md §6): reported with intervals, no verdicts.
        for m in MODELS:
            self.add_secondary(
                "ln steps(random) - ln steps(transfer)",
                f"{m} model",
                "log_steps",
                [(1, m, "full", "random"), (-1, m, "full", "transfer")],
            )
            self.add_secondary(
                "AUC(mean_var) - AUC(transfer)",
                f"{m} model",
                "auc",
                [(1, m, "full", "mean_var"), (-1, m, "full", "transfer")],
            )
            self.add_secondary(
                "ln steps(transfer) - ln steps(mean_var)",
                f"{m} model",
                "log_steps",
                [(1, m, "full", "transfer"), (-1, m, "full", "mean_var")],
            )
            for data in ("full", "small"):
                self.add_secondary(
                    f"AUC(transfer) - AUC(random), {data} data",
                    f"{m} model",
                    "auc",
                    [(1, m, data, "transfer"), (-1, m, data, "random")],
                )
        chain = ["random"] + [f"transfusion:{b}" for b in self.layers.get("large", [])[:-1]] + ["transfer"]
        for a, b in zip(chain, chain[1:]):
            self.add_secondary(
                f"marginal speed-up: ln steps({a}) - ln steps({b})",
                "large model",
                "log_steps",
                [(1, "large", "full", a), (-1, "large", "full", b)],
            )
        self.add_secondary(
            "ln steps(random) - ln steps(gabor)",
            "large model",
            "log_steps",
            [(1, "large", "full", "random"), (-1, "large", "full", "gabor")],
        )

    def layers_of(self, model: str, index: int) -> str:
        names = self.layers.get(model) or [f"layer{i + 1}" for i in range(4)]
        return names[index]

    def c6(self) -> Verdict:
        second = f"transfusion:{self.layers_of('large', 1)}"
        contrast = (
            f"ln steps(random) - 2 ln steps({second}) + ln steps(transfer): the speed-up of the lower half minus "
            "that of the upper half, full data"
        )
        terms = [(1, "large", "full", "random"), (-2, "large", "full", second), (1, "large", "full", "transfer")]
        v = self.steps("C6", "large model", contrast, "greater", terms, "large")
        if v.interval is None:
            return v
        interval = steps_interval(
            self.measures, [(1, "large", "full", "random"), (-1, "large", "full", "transfer")], self.c.confidence
        )
        speed_up = stats.outcome(interval, self.m.log_steps)
        if speed_up != "better":
            v.notes.append(
                f"Transfer itself does not speed convergence here (ln steps(random) - ln steps(transfer): "
                f"{speed_up}), so C6 is not assessable (docs/study.md §6)."
            )
            v.why, v.verdict = f"{v.verdict} by the interval; transfer's own speed-up is {speed_up}", "not assessable"
        return v

    def c7(self) -> Verdict:
        contrast = "AUC(slim) - AUC(transfer) and ln steps(slim) - ln steps(transfer), full data"
        auc = self.auc(
            "C7",
            "large model",
            "AUC(slim) - AUC(transfer)",
            "equivalent",
            [(1, "large", "full", "slim"), (-1, "large", "full", "transfer")],
        )
        steps = self.steps(
            "C7",
            "large model",
            "ln steps(slim) - ln steps(transfer)",
            "equivalent",
            [(1, "large", "full", "slim"), (-1, "large", "full", "transfer")],
            "large",
        )
        v = Verdict(
            "C7", "large model", contrast, "auc+log_steps", "equivalent", self.m.auc, None, "", "", parts=[auc, steps]
        )
        if auc.interval is None:
            v.verdict = v.why = auc.verdict
        elif "contradicted" in (auc.verdict, steps.verdict):
            v.verdict, v.why = "contradicted", "a part is better or worse than transfer"
        elif auc.verdict == steps.verdict == "supported":
            v.verdict, v.why = "supported", "both parts equivalent"
        else:
            v.verdict, v.why = "inconclusive", "not both parts equivalent, neither contradicted"
        v.notes = steps.notes
        return v


def evaluate(
    c,
    measures: Mapping[RunKey, RunMeasures],
    labels: np.ndarray,
    diagnostics: Mapping[str, Mapping],
    similar: Mapping[str, Mapping],
    layers: Mapping[str, Sequence[str]] | None = None,
) -> StudyVerdicts:
    """The gates and every verdict of the design. `diagnostics` / `similar`: per model run, what experiments.study's
    `model_diagnostics` / `model_similarity` measured; `layers`: each model's block names (default layer1..4)."""
    layers = {m: list((layers or {}).get(m) or [f"layer{i + 1}" for i in range(len(c.widths[m]))]) for m in MODELS}
    claims = _Claims(c, measures, labels, diagnostics, similar, layers)
    gates = []
    for m in c.models_run:
        for gate in (gate_g1(c, m, diagnostics[m]), gate_g2(c, m, diagnostics[m]), gate_g3(c, m, measures)):
            claims.gates[gate.gate, m] = gate
            gates.append(gate)
    for model, data, inits in c.cells:
        if model in c.models_run:
            for init in inits:
                gate = gate_g4(c, model, data, init, measures)
                claims.gates["G4", (model, data, init)] = gate
                gates.append(gate)
    claims.build()
    return StudyVerdicts(gates, claims.verdicts, claims.secondary, layers)
