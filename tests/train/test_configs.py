"""Every paper experiment config loads, names a valid init for its model, and builds in local mode."""

import functools
import importlib.util
import os
import tempfile

import jax
import jax.numpy as jnp
import pytest

from transfusion_jax import data as data_lib
from transfusion_jax import models, pretrained, surgery
from transfusion_jax.train import partition, preflight, steps, trainer
from transfusion_jax.train import state as state_lib

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
PAPER_MODELS = ("resnet50", "inception_v3", "cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(CONFIG_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _second_block(model):
    return models.block_names(model)[1]


ARGS = (
    [("retina", f"{m},{i}") for m in PAPER_MODELS for i in ("random", "transfer", "mean_var")]
    + [("chexpert", f"{m},{i}") for m in PAPER_MODELS for i in ("random", "transfer", "mean_var")]
    + [("retina_small", f"{m},{i}") for m in PAPER_MODELS for i in ("random", "transfer", "mean_var")]
    + [("hybrid", f"{m},{i}") for m in PAPER_MODELS for i in ("mean_var", "gabor", "random", "transfer")]
    + [("hybrid", f"{m},transfusion:{_second_block(m)}") for m in PAPER_MODELS]
    + [("hybrid", "resnet50,slim")]
    + [("imagenet", m) for m in ("cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny", "cbr_tiny_alt")]
)


def test_every_config_file_is_covered():
    files = {f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py")}
    assert files == {name for name, _ in ARGS} | {"study", "ssl"}  # ssl: tests/ssl/test_config.py


def test_study_config_is_plain_data_with_valid_inits():
    module = _load("study")
    assert "python -m transfusion_jax.experiments.quickstart --workdir" in module.__doc__  # its launch line
    configs = {arg: module.get_config(arg) for arg in module.ARGS}
    assert all(set(c) == set(configs["default"]) for c in configs.values())
    assert set(configs) == {"default", "scale", "mini"} and configs["default"].models_run == ("small", "large")
    for c in configs.values():
        for model, _, inits in c.cells:
            blocks = models.block_names(c.family, widths=tuple(c.widths[model]))
            for init in inits:
                surgery.parse_init(init, blocks)
        # Slim: the large model's layers 1-2, the layers above at half width.
        assert tuple(c.slim_widths) == tuple(c.widths.large[:2]) + tuple(w // 2 for w in c.widths.large[2:])
    with pytest.raises(ValueError, match="default, scale, mini"):
        module.get_config("big")


@pytest.mark.parametrize("name,arg", ARGS)
def test_config_loads_with_paper_recipe_and_valid_init(name, arg):
    module = _load(name)
    assert f"--config=configs/{name}.py:" in module.__doc__  # the docstring gives the launch command
    c = module.get_config(arg)
    surgery.parse_init(c.init, models.block_names(c.model.name))
    assert not c.runlocal and c.data.name in data_lib.DATASET_NAMES
    if name != "imagenet":
        assert (c.batch_size, c.optimizer.learning_rate) == (32, 1e-3)  # docs/paper.md §3
        assert c.optimizer.name == ("sgd" if name == "chexpert" else "adam")
    local = module.get_config(arg + ",local")
    assert local.runlocal and local.num_train_steps <= 50 and local.data.name in data_lib.DATASET_NAMES
    assert local.model.name == c.model.name and local.init == c.init and local.optimizer.name == c.optimizer.name
    for config in (c, local):  # selection never on the test split: train, validation, test all differ
        preflight.check_splits(config)
        preflight.check_unused_fields(config)  # every field a config sets is one its run reads
        assert config.val_split and "eval_split" not in config
    if name == "chexpert":  # the official valid set is the test set; validation is a patient slice of train
        assert (c.train_split, c.val_split, c.test_split) == ("train[:95%]", "train[95%:]", "valid")
    elif name != "imagenet":
        assert (c.val_split, c.test_split) == ("validation", "test")  # Kaggle Public / Private


@pytest.mark.parametrize(
    "name,arg", [("chexpert", "cbr_tiny,transfer"), ("hybrid", "resnet50,slim"), ("hybrid", "cbr_small,mean_var")]
)
def test_building_a_local_config_only_sets_fields(name, arg, tmp_path, monkeypatch):
    """No data and no checkpoint are made while building: the config names them, the run makes them."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    c = _load(name).get_config(arg + ",local")
    assert list(tmp_path.iterdir()) == []
    assert c.pretrained == pretrained.STAND_IN
    assert c.data.name == ("local_chexpert" if name == "chexpert" else "synthetic_retina")


def test_bad_arg_is_named():
    with pytest.raises(ValueError, match="resnet18"):
        _load("retina").get_config("resnet18,random")
    with pytest.raises(ValueError, match="MODEL,INIT|model,init"):
        _load("retina").get_config("resnet50")


@functools.cache
def _task(name, arg):
    c = _load(name).get_config(arg + ",local")
    return c, data_lib.build_dataset(c, c.val_split, train=False).task


@pytest.mark.parametrize(
    "name,arg",
    [("retina", f"{m},random") for m in PAPER_MODELS]
    + [("hybrid", "resnet50,slim"), ("chexpert", "cbr_tiny,random"), ("imagenet", "cbr_small")],
)
def test_local_config_builds_a_train_step(name, arg):
    """Shapes through init and a train step (traced, not compiled) for every architecture and each loss kind."""
    c, task = _task(name, arg)
    model = state_lib.build_model(c, task.num_outputs)
    size = c.data.image_size
    state, tx = state_lib.abstract_train_state(c, model, jnp.zeros((1, size, size, 3)))
    label = (
        jax.ShapeDtypeStruct((c.batch_size,), jnp.int32)
        if task.loss == "softmax"
        else jax.ShapeDtypeStruct((c.batch_size, task.num_outputs), jnp.float32)
    )
    batch = {
        "image": jax.ShapeDtypeStruct((c.batch_size, size, size, 3), jnp.float32),
        "label": label,
        "label_mask": jax.ShapeDtypeStruct((c.batch_size, label.shape[1] if label.ndim == 2 else 1), jnp.float32),
        "valid": jax.ShapeDtypeStruct((c.batch_size,), jnp.bool_),
    }
    step = steps.make_train_step(model, tx, task.loss, partition.make_data_mesh())
    new_state, metrics = jax.eval_shape(step, state, batch, jax.random.key(0))
    assert jax.tree_util.tree_structure(new_state.params) == jax.tree_util.tree_structure(state.params)
    assert metrics["loss"].shape == ()


@pytest.mark.parametrize("arg", ["cbr_tiny,transfusion:layer2", "resnet50,slim"])
def test_local_hybrid_inits_run(arg):
    """The non-random schemes really initialise in local mode (from the generated stand-in checkpoint)."""
    c, task = _task("hybrid", arg)
    model = state_lib.build_model(c, task.num_outputs)
    x = jnp.zeros((1, c.data.image_size, c.data.image_size, 3))
    assert c.pretrained == pretrained.STAND_IN  # resolved to a generated checkpoint only now, by the trainer's loader
    variables = state_lib.init_variables(c, model, jax.random.key(0), x)
    assert set(variables["params"]) == set(models.block_names(c.model.name, **dict(c.model.overrides))) | {"head"}


def test_chexpert_local_trains_end_to_end(tmp_path):
    """The sigmoid path through the real data pipeline (generated CheXpert folder) and the trainer."""
    c, _ = _task("chexpert", "cbr_tiny,random")
    c = c.copy_and_resolve_references()
    c.num_train_steps, c.eval_every_steps, c.progress_bar = 2, 2, False
    summary = trainer.train_and_evaluate(c, str(tmp_path))
    final = summary["test"]["final"]
    assert final["num_examples"] == 24  # the generated valid.csv: the test split
    assert {f"auc/{p}" for p in data_lib.CHEXPERT_PATHOLOGIES} <= set(final)
    assert summary["val"]["final"]["num_examples"] == 16  # the last quarter of the 64 training rows (patient cut)
