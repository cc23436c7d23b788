"""The miniature study's design (docs/study.md): its one config schema, as plain data, and what follows from it
alone (the planned runs, each model's blocks, the checks a config passes before anything runs).

`get_config(arg)` for arg in 'default' | 'scale' | 'mini' is the design; configs/study.py, the quickstart, the
experiments CLI and benchmarks/study_pilot.py all read it from here (`load_config` applies `FIELD=VALUE` overrides
through ml_collections). 'default' is round 7's design (docs/study.md, "Round 7"): both model sizes, every claim, on a
2-core CPU in <= 10 minutes; 'scale' the same design larger, for one GPU; 'mini' the tests' size. The runs of a cell
train stacked as one program (`max_runs_per_program`: 0 = all compatible runs, 1 = one after another; an execution
choice, not the design's: results agree to float32 rounding).
"""

import dataclasses
import math
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from transfusion_jax import models, surgery
from transfusion_jax.analysis import probes, similarity
from transfusion_jax.experiments import runs
from transfusion_jax.train import config_lib

VARIANTS = ("default", "scale", "mini")
MODELS = ("small", "large")
DATA_SIZES = ("full", "small")
SOURCES = ("shipped", "build")


class StudyConfigError(ValueError):
    """The study's config cannot give a meaningful study, or DIR holds a study with other settings."""


def log_spaced_steps(last: int, points: int, first: int = 1) -> tuple[int, ...]:
    """unique(round(geomspace(first, last, points))): ~equally spaced on a log scale (every step where that rounds)."""
    return tuple(int(s) for s in np.unique(np.round(np.geomspace(first, last, points))))


def _cells(large_full: tuple, small_full: tuple, small_data: tuple) -> tuple:
    """(model, training set, inits) of every cell (docs/study.md, round 7 §4)."""
    return (
        ("large", "full", large_full),
        ("large", "small", small_data),
        ("small", "full", small_full),
        ("small", "small", small_data),
    )


def _evaluations(steps: int, first: int, points: int, last_evals: int) -> ml_collections.ConfigDict:
    """Validation steps per training set: the full data's log grid from where crossings can happen (steps to
    threshold), the small data's last `last_evals` points of it (its claims read the final AUC; G4 reads those)."""
    grid = log_spaced_steps(steps, points, first)
    return ml_collections.ConfigDict({"full": grid, "small": grid[-last_evals:]})


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"The study's design takes one of {', '.join(VARIANTS)}; got {arg!r}.")
    c = ml_collections.ConfigDict()
    c.variant = arg
    c.round = 7
    c.image_size = 32
    # One family, the paper's CBR layout (cbr_small: 7x7 conv - BN - ReLU, 3x3/2 max-pool after each layer).
    c.family = "cbr_small"
    c.widths = ml_collections.ConfigDict({"small": (8, 16, 32, 32), "large": (10, 20, 40, 80)})
    c.slim_widths = (10, 20, 20, 40)  # Slim of the large model: layers 1-2 as large (from its checkpoint), 3-4 halved
    c.models_run = ("small", "large")  # every claim needs both (a user may cut one; its rows then say so)
    # Source task: one IFS fractal per class (the "ImageNet" stand-in), pretrained on once per model. 'shipped': the
    # checkpoints in the package (made by this design's pretraining, checksummed; `--rebuild_sources` makes them
    # again); 'build': pretrain here.
    c.source = ml_collections.ConfigDict(dict(classes=64, train_per_class=40, test_per_class=8, seed=0))
    c.sources = "shipped"
    # Target task: polarity lesions in the Kaggle DR layout; `test` images of which `validation` are Public.
    c.target = ml_collections.ConfigDict(dict(train=2000, small_train=200, validation=300, test=2200, seed=1))
    # Random streams of the generated sets: 0 = one per split, drawn in order; B = each B consecutive images their own
    # (data/generate.py), so a large set is written by many processes. The files do not depend on data_workers.
    c.data_block = 0
    c.data_workers = 0  # processes writing the data: 0 = one per core, 1 = this process (execution, not design)
    c.batch_size = 32
    c.pretrain = ml_collections.ConfigDict(dict(steps=800, learning_rate=1e-3, eval_every=200))
    c.finetune = ml_collections.ConfigDict(dict(steps=300, learning_rate=1e-3))
    c.eval_steps = _evaluations(300, first=8, points=28, last_evals=3)
    c.seeds = (0, 1, 2, 3, 4)
    c.max_runs_per_program = 8  # how the runs are executed, not the design (results agree to float32 rounding): at
    # most 8 runs per program keeps peak memory under 2 GB (35 stacked large runs took 2.6 GiB)
    # Programs trained at once, one thread each (execution, not design: every number is the same to the bit): one
    # XLA:CPU program of these small convolutions leaves the second core mostly idle (docs/study.md, "Changes after
    # the design was fixed").
    c.programs_at_once = 2
    c.cells = _cells(
        ("random", "transfer", "mean_var", "random_scaled", "transfusion:layer1", "transfusion:layer2", "gabor",
         "slim"),
        ("random", "transfer", "mean_var", "random_scaled"),
        ("random", "transfer"),
    )  # fmt: skip
    # Measures (docs/study.md §5) and verdicts (§6): equivalence margins, directional claims' smallest effects of
    # interest, C6's non-inferiority share.
    c.threshold = 0.90
    c.relative_threshold = 0.95
    c.confidence = 0.95
    c.margins = ml_collections.ConfigDict(dict(auc=0.02, log_steps=math.log(1.25), similarity=0.02))
    c.sesoi = ml_collections.ConfigDict(dict(auc=0.01, log_steps=math.log(1.25), similarity=0.02))
    c.share = 0.5  # C6: transfusing the lower half gives at least this share of transfer's speed-up ("most")
    c.similarity = ml_collections.ConfigDict(
        dict(methods=("svcca", "cka"), verdict_method="svcca", svcca_keep=0.99, positions=16, null_permutations=5)
    )
    # Gates G1-G4 (docs/study.md §7).
    c.gates = ml_collections.ConfigDict(
        dict(
            random_inits=5,  # G1: random inits the pretrained kernels are compared with; G2: random nets probed
            kernel_sd=5.0,  # G1: pretrained kernel std ratio outside mean +- this many sd of the random inits
            chance_multiple=10.0,  # G1: source test accuracy >= this x chance
            probe_folds=5,  # G2: cross-validation folds within the train split
            probe_pooling="mean+max",  # G2: each channel's spatial mean and maximum (a mean alone misses polarity)
            probe_below_threshold=0.1,  # G2: upper 95 % bound of the random-feature probe AUC <= threshold - this
            crossing_share=0.8,  # G3: at least this share of the random runs on the full data crosses the threshold
            final_above_threshold=0.02,  # G3: lower 95 % bound of their mean final validation AUC >= threshold + this
            last_evals=3,  # G4: each run's last evaluations, whose sd ...
            plateau_sd=0.005,  # G4: ... has a median over the group's runs <= this (a quarter of the AUC margin)
        )
    )
    return _VARIANTS.get(arg, lambda c: c)(c)


