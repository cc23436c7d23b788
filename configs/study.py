"""The miniature study (docs/study.md): every claim of the paper made testable on generated data, the design's
numbers as plain data. The quickstart (experiments/quickstart.py) runs it.

Launch (arg 'default' | 'full' | 'scale' | 'mini'; any field is overridable as --config.FIELD=VALUE):
  python -m transfusion_jax.experiments.quickstart --workdir DIR            # default: the CPU cut, <= 10 min on 2 cores
  python -m transfusion_jax.experiments.quickstart --workdir DIR --full     # the whole design on a CPU (~22 min)
  python -m transfusion_jax.experiments.quickstart --workdir DIR --scale    # larger, one GPU (~15 min, estimated)
  python -m transfusion_jax.experiments.quickstart --workdir DIR --mini     # the tests' size (the cut), ~1 min
Expected: DIR/report.md with the gates G1-G4 first, then per claim C1-C8 and R the effect with its 95 % interval and
"supported" / "contradicted" / "inconclusive" (or "not run on the CPU: --scale" for what the cut leaves out). What it
gave on our machine is in docs/RESULTS.md and docs/study_report/report.md.

'default' is the design with the cut docs/study.md §9 fixed before any claim was tested: unless multi-run programs
train the runs about 5x faster than one after another, the CPU runs the small model's 25 runs only. They arrived at
1.0-1.3x on the 2-core CPU (BENCHMARKS.md), so the cut stands. `models_run` is that switch; 'full' sets it to both
models. The runs of a cell train stacked as one program (`max_runs_per_program`: 0 = all compatible runs, 1 = one
after another).
"""

import math

import ml_collections
import numpy as np

ARGS = ("default", "full", "scale", "mini")


def log_spaced_steps(last: int, points: int) -> tuple[int, ...]:
    """unique(round(geomspace(1, last, points))): every step at first, then ~equally spaced on a log scale."""
    return tuple(int(s) for s in np.unique(np.round(np.geomspace(1, last, points))))


def _cells(large_inits_full: tuple, runs_small_data: tuple, small_inits_full: tuple) -> tuple:
    """(model, training set, inits) of every cell (docs/study.md §4)."""
    return (
        ("large", "full", large_inits_full),
        ("large", "small", runs_small_data),
        ("small", "full", small_inits_full),
        ("small", "small", runs_small_data),
    )


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    if arg not in ARGS:
        raise ValueError(f"configs/study.py takes one of {', '.join(ARGS)}; got {arg!r}.")
    c = ml_collections.ConfigDict()
    c.variant = arg
    c.image_size = 32
    # One family, the paper's CBR layout (cbr_small: 7x7 conv - BN - ReLU, 3x3/2 max-pool after each layer).
    c.family = "cbr_small"
    c.widths = ml_collections.ConfigDict({"small": (8, 16, 32, 32), "large": (16, 32, 64, 128)})
    c.slim_widths = (16, 32, 32, 64)  # Slim of the large model: layers 1-2 as large (from its checkpoint), 3-4 halved
    # The CPU cut (docs/study.md §9): the small model only while runs train one after another.
    c.models_run = ("small",)
    # Source task: one IFS fractal per class (the "ImageNet" stand-in).
    c.source = ml_collections.ConfigDict(dict(classes=64, train_per_class=40, test_per_class=8, seed=0))
    # Target task: polarity lesions in the Kaggle DR layout; `test` images of which `validation` are Public.
    c.target = ml_collections.ConfigDict(dict(train=2000, small_train=200, validation=300, test=2200, seed=1))
    # Random streams of the generated sets: 0 = one per split, drawn in order; B = each B consecutive images their own
    # (data/generate.py), so a large set is written by many processes. The files do not depend on data_workers.
    c.data_block = 0
    c.data_workers = 0  # processes writing the data: 0 = one per core, 1 = this process (execution, not design)
    c.batch_size = 32
    c.pretrain = ml_collections.ConfigDict(dict(steps=800, learning_rate=1e-3, eval_every=200))
    c.finetune = ml_collections.ConfigDict(dict(steps=300, learning_rate=1e-3))
    c.eval_steps = log_spaced_steps(300, 40)
    c.seeds = (0, 1, 2, 3, 4)
    c.max_runs_per_program = 0  # how the runs are executed, not the design: results agree to float32 rounding
    large_full = (
        "random",
        "transfer",
        "mean_var",
        "transfusion:layer1",
        "transfusion:layer2",
        "transfusion:layer3",
        "gabor",
        "slim",
    )
    c.cells = _cells(large_full, ("random", "transfer"), ("random", "transfer", "mean_var"))
    # Measures (docs/study.md §5) and verdicts (§6).
    c.threshold = 0.90
    c.relative_threshold = 0.95
    c.confidence = 0.95
    c.margins = ml_collections.ConfigDict(dict(auc=0.02, log_steps=math.log(1.25), similarity=0.02))
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
            probe_below_threshold=0.1,  # G2: upper 95 % bound of the random-feature probe AUC <= threshold - this
            final_above_threshold=0.03,  # G3: final validation AUC of every random run >= threshold + this
            last_evals=5,  # G4: the evaluations whose sd (median over runs) must be below the seeds' sd
        )
    )
    c.filters_seed = 0  # the seed whose conv1 filters are drawn
    if arg == "full":
        c.models_run = ("small", "large")
    elif arg == "scale":  # docs/study.md §9 "--scale": one GPU, ~15 min (an estimate: no GPU measured it yet)
        c.models_run = ("small", "large")
        c.image_size = 64
        c.widths = ml_collections.ConfigDict({"small": (16, 32, 64, 64), "large": (32, 64, 128, 256)})
        c.slim_widths = (32, 64, 64, 128)
        c.source.update(classes=128, train_per_class=100, test_per_class=20)
        c.target.update(train=20_000, small_train=1_000, validation=500, test=5_000)
        c.data_block = 500  # ~80 jobs of 500 images: ~40,000 images written by every core of the GPU's host
        c.pretrain.update(steps=3_000, eval_every=750)
        c.finetune.steps = 1_500
        c.eval_steps = log_spaced_steps(1_500, 55)  # 47 steps: every step to 11, then ~15 % apart as at 300 steps
        c.seeds = tuple(range(10))
    elif arg == "mini":  # what the tests run: the default's pipeline (the cut) on tiny models and data, a few steps
        c.widths = ml_collections.ConfigDict({"small": (4, 8, 8, 8), "large": (4, 8, 8, 16)})
        c.slim_widths = (4, 8, 4, 8)
        c.source.update(classes=4, train_per_class=8, test_per_class=4)
        c.target.update(train=64, small_train=32, validation=32, test=64)
        c.batch_size = 16
        c.pretrain.update(steps=4, eval_every=4)
        c.finetune.steps = 6
        c.eval_steps = log_spaced_steps(6, 6)
        c.seeds = (0, 1)
        c.similarity.update(positions=4, null_permutations=2)
        c.gates.update(random_inits=2, probe_folds=2, last_evals=2)
        # Still stacked, in programs of 2 runs: the cells' 6 and 4 runs would be two programs of different sizes,
        # compiled separately (~10 s each on 2 cores, the test's largest cost); programs of 2 all share one.
        c.max_runs_per_program = 2
        c.data_workers = 1  # 208 images: starting worker processes would cost more than drawing them
    return c
