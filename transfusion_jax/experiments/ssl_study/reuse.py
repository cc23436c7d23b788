"""Where each arm's features are reused (docs/ssl_study.md §7): per block, linear probes of every run's init, and
every run's similarity to its own init beside two nulls. Measured once into DIR/analysis (the probes' test scores
as .npz, the similarities as the study's JSON), then summarised by pure functions into intervals.

- Probes (`measure_probes`): each run's step-0 network (its init.npz: the weights fine-tuning starts from, with the
  BatchNorm statistics recomputed for it), global-average-pooled block features, the linear probe of
  `analysis.probes` fitted on that seed's labelled subset (the run's train_subset.json) and scored on the test
  images; the decision values are kept, so that an AUC over seeds gets the study's interval (`stats.auc_contrast`).
- Similarity to init (`measure_similarity`): per run and block, step 0 against step 300 on the test images
  (`nulls.with_null`: beside the shuffled-image null), and the unrelated-network null: the run's step-0 block
  against the final block of the random-init runs of every other seed, which never started there.
"""

import dataclasses
import functools
import json
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np

from transfusion_jax.analysis import activations, nulls, probes, stats
from transfusion_jax.experiments import run_weights
from transfusion_jax.experiments.ssl_study import design
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import blocks
from transfusion_jax.experiments.study.measures import chunks, split_arrays
from transfusion_jax.experiments.study.representations import Score, similarity_methods
from transfusion_jax.train import rundir

# ---------------------------------------------------------------- probes of the init


def _subset_rows(run: run_weights.RunWeights, train_ids: Sequence) -> np.ndarray:
    """Indices into the whole train split of the examples the run trained on (its train_subset.json), or all."""
    path = os.path.join(run.workdir, rundir.TRAIN_SUBSET)
    if not os.path.exists(path):
        return np.arange(len(train_ids))
    with open(path) as f:
        wanted = set(json.load(f)["ids"])
    rows = np.array([i for i, x in enumerate(train_ids) if x in wanted])
    if len(rows) != len(wanted):
        raise RuntimeError(f"{run.workdir}: {len(wanted) - len(rows)} of its training examples are not in the split.")
    return rows


