"""Retina (diabetic retinopathy, moderate-or-worse vs not), random init vs ImageNet transfer: paper Table 1; and ViTs.

Launch (arg 'MODEL,INIT[,local]'; MODEL in resnet50, inception_v3, cbr_larget, cbr_largew, cbr_small, cbr_tiny, or
the ViTs vit_b16, vit_ti16; INIT in random, transfer, or mean_var: "statistics transfer", the third init of the
feature-reuse decomposition, `python -m transfusion_jax.experiments reuse ROOT`, docs/instruments.md):
  python -m transfusion_jax.main --config=configs/retina.py:resnet50,transfer --workdir=$WORKDIR \
      --config.data.root=/path/to/kaggle_dr --config.pretrained=/path/to/imagenet.npz
  python -m transfusion_jax.main --config=configs/retina.py:vit_b16,transfer --workdir=$WORKDIR \
      --config.data.root=/path/to/kaggle_dr --config.pretrained=/path/to/vit_b16_tv.npz
  python -m transfusion_jax.main --config=configs/retina.py:cbr_small,random,local --workdir=/tmp/w   # CPU, ~1 min
  python -m transfusion_jax.main --config=configs/retina.py:vit_b16,transfer,local --workdir=/tmp/w   # CPU, ~2 min
Targets (Table 1, test AUC %, random / transfer): ResNet-50 96.4 / 96.7, Inception-v3 96.6 / 96.7,
CBR-LargeT 96.2 / 96.2; CBR-LargeW, CBR-Small, CBR-Tiny about 95.7-95.8 (UNCONFIRMED). The paper's data are private
(~250k images); the public Kaggle DR 2015 set binarised at grade >= 2 stands in, so absolute AUCs will differ.
Recipe: 150k steps at batch 32, Adam lr 1e-3 (docs/paper.md §3), 587 px. On Kaggle's 35k training images that is
~137 epochs, where the paper's ~250k images made ~19: --config.num_train_epochs=19 matches the paper's data passes.
ViTs (not in the paper; docs/VIT.md): the ViT recipe (config_lib.vit_recipe: AdamW 1e-4, weight decay 0.05, 5000
warmup steps, cosine, clipping at 1, layer-wise lr decay 0.75 for transfer) at 384 px (587 is no multiple of the
16 px patch; the 224 px checkpoint's position embeddings are resampled to the 24 x 24 grid), same steps and batch.
Expected: no paper number; Matsoukas et al. (CVPR 2022) found ImageNet transfer helps ViTs far more than CNNs on
fundus images (APTOS2019), so random init should trail transfer clearly (UNCONFIRMED on Kaggle DR).
Splits: train; validation = Kaggle's Public test images (selection); test = Private (reported only).
ImageNet weights: ResNet-50 / Inception-v3 / ViT-B/16 from `python -m transfusion_jax.pretrained convert ...`; CBRs
from configs/imagenet.py (export_pretrained).
"""

from transfusion_jax.train import config_lib

INITS = ("random", "transfer", "mean_var")
VIT_IMAGE_SIZE = 384


def get_config(arg: str = "resnet50,random"):
    a = config_lib.parse_arg(arg)
    config_lib.check_choice("model", a["model"], config_lib.PAPER_MODELS + config_lib.VIT_MODELS, "configs/retina.py")
    config_lib.check_choice("init", a["init"], INITS, "configs/retina.py")
    c = config_lib.retina_config(a["model"], a["init"])
    if a["model"] in config_lib.VIT_MODELS:
        config_lib.vit_recipe(c)
        c.data.image_size = VIT_IMAGE_SIZE
    return config_lib.apply_runlocal(c) if a["local"] else c
