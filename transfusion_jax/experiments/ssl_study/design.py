"""The design of the in-domain SSL study (docs/ssl_study.md) as plain data, and what follows from it alone: the
arms' runs, their fine-tuning configs, the checks before anything runs.

The config holds the miniature study's own design under `study` (its data, models, recipes, seeds, similarity
settings and G4: `study.design.get_config`), and this study's choices beside it: the model and training set, the
arms, the SSL pretraining, the evaluation grid, the margins. Runs live in the study's layout
(DIR/runs/<model>/<data>/<arm>/seed_<k>: `study.design.RunKey`), the SSL pretraining under DIR/ssl/<model>.
"""

import math
import os
from collections.abc import Sequence

import ml_collections

from transfusion_jax.experiments.study import design as study_design
from transfusion_jax.experiments.study import recipes
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import RunKey, StudyConfigError
from transfusion_jax.ssl.steps import METHODS
from transfusion_jax.train import config_lib, rundir

VARIANTS = ("default", "mini")
ARMS = ("random", "transfer", "ssl")
# The study's fine-tuning init each arm uses: the ssl arm is a transfer from the self-supervised checkpoint.
ARM_INIT = {"random": "random", "transfer": "transfer", "ssl": "transfer"}


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"The SSL study's design takes one of {', '.join(VARIANTS)}; got {arg!r}.")
    c = ml_collections.ConfigDict()
    c.variant = arg
    c.study = study_design.get_config(arg)  # the miniature study's data, models, recipes, seeds and G4
    c.model = "small"  # the CPU budget holds one model (docs/ssl_study.md §2)
    c.data = "small"  # the study's small training set: 200 labelled images, a stratified subset per seed
    c.arms = ARMS
    # SSL pretraining: ssl.pretrain_folder's recipe on the target's unlabeled training images, every view grey.
    c.ssl = ml_collections.ConfigDict(
        dict(method="simclr", epochs=8.0, batch_size=128, seed=0, overrides=("ssl.views.grayscale_prob=1.0",))
    )
    # Validation steps: the study's log grid thinned, its last five kept (G4 reads them).
    c.eval_steps = (1, 4, 10, 22, 39, 60, 93, 144, 167, 193, 224, 259, 300)
    c.confidence = 0.95
    c.noninferiority_margin = 0.02  # S1: AUC(ssl) - AUC(transfer) > -this
    c.sesoi = 0.02  # S0, S2: smallest effect of interest of a directional AUC claim
    c.pretext_chance_multiple = 10.0  # gate P: final contrastive accuracy >= this x chance (1 / (2B - 1))
    c.source_chance_multiple = 10.0  # G1's accuracy part: source test accuracy >= this x chance
    c.probe_c = 1.0  # the linear probe's inverse L2 strength (analysis.probes)
    c.max_runs_per_program = 0  # execution, not design: 0 = every compatible run in one program
    return _mini(c) if arg == "mini" else c


def _mini(c):
    """The tests' size: the study's mini data and models, a few SSL steps, evaluation at every fine-tuning step."""
    c.ssl.update(epochs=1.0, batch_size=16)
    c.eval_steps = study_design.log_spaced_steps(c.study.finetune.steps, c.study.finetune.steps)
    c.max_runs_per_program = 2  # programs of one size: compiled once (the study's mini does the same)
    return c


def load_config(arg: str = "default", overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    return config_lib.apply_overrides(get_config(arg), overrides)


# ---------------------------------------------------------------- runs


def run_keys(c) -> list[RunKey]:
    """Every fine-tuning run, seed-major (the arms of one seed are neighbours: one paired stream)."""
    return [RunKey(c.model, c.data, arm, seed) for seed in c.study.seeds for arm in c.arms]


def ssl_dir(workdir: str, model: str) -> str:
    return os.path.join(workdir, "ssl", model)


def ssl_checkpoint(workdir: str, model: str) -> str:
    return os.path.join(ssl_dir(workdir, model), rundir.FINAL)


def checkpoint_of(workdir: str, c, arm: str) -> str:
    """The checkpoint an arm's runs name: the SSL one for ssl, the study's source checkpoint for the others
    (random reads only its input normalisation, as in the study)."""
    return ssl_checkpoint(workdir, c.model) if arm == "ssl" else workdir_lib.checkpoint_of(workdir, c.model)


def finetune_config(c, paths: dict[str, str], key: RunKey, workdir: str):
    """The study's fine-tuning recipe for one run (`study.recipes.finetune_config`), with this design's evaluation
    grid and the arm's checkpoint."""
    as_study = RunKey(key.model, key.data, ARM_INIT[key.init], key.seed)
    config = recipes.finetune_config(c.study, paths, as_study, workdir)
    config.eval_steps = tuple(int(s) for s in c.eval_steps)
    config.pretrained = checkpoint_of(workdir, c, key.init)
    return config


# ---------------------------------------------------------------- checks, before anything runs


def check_config(c) -> None:
    errors = []
    if c.model not in study_design.MODELS or c.data not in study_design.DATA_SIZES:
        errors.append(f"model {c.model!r} in {study_design.MODELS} and data {c.data!r} in {study_design.DATA_SIZES}")
    if tuple(c.arms) != ARMS:
        errors.append(f"arms must be {ARMS}: every claim compares two of them (got {tuple(c.arms)})")
    if c.ssl.method not in METHODS or c.ssl.epochs <= 0 or c.ssl.batch_size < 2:
        errors.append(f"ssl: method in {METHODS}, epochs > 0 and batch_size >= 2 (got {dict(c.ssl)})")
    steps = tuple(c.eval_steps)
    if not steps or list(steps) != sorted(set(steps)) or steps[0] < 1 or steps[-1] != c.study.finetune.steps:
        errors.append(f"eval_steps must increase from >= 1 to the last step {c.study.finetune.steps}: {steps}")
    elif len(steps) < c.study.gates.last_evals:
        errors.append(f"eval_steps needs >= {c.study.gates.last_evals} steps (G4 reads the last ones)")
    if len(c.study.seeds) < 2:
        errors.append("at least 2 seeds: a verdict needs an interval")
    if not 0 < c.confidence < 1 or c.noninferiority_margin <= 0 or c.sesoi < 0 or not math.isfinite(c.sesoi):
        errors.append("confidence in (0, 1), noninferiority_margin > 0, sesoi >= 0")
    if min(c.pretext_chance_multiple, c.source_chance_multiple, c.probe_c) <= 0 or c.max_runs_per_program < 0:
        errors.append("chance multiples and probe_c > 0, max_runs_per_program >= 0")
    if errors:
        raise StudyConfigError("The SSL study's config is not usable:\n  - " + "\n  - ".join(errors))
