"""The SSL study's data and training (docs/ssl_study.md §1-4): the study's generated data, its source pretraining,
the self-supervised pretraining on the target's unlabeled training images, and every fine-tuning run, stacked by
`study.execute.train` (`runs.train_many`). Finished work is read back, not redone."""

import json
import os
import time

import ml_collections

from transfusion_jax import data as data_lib
from transfusion_jax import ssl
from transfusion_jax.experiments.ssl_study import design
from transfusion_jax.experiments.study import execute as study_execute
from transfusion_jax.experiments.study import sources
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import StudyConfigError
from transfusion_jax.train import preflight, rundir

DESIGN_RECORD = "ssl_study_config.json"
# Fields that may change between invocations on one DIR: how runs are executed, not what they are.
MAY_CHANGE = (
    "max_runs_per_program",
    "study.max_runs_per_program",
    "study.programs_at_once",
    "study.data_workers",
)


def _design(c) -> dict:
    flat = json.loads(c.to_json())
    for field in MAY_CHANGE:
        *parents, leaf = field.split(".")
        node = flat
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    return flat


def check_workdir(workdir: str, c: ml_collections.ConfigDict) -> None:
    """DIR/ssl_study_config.json records the design DIR was started with; another design in the same DIR would mix
    runs of two designs, so it is refused naming the fields that differ. A quickstart's DIR is refused too: its
    runs share this study's paths but not its evaluation grid."""
    if os.path.exists(os.path.join(workdir, workdir_lib.DESIGN_RECORD)):
        raise StudyConfigError(f"{workdir} holds the miniature study's runs (quickstart); use a DIR of its own.")
    workdir_lib.check_design_record(workdir, DESIGN_RECORD, _design(c), "an SSL study")


def make_data(workdir: str, c, log=print) -> dict[str, str]:
    """The study's source and target sets under DIR/data (`study.execute.make_data`)."""
    return study_execute.make_data(workdir, c.study, log)


def source_design(c) -> ml_collections.ConfigDict:
    """The study's design for this study's one model: whose source checkpoint the transfer arm starts from."""
    study = c.study.copy_and_resolve_references()
    with study.unlocked():
        study.models_run = (c.model,)
    return study


def pretrain_source(workdir: str, c, paths: dict[str, str], log=print) -> dict:
    """The model's source ("ImageNet") checkpoint as the study's design says (`study.sources`): the one shipped in the
    package, checked and installed (the default: the same arrays this study pretrained before it was shipped), or
    pretrained here with the study's recipe (`sources='build'`, as in the mini design)."""
    return sources.installed_or_pretrained(workdir, source_design(c), paths, log)[c.model]


def unlabeled_folder(paths: dict[str, str]) -> str:
    """The target's training images (the Kaggle DR layout's train/ folder); their labels file is beside it, unread."""
    return os.path.join(paths["target"], "train")


def pretrain_ssl(workdir: str, c, paths: dict[str, str], log=print) -> dict:
    """The SSL checkpoint: `ssl.pretrain_folder` on the unlabeled target training images (its summary.json is read
    back when the checkpoint exists)."""
    out, run_dir = design.ssl_checkpoint(workdir, c.model), os.path.join(design.ssl_dir(workdir, c.model), "run")
    summary_path = os.path.join(run_dir, rundir.SUMMARY)
    if os.path.exists(out) and os.path.exists(summary_path):
        with open(summary_path) as f:
            return {**json.load(f), "skipped": True}
    start = time.perf_counter()
    summary = ssl.pretrain_folder(
        unlabeled_folder(paths),
        out,
        workdir=run_dir,
        model=c.study.family,
        model_overrides={"widths": tuple(c.study.widths[c.model])},
        image_size=c.study.image_size,
        resize_mode="center_crop",  # the fundus disc on its frame, as retina_folder reads it
        method=c.ssl.method,
        epochs=c.ssl.epochs,
        batch_size=c.ssl.batch_size,
        seed=c.ssl.seed,
        overrides=tuple(c.ssl.overrides),
    )
    final = summary.get("final") or {}
    accuracy = final.get("contrastive_accuracy")
    shown = f", contrastive accuracy {accuracy:.3f}" if isinstance(accuracy, float) else ""
    log(f"{c.ssl.method} on {summary['train_examples']} unlabeled target images: {summary['num_train_steps']} steps, "
        f"loss {final.get('loss', float('nan')):.3f}{shown}, {time.perf_counter() - start:.0f} s")  # fmt: skip
    return {**summary, "skipped": False}


def check_splits(workdir: str, c, paths: dict[str, str]) -> None:
    """Every training run's preflight (`preflight.check_run`) for one run's splits with the test split added: the
    runs evaluate validation only and the test images are scored after training, so a damaged test split would
    otherwise surface only after every run had trained (as `study.execute.check_target_splits`)."""
    key = design.run_keys(c)[0]
    config = design.finetune_config(c, paths, key, workdir)
    config.test_split = "test"
    eval_sets = {role: data_lib.build_dataset(config, config[f"{role}_split"], train=False) for role in ("val", "test")}
    preflight.check_run(config, data_lib.build_dataset(config, config.train_split, train=True), eval_sets)


def finetune_all(workdir: str, c, paths: dict[str, str], log=print) -> dict:
    """{RunKey: summary} of every fine-tuning run of the design."""
    check_splits(workdir, c, paths)
    keys = design.run_keys(c)
    jobs = [(f"fine-tune {k.label()}", design.finetune_config(c, paths, k, workdir), k.workdir(workdir)) for k in keys]
    return dict(zip(keys, study_execute.train(jobs, c.max_runs_per_program, log)))
