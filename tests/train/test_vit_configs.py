"""The ViT configs (configs/retina.py, configs/chexpert.py with vit_b16 / vit_ti16): the ViT recipe's fields, their
`,local` forms, AdamW's decoupled decay on kernels only, and a one-channel CheXpert ViT run from an RGB checkpoint
through the real trainer."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transfusion_jax import models, pretrained, surgery
from transfusion_jax.data import preprocess
from transfusion_jax.surgery import fit
from transfusion_jax.train import config_lib, rundir, trainer
from transfusion_jax.train import state as state_lib

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"configs_{name}_vit", os.path.join(CONFIG_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["retina", "chexpert"])
@pytest.mark.parametrize("model", config_lib.VIT_MODELS)
@pytest.mark.parametrize("init", ["random", "transfer", "mean_var"])
def test_vit_configs_use_the_vit_recipe(name, model, init):
    module = _load(name)
    assert f"--config=configs/{name}.py:vit_" in module.__doc__  # a ViT launch line
    c = module.get_config(f"{model},{init}")
    surgery.parse_init(c.init, models.block_names(model))
    o = c.optimizer
    assert (o.name, o.learning_rate, o.weight_decay, o.schedule, o.warmup_steps, o.grad_clip_norm) == (
        "adamw", 1e-4, 0.05, "cosine", 5000, 1.0
    )  # fmt: skip
    assert c.finetune.layer_decay == (0.75 if init == "transfer" else 1.0)
    assert c.batch_size == 32
    assert (c.data.image_size, c.data.channels) == ((384, 3) if name == "retina" else (224, 1))
    local = module.get_config(f"{model},{init},local")
    assert local.model.overrides.to_dict() == config_lib.VIT_LOCAL_OVERRIDES
    assert local.optimizer.name == "adamw" and local.optimizer.warmup_steps <= local.num_train_steps // 4
    assert local.data.channels == c.data.channels and local.finetune.layer_decay == c.finetune.layer_decay
    assert models.block_names(model, **local.model.overrides) == models.block_names(model)  # same 12 blocks
    assert module.get_config("resnet50,transfer").optimizer.name != "adamw"  # the paper's models keep their recipe


@pytest.mark.parametrize("init,decay", [("transfusion:encoderblock_3", 0.75), ("gabor", 1.0), ("mean_var", 1.0)])
def test_vit_hybrid_configs(init, decay):
    module = _load("hybrid")
    assert "--config=configs/hybrid.py:vit_b16," in module.__doc__
    c = module.get_config(f"vit_b16,{init}")
    surgery.parse_init(c.init, models.block_names("vit_b16"))
    assert (c.optimizer.name, c.finetune.layer_decay, c.data.image_size) == ("adamw", decay, 384)
    assert module.get_config(f"vit_ti16,{init},local").model.overrides.to_dict() == config_lib.VIT_LOCAL_OVERRIDES
    with pytest.raises(ValueError, match="slim"):
        module.get_config("vit_b16,slim")


def test_adamw_decays_kernels_only_and_decoupled():
    """One AdamW step on a zero gradient moves nothing but the kernels, each by -lr * wd * kernel; biases,
    LayerNorms, the class token and the position embeddings (timm's no-decay set) stay."""
    c = _load("retina").get_config("vit_ti16,random,local")
    c.optimizer.warmup_steps, c.optimizer.schedule = 0, "constant"
    c.model.overrides.depth = 2  # every kind of leaf, a sixth of the init to compile
    model = state_lib.build_model(c, 2)
    params = state_lib.random_variables(model, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    tx, _ = state_lib.make_optimizer(c, params)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    for key, update in surgery.flatten(updates).items():
        param = surgery.flatten(params)[key]
        want = -1e-4 * 0.05 * param if key.endswith("kernel") else jnp.zeros_like(param)
        np.testing.assert_allclose(update, want, rtol=1e-6, atol=1e-12, err_msg=key)


def test_one_channel_chexpert_vit_trains_from_an_rgb_checkpoint(tmp_path):
    """configs/chexpert.py's ViT reads grey x-rays as one channel: the RGB stand-in checkpoint's patch embedding is
    folded at load (its constant into the bias), and the run trains and evaluates through the real trainer."""
    c = _load("chexpert").get_config("vit_ti16,transfer,local").copy_and_resolve_references()
    c.num_train_steps, c.eval_every_steps, c.progress_bar = 2, 2, False
    c.model.overrides.depth = 2  # compiles 6x faster than the 12 blocks; the stand-in is made to match
    summary = trainer.train_and_evaluate(c, str(tmp_path))
    assert summary["final_step"] == 2 and summary["test"]["final"]["num_examples"] == 24
    start, _ = pretrained.load(str(tmp_path / rundir.INIT))
    stand_in, _ = pretrained.load(state_lib.checkpoint_path(c, c.pretrained))
    kernel = start["params"]["embedding"]["conv"]["kernel"]
    assert kernel.shape == (8, 8, 1, 16) and stand_in["params"]["embedding"]["conv"]["kernel"].shape == (8, 8, 3, 16)
    folded, constant = fit.fold_rgb_kernel(
        stand_in["params"]["embedding"]["conv"]["kernel"], preprocess.PRESETS["torchvision"]
    )
    np.testing.assert_allclose(kernel, folded, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        start["params"]["embedding"]["conv"]["bias"],
        stand_in["params"]["embedding"]["conv"]["bias"] + constant,
        atol=1e-6,
    )
