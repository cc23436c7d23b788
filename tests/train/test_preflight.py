"""Everything a run checks before step 1: normalisation from the checkpoint, splits that keep selection off the test
set, input size vs. architecture, every split opened; and the workdir files a real run leaves (subset ids)."""

import json
import os
import re

import numpy as np
import pytest
from fake_data import FakeDataset, route_build_dataset, tiny_config

from transfusion_jax import data as data_lib
from transfusion_jax import pretrained
from transfusion_jax.data import generate
from transfusion_jax.pretrained import common
from transfusion_jax.train import config_lib, export, preflight, trainer


def _checkpoint(path, preprocessing) -> str:
    """A stand-in checkpoint whose metadata names `preprocessing` (a preset name, or a converted-style record)."""
    variables = {"params": {"layer1": {"conv": {"kernel": np.zeros((3, 3, 3, 4), np.float32)}}}, "batch_stats": {}}
    name = preprocessing if isinstance(preprocessing, str) else preprocessing["name"]
    export.export_pretrained(
        str(path),
        variables,
        architecture="cbr_small",
        model_overrides={},
        num_classes=2,
        normalization=name,
        source="t",
    )
    if not isinstance(preprocessing, str):  # rewrite the record as the converters write it (numbers included)
        variables, meta = pretrained.load(str(path))
        pretrained.save(str(path), variables, {**meta, "preprocessing": preprocessing})
    return str(path)


def test_normalisation_comes_from_the_checkpoint(tmp_path):
    c = config_lib.retina_config("cbr_small", "transfer")
    assert c.data.normalization == ""  # by default the checkpoint decides
    assert preflight.resolve(c).data.normalization == "torchvision"  # no checkpoint: the default preset
    c.pretrained = _checkpoint(tmp_path / "keras.npz", "keras_resnet50")
    assert preflight.resolve(c).data.normalization == "keras_resnet50"
    c.init = "random"  # a random-init run of the same sweep sees the same inputs as its transfer twin
    assert preflight.resolve(c).data.normalization == "keras_resnet50"
    c.data.normalization = "keras_resnet50"  # saying the same thing explicitly is fine
    assert preflight.resolve(c).data.normalization == "keras_resnet50"
    c.data.normalization = "torchvision"
    with pytest.raises(preflight.ConfigError, match=r"normalization='torchvision' but the checkpoint .*keras\.npz "
                       r"expects 'keras_resnet50'"):  # fmt: skip
        preflight.resolve(c)
    c.data.normalization = "caffe"
    with pytest.raises(ValueError, match="Unknown normalization 'caffe'"):
        preflight.resolve(c)


def test_a_converted_record_must_match_the_preset_it_names(tmp_path):
    record = common.preprocessing_record("inception")
    c = config_lib.retina_config("cbr_small", "transfer")
    c.pretrained = _checkpoint(tmp_path / "ok.npz", record)
    assert preflight.resolve(c).data.normalization == "inception"
    c.pretrained = _checkpoint(tmp_path / "odd.npz", {**record, "channel_order": "BGR"})
    with pytest.raises(preflight.ConfigError, match="channel_order='BGR'"):
        preflight.resolve(c)


def test_the_local_stand_in_checkpoint_decides_the_normalisation_too():
    """',local' configs name the generated stand-in checkpoint (pretrained.STAND_IN), resolved as the loader does."""
    c = config_lib.apply_runlocal(config_lib.retina_config("cbr_small", "transfer"))
    assert c.pretrained == pretrained.STAND_IN
    assert preflight.resolve(c).data.normalization == "torchvision"  # what the stand-in's metadata records
    c.data.normalization = "inception"
    with pytest.raises(preflight.ConfigError, match=r"expects 'torchvision'"):
        preflight.resolve(c)


def test_splits_keep_selection_off_the_test_set():
    c = config_lib.retina_config("cbr_small", "random")
    assert (c.train_split, c.val_split, c.test_split) == ("train", "validation", "test")
    c.val_split = "test"
    with pytest.raises(preflight.ConfigError, match="config.val_split and config.test_split are both 'test'"):
        preflight.resolve(c)
    c = config_lib.retina_config("cbr_small", "random")
    c.eval_split = "test"  # the old field: refused, not silently ignored
    with pytest.raises(preflight.ConfigError, match="config.eval_split is gone"):
        preflight.resolve(c)


@pytest.fixture
def fake_data(monkeypatch):
    options = {}
    route_build_dataset(monkeypatch, options)
    return options