def _scale(c):
    """docs/study.md §9 "--scale": one GPU (an estimate: no GPU measured it yet)."""
    c.image_size = 64
    c.widths = ml_collections.ConfigDict({"small": (16, 32, 64, 64), "large": (24, 48, 96, 192)})
    c.slim_widths = (24, 48, 48, 96)
    c.sources = "build"
    c.source.update(classes=128, train_per_class=100, test_per_class=20)
    c.target.update(train=20_000, small_train=1_000, validation=500, test=5_000)
    c.data_block = 500  # ~80 jobs of 500 images: ~40,000 images written by every core of the GPU's host
    c.pretrain.update(steps=3_000, eval_every=750)
    c.finetune.steps = 1_500
    c.eval_steps = _evaluations(1_500, first=8, points=40, last_evals=3)  # ~14 % apart, as at 300 steps
    c.seeds = tuple(range(10))
    c.programs_at_once = 1  # one GPU: a program of 10 stacked runs fills it
    return c


def _mini(c):
    """What the tests run: the default's pipeline on tiny models and data, a few steps."""
    c.widths = ml_collections.ConfigDict({"small": (4, 8, 8, 8), "large": (4, 8, 8, 16)})
    c.slim_widths = (4, 8, 4, 8)
    c.sources = "build"
    c.source.update(classes=4, train_per_class=8, test_per_class=4)
    c.target.update(train=64, small_train=32, validation=32, test=64)
    c.batch_size = 16
    c.pretrain.update(steps=4, eval_every=4)
    c.finetune.steps = 6
    c.eval_steps = _evaluations(6, first=1, points=6, last_evals=2)
    c.seeds = (0, 1)  # two: every verdict is computed (R, needing 3 seeds for its jackknife, says so)
    c.similarity.update(positions=4, null_permutations=2)
    c.gates.update(random_inits=2, probe_folds=2, last_evals=2)
    # Still stacked, in programs of 2 runs: the cells' runs would be programs of different sizes, compiled
    # separately (~10 s each on 2 cores, the test's largest cost); programs of 2 all share one.
    c.max_runs_per_program = 2
    c.data_workers = 1  # a few hundred images: starting worker processes would cost more than drawing them
    return c


_VARIANTS = {"scale": _scale, "mini": _mini}  # 'default' is get_config's own


