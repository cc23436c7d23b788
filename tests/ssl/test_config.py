"""configs/ssl.py: every model and method loads with its paper's recipe, ',local' shrinks it, and a typo is refused
naming the valid choices."""

import importlib.util
import os

import pytest

from transfusion_jax import data as data_lib
from transfusion_jax import models
from transfusion_jax.ssl import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    spec = importlib.util.spec_from_file_location("configs_ssl", os.path.join(REPO, "configs", "ssl.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", models.MODEL_NAMES)
def test_every_model_and_method_loads(model):
    module = _module()
    assert "--config=configs/ssl.py:" in module.__doc__  # its launch line
    for method, lr, decay in (("simclr", 0.3, 1e-6), ("byol", 0.2, 1.5e-6)):
        c = module.get_config(f"{model},{method}")
        assert (c.model.name, c.ssl.method, c.optimizer.name) == (model, method, "lars")
        assert (c.optimizer.base_learning_rate, c.optimizer.weight_decay) == (lr, decay)
        assert c.num_train_epochs == 100 and c.optimizer.warmup_epochs == 10 and c.batch_size == 256
        assert not c.data.augment.enabled and c.data.name in data_lib.DATASET_NAMES and not c.runlocal
        local = module.get_config(f"{model},{method},local")
        assert local.runlocal and local.num_train_steps <= 50 and local.data.name == "synthetic_retina"
        assert local.model.name == model and local.ssl.method == method
        trainer.resolve(local)  # its fields resolve: normalisation, views, method


def test_arguments_are_checked():
    module = _module()
    with pytest.raises(ValueError, match="choose one of simclr, byol"):
        module.get_config("cbr_small,mocov3")
    with pytest.raises(ValueError, match="Unknown model 'cbr_smal'"):
        module.get_config("cbr_smal,byol")
    with pytest.raises(ValueError, match="must be 'model,method"):
        module.get_config("cbr_small")


def test_a_data_field_the_run_would_not_read_is_refused():
    """A ',local' run reads generated images: a root given to it would be recorded as if read (issue: unused
    fields are errors before any work, as for supervised runs)."""
    c = _module().get_config("cbr_small,simclr,local")
    c.data.root = "/my/unlabeled"
    with pytest.raises(ValueError, match="config.data.root is not read by config.data.name='synthetic_retina'"):
        trainer.resolve(c)
