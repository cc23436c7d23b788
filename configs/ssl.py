"""Self-supervised pretraining on unlabeled images (SimCLR, BYOL): the in-domain alternative to ImageNet weights
(docs/ssl.md). Labels of the dataset read, if any, are ignored.

Launch (arg 'MODEL,METHOD[,local]'; MODEL any architecture of transfusion_jax.models, METHOD simclr or byol):
  python -m transfusion_jax.main --config=configs/ssl.py:resnet50,byol --workdir=$WORKDIR \
      --config.data.root=/path/to/unlabeled_images          # every .jpeg/.jpg/.png/.tif/.bmp at any depth
  python -m transfusion_jax.main --config=configs/ssl.py:cbr_small,simclr,local --workdir=/tmp/w   # CPU, ~1 min
Any reader instead of a folder, e.g. the Kaggle DR train images: --config.data.name=retina_folder
--config.data.root=/data/kaggle_dr. Chest x-rays: --config.ssl.views.flips=none (a folder does not say it holds
x-rays; the CheXpert readers do, and 'auto' never flips them).
The run ends by writing $WORKDIR/pretrained.npz (the online encoder; transfusion_jax.pretrained format): pass it as
--config.pretrained to configs/retina.py / chexpert.py / hybrid.py with INIT transfer, mean_var or transfusion:*.
Recipe: the methods' own (SimCLR: LARS, base lr 0.3 x batch/256, weight decay 1e-6, temperature 0.1, projector
2048-128 (hidden = the encoder's width); BYOL: LARS, base lr 0.2 x batch/256, weight decay 1.5e-6, projector and
predictor 4096-256, target momentum 0.996 -> 1), batch 256, 100 epochs with 10 of warmup, cosine decay; the views
adapted to medical images (docs/ssl.md lists the departures). Expected: the loss falls, projection_std stays well
above 0 (no collapse), and the encoder's frozen-feature probe beats its random init's (on generated grey shapes by
about 0.1 AUC: docs/ssl.md, tests/ssl/test_learning.py). No published number exists for these models on this data.
"""

from transfusion_jax import models
from transfusion_jax.ssl import config as ssl_config
from transfusion_jax.ssl.steps import METHODS
from transfusion_jax.train import config_lib


def get_config(arg: str = "resnet50,simclr"):
    a = config_lib.parse_arg(arg, names=("model", "method"))
    config_lib.check_choice("model", a["model"], models.MODEL_NAMES, "configs/ssl.py")
    config_lib.check_choice("method", a["method"], METHODS, "configs/ssl.py")
    c = ssl_config.base_config(a["method"])
    c.model.name = a["model"]
    return ssl_config.apply_runlocal(c) if a["local"] else c
