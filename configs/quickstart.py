"""The quickstart: the paper's analyses end to end on generated data, offline, on a CPU (the README's first command).

Launch (arg 'default' or 'mini'; any field is overridable as --config.FIELD=VALUE):
  python -m transfusion_jax.experiments.quickstart --workdir quickstart_run           # ~6 min on 2 CPU cores
  python -m transfusion_jax.experiments.quickstart --workdir /tmp/q --mini            # ~1 min, the tests' size
  python -m transfusion_jax.experiments.quickstart --workdir /tmp/q --config.seeds='(0, 1)' \
      --config.inits='("random", "transfer", "gabor")'
It generates a 10-class "natural image" source set and a fundus target set in the Kaggle DR layout, pretrains a
CBR-Small at widths 8-16-32-32 on the source (Adam 1e-3, 300 steps; the stand-in for ImageNet), fine-tunes on the
target (moderate DR = grade >= 2, Adam 1e-3, batch 32, 100 steps) from 7 inits x 3 seeds, and writes DIR/report.md:
final test AUC, steps to test AUC > 0.91, CCA(Rand, ImNet) vs CCA(Rand, Rand), similarity to init, weight change,
conv1 filters. The generated Kaggle layout's Public images select the step, its Private images are only reported.
Expected (docs/RESULTS.md, 2-core CPU): random-init final test AUC 0.982 ± 0.006; transfer and transfusion pass 0.91
in 8-13 steps vs 25 from random; top-two-layer CCA(Rand, ImNet) 0.806 vs CCA(Rand, Rand) 0.805 (overlapping, as the
paper finds for small models).
"""

import ml_collections

INITS = (
    "random",
    "transfer",
    "mean_var",
    "transfusion:layer1",
    "transfusion:layer2",
    "transfusion:layer3",
    "gabor",
)


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "cbr_small"
    c.widths = (8, 16, 32, 32)
    c.image_size = 32
    c.native_size = 64  # generated image size (the pipeline resizes to image_size)
    c.source_train = 600
    c.source_test = 100
    c.source_classes = 10
    c.target_train = 800
    c.target_test = 200  # ~70 % form the reported 'test' (Private) split, the rest the selecting 'validation'
    c.batch_size = 32
    c.pretrain_steps = 300
    c.finetune_steps = 100
    c.eval_every = 5  # the resolution of steps-to-threshold
    c.threshold = 0.91  # the paper's convergence measure: steps until the test AUC is above 0.91
    c.seeds = (0, 1, 2)
    c.inits = INITS
    c.analysis_seeds = 3  # seeds used for the (slower) activation-similarity analyses
    c.max_runs_per_program = 0  # fine-tuning runs stacked into one program: 0 = all of them, 1 = one at a time
    if arg == "mini":  # what the tests run: about a minute
        c.widths = (4, 8, 8, 8)
        c.source_train, c.source_test = 64, 16
        c.target_train, c.target_test = 96, 48
        c.pretrain_steps, c.finetune_steps, c.eval_every = 10, 20, 10
        c.seeds, c.inits, c.analysis_seeds = (0,), ("random", "transfer"), 1
    elif arg != "default":
        raise ValueError(f"configs/quickstart.py takes 'default' or 'mini', got {arg!r}.")
    return c
