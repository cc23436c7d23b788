"""Representational similarity of the study's runs (docs/study.md §5): each run's similarity to its own init, the
same against networks that never started there (the unrelated-network null a similarity to init is read against),
and the Rand-Rand / Rand-ImNet pairs of different seeds, per layer and measure, each number beside its
shuffled-image null (`analysis.nulls.with_null`) at the size it was computed at. Cached as
DIR/analysis/similarity_<model>.json (plain JSON); in memory a `ModelSimilarity` record.

The unrelated-network null of sim_init(l) for a run of seed i: the similarity of its layer l at step 0 to layer l
after training of the random-init runs of every other seed j (they share no init with it). A similarity to init
above it is what starting there kept; read raw, even a network that forgot its init entirely scores well on low
layers (low-level features of unrelated networks resemble each other). A transfer run's step-0 body is the
pretrained checkpoint, the same for every seed, so its null is sim(checkpoint, random run j) over j != i.
"""

import dataclasses
import time

from transfusion_jax.analysis import activations, nulls
from transfusion_jax.experiments import run_weights
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import RunKey, blocks
from transfusion_jax.experiments.study.measures import chunks, split_arrays


@dataclasses.dataclass(frozen=True)
class Score:
    """One measure between two layers' activations, beside its null (the same with one side's images shuffled)."""

    score: float
    null: list[float]
    null_mean: float
    null_min: float
    null_max: float
    n: int  # datapoints (images x positions)
    dx: int
    dy: int
    n_per_dim: float
    dims_x: int | None = None  # the directions SVCCA kept
    dims_y: int | None = None


Layers = dict[str, dict[str, Score]]  # layer -> measure -> Score


@dataclasses.dataclass(frozen=True)
class ModelSimilarity:
    layers: list[str]
    reduction: dict  # how activations became datapoints (activations.Reduction.describe)
    num_images: int
    to_init: dict[tuple[str, int], Layers]  # (init, seed) -> step 0 vs the final step of that run
    # ('random', i, j) -> step 0 of random run i vs random run j; ('transfer', j) -> the checkpoint vs random run j
    unrelated: dict[tuple, Layers]
    pairs: dict[tuple[str, int, int], Layers]  # (kind, seed i, seed j) -> random seed i vs seed j of the kind

    @classmethod
    def from_json(cls, d: dict) -> "ModelSimilarity":
        def layers(entry: dict) -> Layers:
            return {layer: {m: Score(**s) for m, s in entry[layer].items()} for layer in d["layers"]}

        def key(text: str) -> tuple:
            kind, *seeds = text.split("/")
            return (kind, *map(int, seeds))

        return cls(
            layers=list(d["layers"]),
            reduction=d["reduction"],
            num_images=d["num_images"],
            to_init={key(k): layers(v) for k, v in d["to_init"].items()},
            unrelated={key(k): layers(v) for k, v in d["unrelated"].items()},
            pairs={key(k): layers(v) for k, v in d["pairs"].items()},
        )


def similarity_methods(c) -> dict[str, dict]:
    options = {"svcca": {"keep": float(c.similarity.svcca_keep)}}
    return {m: options.get(m, {}) for m in c.similarity.methods}


def _seed_pairs(seeds) -> list[tuple[str, str, int, int]]:
    """(kind, the partner's init, seed i, seed j): the all-pairs design `stats.seed_pair_interval` is proven for."""
    pairs = [("rand_rand", "random", i, j) for i in seeds for j in seeds if i < j]
    return pairs + [("rand_imnet", "transfer", i, j) for i in seeds for j in seeds if i != j]


def model_similarity(workdir: str, c, model: str) -> dict:
    """The JSON the cache holds: similarity to init of every random and transfer run on the full training set (per
    layer: step 0 against the final step of the same run, keyed 'init/seed'), its unrelated-network null (step 0 of
    run i against the final random run of seed j != i, keyed 'init/i/j'), and the pairs of different seeds (keyed
    'kind/i/j'); on every test image, spatial positions as datapoints (at most `similarity.positions` per image).
    Shuffled-image nulls: `similarity.null_permutations` for similarity to init, one per comparison for the pairs and
    the unrelated networks (a null band from 30 and 40 of them, not one number each)."""
    layers = list(blocks(c, model))
    reduction = activations.Reduction(mode="positions", positions=int(c.similarity.positions), seed=0)
    methods, perms, seeds = similarity_methods(c), int(c.similarity.null_permutations), list(c.seeds)
    start, final = {}, {}
    out = {"layers": layers, "reduction": reduction.describe(), "to_init": {}, "unrelated": {}, "pairs": {}}
    for init in ("random", "transfer"):
        for seed in seeds:
            run = run_weights.RunWeights(RunKey(model, "full", init, seed).workdir(workdir))
            images = split_arrays(run.config, "test").images
            batches = chunks(images)
            start[init, seed] = activations.collect_rows((run.apply, run.initial()), batches, layers, reduction)
            final[init, seed] = activations.collect_rows((run.apply, run.final()), batches, layers, reduction)
            out["num_images"] = len(images)

    def compare(a, b, permutations: int) -> dict:
        return {
            layer: nulls.with_null(a[layer], b[layer], out["num_images"], methods, permutations) for layer in layers
        }

    for init in ("random", "transfer"):
        for seed in seeds:
            out["to_init"][f"{init}/{seed}"] = compare(start[init, seed], final[init, seed], perms)
    for seed in seeds:
        for other in seeds:
            if other != seed:
                out["unrelated"][f"random/{seed}/{other}"] = compare(start["random", seed], final["random", other], 1)
        # Every transfer run starts from the checkpoint's body (the head is no layer here): one comparison per seed.
        out["unrelated"][f"transfer/{seed}"] = compare(start["transfer", seeds[0]], final["random", seed], 1)
    for kind, other, seed, partner in _seed_pairs(seeds):
        out["pairs"][f"{kind}/{seed}/{partner}"] = {
            "runs": [f"random/{seed}", f"{other}/{partner}"],
            **compare(final["random", seed], final[other, partner], 1),
        }
    return out


def measure_similarity(workdir: str, c, log=print) -> dict[str, ModelSimilarity]:
    out = {}
    for model in c.models_run:
        if not any(m == model and d == "full" and {"random", "transfer"} <= set(i) for m, d, i in c.cells):
            continue
        start = time.perf_counter()
        path = workdir_lib.analysis_path(workdir, "similarity", model)
        found = workdir_lib.cached_json(path, lambda: model_similarity(workdir, c, model))
        out[model] = ModelSimilarity.from_json(found)
        log(f"similarity of the {model} model (to init, Rand-Rand, Rand-ImNet, with nulls): "
            f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return out