def load_config(arg: str = "default", overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The design `arg` with `FIELD=VALUE` overrides applied (ml_collections' parsing, `config_lib.apply_overrides`)."""
    return config_lib.apply_overrides(get_config(arg), overrides)


# ---------------------------------------------------------------- what the design plans


@dataclasses.dataclass(frozen=True)
class RunKey:
    """One fine-tuning run of the design; its directory is DIR/runs/<model>/<data>/<init>/seed_<k>."""

    model: str  # 'small' | 'large'
    data: str  # 'full' | 'small' (the per-seed subset)
    init: str
    seed: int

    def workdir(self, root: str) -> str:
        return os.path.join(root, "runs", self.model, self.data, runs.init_dirname(self.init), f"seed_{self.seed}")

    def label(self) -> str:
        return f"{self.model} model, {self.data} data, {self.init}, seed {self.seed}"


def blocks(c, model: str) -> tuple[str, ...]:
    return models.block_names(c.family, widths=tuple(c.widths[model]))


def widths_of(c, key: RunKey) -> tuple[int, ...]:
    return tuple(c.slim_widths) if key.init == "slim" else tuple(c.widths[key.model])


def plan(c) -> list[RunKey]:
    """Every fine-tuning run of the models run, cell by cell, seed by seed."""
    return [
        RunKey(model, data, init, seed)
        for model, data, inits in c.cells
        if model in c.models_run
        for init in inits
        for seed in c.seeds
    ]


def has_cell(c, model: str, data: str, init: str) -> bool:
    """Whether the design (run or not) has runs of `init` on `data` for `model`."""
    return any(m == model and d == data and init in inits for m, d, inits in c.cells)


# ---------------------------------------------------------------- checks, before anything runs


def check_config(c) -> None:
    """Everything the study will use, checked before the first image is generated."""
    errors = _cell_errors(c) + _number_errors(c)
    if errors:
        raise StudyConfigError("The study's config is not usable:\n  - " + "\n  - ".join(errors))


def _cell_errors(c) -> list[str]:
    errors = []
    if not set(c.models_run) <= set(MODELS) or not c.models_run:
        errors.append(f"models_run {tuple(c.models_run)} must be a non-empty subset of {MODELS}")
    for model, data, inits in c.cells:
        if model not in MODELS or data not in DATA_SIZES:
            errors.append(f"cell ({model!r}, {data!r}) needs a model in {MODELS} and a training set in {DATA_SIZES}")
            continue
        for init in inits:
            if init == "slim":
                if model != "large":
                    errors.append("init 'slim' is the Slim of the large model: only in a 'large' cell")
                continue
            try:
                surgery.parse_init(init, blocks(c, model))
            except ValueError as e:
                errors.append(str(e))
    for model in c.models_run:
        if model in MODELS and not models.fits_input(c.family, c.image_size, widths=tuple(c.widths[model])):
            errors.append(f"image_size={c.image_size} is too small for the {model} model")
    return errors


def _number_errors(c) -> list[str]:
    errors = []
    if len(c.seeds) < 2 or len(set(c.seeds)) != len(c.seeds):
        errors.append(f"seeds {tuple(c.seeds)}: at least 2 distinct seeds (a verdict needs an interval)")
    if not 0 < c.target.small_train < c.target.train:
        errors.append(f"target.small_train={c.target.small_train} must lie in 1..target.train-1")
    for data in DATA_SIZES:
        steps = tuple(c.eval_steps.get(data, ()))
        bad_steps = [s for s in steps if not 1 <= s <= c.finetune.steps]
        if bad_steps or len(steps) < c.gates.last_evals:
            errors.append(
                f"eval_steps.{data} needs >= gates.last_evals ({c.gates.last_evals}) steps within 1..finetune.steps "
                f"({c.finetune.steps}): {steps}"
            )
    if c.sources not in SOURCES:
        errors.append(f"sources={c.sources!r}: one of {', '.join(SOURCES)}")
    if not 0 < c.share < 1 or min(c.sesoi.values()) < 0:
        errors.append(f"share={c.share} must lie in (0, 1) and every smallest effect of interest be >= 0")
    if not 0.5 < c.threshold < 1 or not 0 < c.relative_threshold < 1:
        errors.append(f"threshold {c.threshold} and relative_threshold {c.relative_threshold} must lie in (0.5, 1)")
    if min(c.margins.values()) <= 0:
        errors.append(f"margins must be > 0: {dict(c.margins)}")
    methods = tuple(c.similarity.methods)
    if not set(methods) <= set(similarity.METHODS) or c.similarity.verdict_method not in methods:
        errors.append(f"similarity.methods {methods} (verdict_method {c.similarity.verdict_method!r} among them)")
    if c.source.classes < 2 or c.source.test_per_class < 1 or c.target.validation < 2 or c.target.test < 2:
        errors.append("source needs >= 2 classes and test images; target needs validation and test images")
    if c.gates.probe_pooling not in probes.POOLINGS:
        errors.append(f"gates.probe_pooling={c.gates.probe_pooling!r}: one of {', '.join(probes.POOLINGS)}")
    if c.gates.random_inits < 2 or c.gates.probe_folds < 2 or c.gates.last_evals < 2:
        errors.append("gates need >= 2 random inits, >= 2 probe folds and >= 2 last evaluations")
    if not 0 < c.gates.crossing_share <= 1 or c.gates.plateau_sd <= 0:
        errors.append(f"gates.crossing_share in (0, 1] and gates.plateau_sd > 0: {dict(c.gates)}")
    if c.data_block < 0 or c.data_workers < 0:
        errors.append(f"data_block={c.data_block} and data_workers={c.data_workers} must be >= 0")
    if c.max_runs_per_program < 0:
        errors.append(f"max_runs_per_program={c.max_runs_per_program}: 0 (no limit) or more")
    if c.programs_at_once < 1:
        errors.append(f"programs_at_once={c.programs_at_once}: 1 or more")
    return errors