def run_probe_scores(run_dir: str, layers: Sequence[str], c: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({block: test decision values}, test labels) of the linear probes of one run's init."""
    run = run_weights.RunWeights(run_dir)
    train, test = split_arrays(run.config, "train"), split_arrays(run.config, "test")
    rows = _subset_rows(run, train.ids)
    variables = run.initial()
    fit = probes.pooled_features(run.apply, variables, chunks(train.images[rows]), layers)
    scored = probes.pooled_features(run.apply, variables, chunks(test.images), layers)
    labels = np.asarray(train.labels)[rows]
    scores = {x: probes.linear_probe_decision(fit[x], labels, scored[x], c) for x in layers}
    return scores, np.asarray(test.labels).astype(bool)


def probe_path(workdir: str, model: str) -> str:
    return os.path.join(workdir, "analysis", f"ssl_probe_scores_{model}.npz")


def measure_probes(workdir: str, c, log=print) -> dict:
    """{'labels': test labels, (arm, seed, block): decision values} of every run, cached as an .npz."""
    path = probe_path(workdir, c.model)
    if not os.path.exists(path):
        start, arrays = time.perf_counter(), {}
        layers = list(blocks(c.study, c.model))
        for key in design.run_keys(c):
            scores, labels = run_probe_scores(key.workdir(workdir), layers, c.probe_c)
            if "labels" in arrays and not np.array_equal(arrays["labels"], labels):
                raise RuntimeError(f"{key.label()}: its test labels differ from the other runs'.")
            arrays["labels"] = labels
            arrays.update({f"{key.init}/{key.seed}/{x}": v for x, v in scores.items()})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            np.savez(f, **arrays)
        os.replace(path + ".tmp", path)
        log(f"probes of every run's init, per block: {time.perf_counter() - start:.0f} s")
    with np.load(path) as found:
        out = {"labels": found["labels"]}
        for name in found.files:
            if name != "labels":
                arm, seed, layer = name.split("/")
                out[arm, int(seed), layer] = found[name]
    return out


# ---------------------------------------------------------------- similarity to init, beside its nulls


def similarity_record(workdir: str, c) -> dict:
    """The JSON the cache holds: per run 'arm/seed' its similarity to init per block and measure
    (`nulls.with_null`, the shuffled-image null beside it), and per 'arm/seed/other' the unrelated-network null
    (its step-0 block against the final block of random run `other`, one shuffled-image permutation)."""
    layers, methods = list(blocks(c.study, c.model)), similarity_methods(c.study)
    reduction = activations.Reduction(mode="positions", positions=int(c.study.similarity.positions), seed=0)
    start, final, out = {}, {}, {"layers": layers, "reduction": reduction.describe(), "to_init": {}, "unrelated": {}}
    for key in design.run_keys(c):
        run = run_weights.RunWeights(key.workdir(workdir))
        images = split_arrays(run.config, "test").images
        start[key.init, key.seed] = activations.collect_rows((run.apply, run.initial()), chunks(images), layers,
                                                              reduction)  # fmt: skip
        final[key.init, key.seed] = activations.collect_rows((run.apply, run.final()), chunks(images), layers,
                                                              reduction)  # fmt: skip
        out["num_images"] = len(images)
    compare = functools.partial(nulls.with_null, num_images=out["num_images"], methods=methods)
    perms = int(c.study.similarity.null_permutations)
    seeds = list(c.study.seeds)
    for arm in c.arms:
        for seed in seeds:
            a, b = start[arm, seed], final[arm, seed]
            out["to_init"][f"{arm}/{seed}"] = {x: compare(a[x], b[x], permutations=perms) for x in layers}
            for other in seeds:
                if other != seed:
                    b = final["random", other]
                    out["unrelated"][f"{arm}/{seed}/{other}"] = {x: compare(a[x], b[x], permutations=1) for x in layers}
    return out


@dataclasses.dataclass(frozen=True)
class Similarity:
    layers: list[str]
    num_images: int
    reduction: dict
    to_init: dict[tuple[str, int], dict[str, dict[str, Score]]]  # (arm, seed) -> layer -> method -> Score
    unrelated: dict[tuple[str, int, int], dict[str, dict[str, Score]]]  # (arm, seed, random seed) -> ...

    @classmethod
    def from_json(cls, d: dict) -> "Similarity":
        def scores(entry):
            return {x: {m: Score(**s) for m, s in entry[x].items()} for x in d["layers"]}

        def key(text):
            arm, *seeds = text.split("/")
            return (arm, *map(int, seeds))

        return cls(
            list(d["layers"]), d["num_images"], d["reduction"],
            {key(k): scores(v) for k, v in d["to_init"].items()},
            {key(k): scores(v) for k, v in d["unrelated"].items()},
        )  # fmt: skip


def measure_similarity(workdir: str, c, log=print) -> Similarity:
    start = time.perf_counter()
    path = workdir_lib.analysis_path(workdir, "ssl_similarity", c.model)
    found = workdir_lib.cached_json(path, lambda: similarity_record(workdir, c))
    log(f"similarity to init with its nulls, per block: {time.perf_counter() - start:.0f} s")
    return Similarity.from_json(found)


# ---------------------------------------------------------------- summaries: pure functions of the records


@dataclasses.dataclass(frozen=True)
class ProbeSummary:
    """Per block: each arm's mean probe AUC over seeds, and the contrasts between arms, with intervals."""

    layers: list[str]
    auc: dict[str, dict[str, stats.Interval]]  # arm -> layer -> mean AUC [interval]
    contrasts: dict[str, dict[str, stats.Interval]]  # 'ssl - random' ... -> layer -> interval


PROBE_CONTRASTS = (("ssl", "random"), ("ssl", "transfer"), ("transfer", "random"))


def summarise_probes(probe: Mapping, arms: Sequence[str], seeds: Sequence[int], confidence: float) -> ProbeSummary:
    labels = np.asarray(probe["labels"]).astype(bool)
    layers = list(dict.fromkeys(k[2] for k in probe if k != "labels"))

    def scores(arm, layer):
        return [probe[arm, s, layer] for s in seeds]

    auc = {a: {x: stats.auc_contrast(labels, [scores(a, x)], [1.0], confidence) for x in layers} for a in arms}
    contrasts = {
        f"{a} - {b}": {x: stats.auc_contrast(labels, [scores(a, x), scores(b, x)], [1.0, -1.0], confidence)
                       for x in layers}
        for a, b in PROBE_CONTRASTS
    }  # fmt: skip
    return ProbeSummary(layers, auc, contrasts)


@dataclasses.dataclass(frozen=True)
class SimilarityCell:
    """One arm, block and measure over seeds: similarity to init [t interval], its shuffled-image null (mean of the
    runs' means, largest value), the unrelated-network null (mean), and kept = similarity - unrelated [t interval]."""

    to_init: stats.Interval
    shuffled_mean: float
    shuffled_max: float
    unrelated: float
    kept: stats.Interval
    kept_values: list[float]  # per seed


def kept_values(sim: Similarity, arm: str, layer: str, method: str, seeds: Sequence[int]) -> list[float]:
    """Per seed: similarity to init minus the mean of its unrelated-network nulls (over the other seeds)."""
    out = []
    for s in seeds:
        unrelated = [v[layer][method].score for (a, i, _), v in sim.unrelated.items() if (a, i) == (arm, s)]
        out.append(sim.to_init[arm, s][layer][method].score - float(np.mean(unrelated)))
    return out


def summarise_similarity(sim: Similarity, arms: Sequence[str], seeds: Sequence[int], method: str, confidence: float):
    """({arm: {layer: SimilarityCell}}, {'ssl - transfer' ...: {layer: interval of the paired kept difference}})."""
    cells = {}
    for arm in arms:
        cells[arm] = {}
        for x in sim.layers:
            scores = [sim.to_init[arm, s][x][method] for s in seeds]
            unrelated = [v[x][method].score for (a, _, _), v in sim.unrelated.items() if a == arm]
            kept = kept_values(sim, arm, x, method, seeds)
            cells[arm][x] = SimilarityCell(
                stats.t_interval([s.score for s in scores], confidence),
                float(np.mean([s.null_mean for s in scores])),
                float(max(s.null_max for s in scores)),
                float(np.mean(unrelated)),
                stats.t_interval(kept, confidence),
                kept,
            )
    contrasts = {
        f"{a} - {b}": {
            x: stats.t_interval(np.subtract(cells[a][x].kept_values, cells[b][x].kept_values), confidence)
            for x in sim.layers
        }
        for a, b in PROBE_CONTRASTS
    }
    return cells, contrasts