def _tiny_config(**changes):
    return tiny_config(**{"num_train_steps": 10, **changes})


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["data.root=/my/CheXpert"], "config.data.root is not read by config.data.name='local_chexpert'"),
        (["data.synthetic.num_examples=99"], "config.data.synthetic is not read by config.data.name='local_chexpert'"),
        (["data.retina_threshold=3"], "config.data.retina_threshold is not read"),
        (["data.stratified=False"], "config.data.stratified is only read with subset_size > 0"),
        (["data.block_shuffle.seed=3"], "config.data.block_shuffle.seed is only read with block_shuffle.block_size"),
        (["data.augment.enabled=False", "data.augment.rotate_deg=5.0"], "config.data.augment.rotate_deg is only read"),
        (["data.max_skip_fraction=0.5"], "config.data.max_skip_fraction is only read with on_bad_image='skip'"),
        (["optimizer.b1=0.5"], "config.optimizer.b1 is not read by optimizer 'sgd'"),
        (["mean_var_bn=copy"], "config.mean_var_bn is only read by Mean-Var inits, not init='random'"),
        (["aux_loss_weight=0.4"], "config.aux_loss_weight needs a model with an auxiliary head"),
        (["eval_steps=(5, 10)", "eval_every_steps=7"], "config.eval_every_steps is not read when config.eval_steps"),
        (["val_split=", "early_stopping_evals=3"], "config.early_stopping_evals is only read with a validation split"),
    ],
)
def test_a_field_the_run_would_not_read_is_an_error_before_any_work(overrides, named):
    """A ',local' CheXpert config trains on generated data: a root given to it would be recorded in config.json as if
    the run had read /my/CheXpert. Every such field is named, with why, before anything is built."""
    c = config_lib.apply_overrides(config_lib.apply_runlocal(_chexpert_sgd()), overrides)
    with pytest.raises(preflight.ConfigError, match=re.escape(named)) as error:
        preflight.resolve(c)
    assert "drop ',local'" in str(error.value)
    preflight.resolve(config_lib.apply_runlocal(_chexpert_sgd()))  # without them it resolves


def _chexpert_sgd():
    c = config_lib.base_config()
    c.model.name = "cbr_tiny"
    c.data.name = "chexpert_folder"
    c.train_split, c.val_split, c.test_split = "train[:95%]", "train[95%:]", "valid"
    c.optimizer.name = "sgd"
    return c


def test_an_input_too_small_for_the_model_names_the_smallest(fake_data, tmp_path):
    c = _tiny_config()
    c.model.overrides.widths = (4, 8, 8, 8)  # four 3x3/2 VALID pools need 31 px; 8 px leaves a 0x0 map
    with pytest.raises(
        preflight.ConfigError, match=r"image_size=8 is too small for cbr_small .*smallest input is 31x31"
    ):
        trainer.train_and_evaluate(c, str(tmp_path))
    assert not os.path.exists(tmp_path / "metrics.jsonl")  # nothing trained


def test_splits_sharing_examples_are_refused(fake_data, tmp_path):
    fake_data["validation"] = {"name": "train"}  # the same ids as the training split
    with pytest.raises(preflight.ConfigError, match="40 examples are in both the train split .* and the val split"):
        trainer.train_and_evaluate(_tiny_config(), str(tmp_path))


def test_a_split_without_both_classes_has_no_auc():
    one_class = FakeDataset(10, name="v")
    one_class.labels[:] = 1
    assert not preflight._auc_defined(one_class)
    assert preflight._auc_defined(FakeDataset(10, name="v"))
    sigmoid = FakeDataset(10, loss="sigmoid", num_outputs=3, name="v")
    assert preflight._auc_defined(sigmoid)
    sigmoid.labels[:] = 0
    assert not preflight._auc_defined(sigmoid)


def test_num_train_steps_from_epochs():
    c = _tiny_config(num_train_epochs=2.5)
    assert preflight.num_train_steps(c, train_examples=100) == 16  # ceil(2.5 * 100 / 16)
    assert preflight.num_train_steps(_tiny_config(), train_examples=100) == 10


# ------------------------------------------------------------------------------------------------ real data


@pytest.fixture
def kaggle(tmp_path):
    root = tmp_path / "kaggle"
    generate.write_tfds_dr_manual(str(root), 24, seed=4, size=24, num_test=24)
    return str(root)


def _retina_config(root, **changes):
    c = config_lib.retina_config("cbr_small", "random")
    c.model.overrides.widths = (4, 8)
    c.data.update(root=root, image_size=16, num_workers=0)
    c.batch_size, c.num_train_steps, c.eval_every_steps, c.progress_bar = 8, 2, 2, False
    c.update(changes)
    return c


def test_every_split_is_checked_before_step_one(kaggle, tmp_path):
    test_ids = data_lib.build_dataset(_retina_config(kaggle), "test", train=False).example_ids()
    os.remove(test_ids[-1])  # one test image gone: found before training, not at the first evaluation
    with pytest.raises(data_lib.BadImageError, match=r"retina_folder/test: 1 of \d+ image files are missing"):
        trainer.train_and_evaluate(_retina_config(kaggle), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")
    c = _retina_config(kaggle)
    c.data.on_bad_image = "skip"  # skipping is allowed, within the limit (1 of ~17 images is above 1 %)
    with pytest.raises(data_lib.TooManyBadImagesError, match="retina_folder/test: 1 of"):
        trainer.train_and_evaluate(c, str(tmp_path / "run"))


def test_small_data_run_trains_on_its_subset_and_evaluates_whole_splits(kaggle, tmp_path):
    c = _retina_config(kaggle, seed=3)
    c.data.subset_size = 12
    summary = trainer.train_and_evaluate(c, str(tmp_path))
    with open(tmp_path / "train_subset.json") as f:
        subset = json.load(f)
    assert subset["subset_seed"] == 3 and len(subset["ids"]) == len(set(subset["ids"])) == 12
    train = data_lib.build_dataset(c, "train", train=False).example_ids()
    assert set(subset["ids"]) < set(train)
    assert summary["train_examples"] == 12
    for role, split in (("val", "validation"), ("test", "test")):
        whole = len(data_lib.build_dataset(c, split, train=False))
        assert summary[role]["final"]["num_examples"] == whole
