"""Hybrid and feature-independent inits on Retina: Mean Var (Fig. 6), weight transfusion (Fig. 4.6), synthetic Gabor
conv1 and Slim (docs/paper.md §4.4). The measure is steps until the test AUC is first above 0.91 (summary.json:
test.steps_to_threshold; the validation split selects nothing here), evaluated every 1001 steps; the report adds
steps to 95 % of each run's own final validation AUC, and intervals of hybrid - random over seeds.

Launch (arg 'MODEL,INIT[,local]'; INIT in mean_var, transfusion:<block>, transfusion:<block>+mean_var (weights up to
<block>, Mean-Var above), gabor, slim, or random / transfer for the baselines of the same plots):
  python -m transfusion_jax.main --config=configs/hybrid.py:resnet50,transfusion:block2 --workdir=$WORKDIR \
      --config.data.root=/path/to/kaggle_dr --config.pretrained=/path/to/resnet50_imagenet.npz
  python -m transfusion_jax.main --config=configs/hybrid.py:resnet50,slim,local --workdir=/tmp/w   # CPU
  python -m transfusion_jax.main --config=configs/hybrid.py:vit_b16,transfusion:encoderblock_3 --workdir=$WORKDIR \
      --config.data.root=/path/to/kaggle_dr --config.pretrained=/path/to/vit_b16_tv.npz
Blocks: resnet50 conv1, block1..block4; inception_v3 stem, mixed_5..mixed_7; CBRs layer1..layerN; the ViTs
(vit_b16, vit_ti16; not in the paper, docs/VIT.md) embedding, encoderblock_0..encoderblock_11, encoder_norm, trained
with configs/retina.py's ViT recipe at 384 px, 150k steps; gabor fills their patch embedding; slim has no ViT form.
'slim' trains resnet50_slim (block3/4 at half width) from a ResNet-50 checkpoint (up to block2).
Targets (steps to 0.91 AUC, mean of 5 runs): ResNet-50 random 69,069, gabor 25,425, slim 8,208, transfer 8,008;
CBR-LargeW random 104,104, gabor 82,082, transfer 19,419. Mean Var (Fig. 6, read off the plot): ResNet-50
~25-30k, Inception-v3 ~25k. Transfusion per block: numbers UNCONFIRMED; conv1 gives the largest marginal gain.
Lengths: 150k steps (ResNet-50, Inception-v3), 120k (CBRs).
"""

from transfusion_jax.train import config_lib

VIT_IMAGE_SIZE = 384  # as configs/retina.py's ViTs

SCHEMES = ("mean_var", "gabor", "slim", "random", "transfer")


def get_config(arg: str = "resnet50,mean_var"):
    a = config_lib.parse_arg(arg)
    config_lib.check_choice("model", a["model"], config_lib.PAPER_MODELS + config_lib.VIT_MODELS, "configs/hybrid.py")
    if not a["init"].startswith("transfusion:"):
        config_lib.check_choice("init", a["init"], SCHEMES + ("transfusion:<block>",), "configs/hybrid.py")
    if a["init"] == "slim" and a["model"] != "resnet50":
        raise ValueError("init 'slim' is defined for resnet50 only (docs/paper.md §6.3); use 'resnet50,slim'.")
    c = config_lib.retina_config("resnet50_slim" if a["init"] == "slim" else a["model"], a["init"])
    c.num_train_steps = 150_000 if a["model"] in ("resnet50", "inception_v3") + config_lib.VIT_MODELS else 120_000
    if a["model"] in config_lib.VIT_MODELS:
        config_lib.vit_recipe(c)
        c.data.image_size = VIT_IMAGE_SIZE
    return config_lib.apply_runlocal(c) if a["local"] else c
