"""The study's measures as contrasts: for a claim's terms, the interval of its effect (docs/study.md §5-6,
docs/statistics.md). Pure functions of the runs' measures, the test labels and the similarity records.

A measure is one entry of MEASURES: the scale its numbers are on ('auc' | 'log_steps' | 'similarity': how they are
written and which margin applies), whether a claim's runs exist, and its variants; the first variant judges, the
others are shown beside it (the relative threshold beside the absolute one; the other similarity measures beside the
verdict's). Terms, per measure:

  auc, log_steps   (coefficient, model, training set, init): sum_t c_t AUC (ln steps) of group t, paired by seed
  sim_to_init      (coefficient, model, ((c_i, init), ...), layers): per seed, sum_t c_t mean over the layers of
                   sum_i c_i sim_init(init_i), the similarity of each layer at step 0 to itself after training
  seed_pairs       (+1, model, kind, layers), (-1, model, kind, layers): mean over the first kind's pairs of seeds
                   minus mean over the second's, each pair's similarity averaged over the layers

layers: 'all', 'first', 'last', 'lower half' or 'upper half' of the model's blocks ("layers 1-2" and "layers 3-4"
of the design are the lower and the upper half).
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from transfusion_jax.analysis import stats
from transfusion_jax.experiments.study.design import has_cell
from transfusion_jax.experiments.study.gates import group_of
from transfusion_jax.experiments.study.measures import RunMeasures
from transfusion_jax.experiments.study.representations import ModelSimilarity

NOT_RUN = "not run on the CPU: --scale (or --full)"
NOT_IN_DESIGN = "not in this design"


@dataclasses.dataclass(frozen=True)
class Evidence:
    """Everything a verdict reads: the design, each run's measures, the test labels, each model's similarity records
    and block names."""

    c: object
    measures: Mapping[object, RunMeasures]
    labels: np.ndarray
    similarity: Mapping[str, ModelSimilarity]
    layers: Mapping[str, list[str]]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way a measure is read. `beside`: its name where it is shown beside the main verdict; `contrast`: what the
    claim's contrast gets appended; `disagree`: the note when its verdict differs from the main one."""

    name: str
    beside: str = ""
    contrast: str = ""
    disagree: str = ""


@dataclasses.dataclass(frozen=True)
class Measure:
    scale: str  # 'auc' | 'log_steps' | 'similarity'
    variants: Callable[[object], list[Variant]]  # of the design; the first judges
    interval: Callable[[Evidence, Sequence, str], stats.Interval]  # (evidence, terms, variant name)
    missing: Callable[[Evidence, Sequence], str | None]  # why the claim's runs are missing, or None


# ---------------------------------------------------------------- runs' groups: AUC and steps


def common_seeds(measures, terms: Sequence) -> list[int]:
    """The seeds every group of the terms has."""
    seeds = None
    for _, model, data, init in terms:
        got = set(group_of(measures, model, data, init))
        seeds = got if seeds is None else seeds & got
    return sorted(seeds or ())


def auc_interval(measures, labels: np.ndarray, terms: Sequence, confidence: float) -> stats.Interval:
    """sum_t c_t AUC(test scores of group t), averaged over the seeds every group has, with its interval
    (`stats.auc_contrast`: the seeds' spread plus the test-set noise all seeds share)."""
    seeds = common_seeds(measures, terms)
    if not seeds:
        return stats.Interval(None, None, None, 0, "no runs")
    groups = [[group_of(measures, m, d, i)[s].test_scores for s in seeds] for _, m, d, i in terms]
    return stats.auc_contrast(labels, groups, [coef for coef, *_ in terms], confidence)


def evaluation_grid(runs: Sequence[RunMeasures]) -> list[int]:
    """The evaluation steps the runs share (each run's validation curve's steps); runs on different grids are not
    one design's."""
    grids = {tuple(sorted(r.curve)) for r in runs}
    if len(grids) != 1:
        raise ValueError(f"Runs of one contrast were evaluated at different steps: {sorted(grids)[:2]}")
    return list(grids.pop())


def steps_interval(measures, terms: Sequence, confidence: float, relative: bool = False) -> stats.Interval:
    """sum_t c_t ln(steps to threshold of group t), averaged over the seeds every group has, with its interval
    (`stats.steps_contrast`: each crossing censored to its cell of the evaluation grid, a run that never crossed to
    beyond the grid's last step)."""
    seeds = common_seeds(measures, terms)
    if not seeds:
        return stats.Interval(None, None, None, 0, "no runs")
    groups = [[group_of(measures, m, d, i)[s] for s in seeds] for _, m, d, i in terms]
    first = [[run.steps_relative if relative else run.steps for run in group] for group in groups]
    grid = evaluation_grid([run for group in groups for run in group])
    return stats.steps_contrast(first, [coef for coef, *_ in terms], grid, confidence)


def missing_runs(ev: Evidence, terms: Sequence) -> str | None:
    groups = [(m, d, i) for _, m, d, i in terms]
    if any(not has_cell(ev.c, m, d, i) for m, d, i in groups):
        return NOT_IN_DESIGN
    if any(m not in ev.c.models_run for m, _, _ in groups):
        return NOT_RUN
    return None


def _steps_variants(c) -> list[Variant]:
    relative = Variant(
        "relative",
        beside=f"relative threshold ({c.relative_threshold:g} x own final)",
        disagree="The relative threshold gives {verdict} ({why}): the two thresholds disagree.",
    )
    return [Variant("absolute"), relative]


# ---------------------------------------------------------------- representational similarity


def select_layers(names: Sequence[str], which: str) -> list[str]:
    half = len(names) // 2
    return {
        "all": list(names),
        "first": [names[0]],
        "last": [names[-1]],
        "lower half": list(names[:half]),
        "upper half": list(names[half:]),
    }[which]


def _full_data_seeds(ev: Evidence, model: str, init: str) -> list[int]:
    return sorted(group_of(ev.measures, model, "full", init)) if model in ev.similarity else []


def sim_to_init_values(ev: Evidence, terms: Sequence, method: str) -> list[float]:
    """Per seed every term's runs have: sum_t c_t mean over the term's layers of sum_i c_i sim_init(init_i)."""
    seeds = sorted(set.intersection(*(set(_full_data_seeds(ev, m, i)) for _, m, inits, _ in terms for _, i in inits)))
    values = []
    for seed in seeds:
        total = 0.0
        for coef, model, inits, which in terms:
            to_init = ev.similarity[model].to_init
            per_layer = []
            for layer in select_layers(ev.layers[model], which):
                value = 0.0
                for c_i, init in inits:
                    value += c_i * float(to_init[init, seed][layer][method].score)
                per_layer.append(value)
            total += coef * np.mean(per_layer)
        values.append(total)
    return values


def seed_pairs_interval(ev: Evidence, terms: Sequence, method: str) -> stats.Interval:
    """Mean over the +1 term's pairs minus mean over the -1 term's, over every pair of seeds, with a jackknife over
    seeds (`stats.seed_pair_interval`: pairs share runs)."""
    (plus, model, same, which), (minus, _, cross, _) = terms
    if (plus, minus) != (1, -1):
        raise ValueError(f"seed_pairs compares two kinds of pairs, coefficients (1, -1); got {(plus, minus)}.")
    layers = select_layers(ev.layers[model], which)
    pairs = {kind: {} for kind in (same, cross)}
    for (kind, i, j), entry in ev.similarity[model].pairs.items():
        if kind in pairs:
            pairs[kind][i, j] = float(np.mean([float(entry[x][method].score) for x in layers]))
    return stats.seed_pair_interval(pairs[same], pairs[cross], ev.c.confidence)


def missing_similarity(ev: Evidence, terms: Sequence) -> str | None:
    return NOT_RUN if any(term[1] not in ev.similarity for term in terms) else None


def _similarity_variants(c) -> list[Variant]:
    """The verdict's measure first, then the others beside it."""
    methods = [c.similarity.verdict_method] + [x for x in c.similarity.methods if x != c.similarity.verdict_method]
    note = "{method} gives {{verdict}} ({{why}}): the two measures disagree."
    return [Variant(m, beside=m, contrast=f" [{m}]", disagree=note.format(method=m)) for m in methods]


MEASURES: dict[str, Measure] = {
    "auc": Measure(
        "auc",
        lambda c: [Variant("final")],
        lambda ev, terms, _: auc_interval(ev.measures, ev.labels, terms, ev.c.confidence),
        missing_runs,
    ),
    "log_steps": Measure(
        "log_steps",
        _steps_variants,
        lambda ev, terms, variant: steps_interval(ev.measures, terms, ev.c.confidence, variant == "relative"),
        missing_runs,
    ),
    "sim_to_init": Measure(
        "similarity",
        _similarity_variants,
        lambda ev, terms, method: stats.t_interval(sim_to_init_values(ev, terms, method), ev.c.confidence),
        missing_similarity,
    ),
    "seed_pairs": Measure("similarity", _similarity_variants, seed_pairs_interval, missing_similarity),
}
