"""CheXpert (5 pathologies, independent sigmoids), random init vs ImageNet transfer: paper Table 2 (and Fig. 6c); ViTs.

Launch (arg 'MODEL,INIT[,local]'; MODEL in resnet50, inception_v3, cbr_larget, cbr_largew, cbr_small, cbr_tiny, or the
ViTs vit_b16, vit_ti16; INIT in random, transfer, mean_var):
  python -m transfusion_jax.main --config=configs/chexpert.py:resnet50,random --workdir=$WORKDIR \
      --config.data.root=/path/holding/CheXpert-v1.0-small [--config.pretrained=/path/to/imagenet.npz]
  python -m transfusion_jax.main --config=configs/chexpert.py:vit_b16,transfer --workdir=$WORKDIR \
      --config.data.root=/path/holding/CheXpert-v1.0-small --config.pretrained=/path/to/vit_b16_tv.npz
  python -m transfusion_jax.main --config=configs/chexpert.py:cbr_tiny,random,local --workdir=/tmp/w   # CPU
  python -m transfusion_jax.main --config=configs/chexpert.py:vit_ti16,transfer,local --workdir=/tmp/w   # CPU
Targets (Table 2, AUC %, Atelectasis / Cardiomegaly / Consolidation / Edema / Pleural Effusion):
  ResNet-50 random 79.52 / 75.23 / 85.49 / 88.34 / 88.70; transfer 79.76 / 74.93 / 84.42 / 88.89 / 88.07.
  Other rows UNCONFIRMED. Fig. 6c (ResNet-50, Consolidation): transfer ~0.83 within ~10k steps, all inits
  ~0.85-0.86 by 100k; mean_var in between.
Recipe: SGD momentum 0.9, lr 1e-3, batch 32 (docs/paper.md §3), 224 px, 100k steps (Fig. 6c). Uncertain labels
follow config.data.uncertainty_policy (default u_mixed; the paper's policy is unknown). No flips
(augment.flips='auto': a mirrored chest x-ray puts the heart on the wrong side).
Input: the paper's models read the x-rays as RGB (the grey image replicated, data.channels=3; set
--config.data.channels=1 to feed one channel); the ViTs read one channel (data.channels=1): the RGB patch embedding of
an ImageNet checkpoint is folded to one channel when loaded, which for a ViT changes no logit (docs/VIT.md).
ViTs (not in the paper): the ViT recipe (config_lib.vit_recipe: AdamW 1e-4, weight decay 0.05, 5000 warmup steps,
cosine, clipping at 1, layer-wise lr decay 0.75 for transfer) at 224 px, the checkpoint's own size; 100k steps,
batch 32. Expected: no paper number; Matsoukas et al. (CVPR 2022) found transfer helps DeiT on CheXpert far more
than it helps CNNs (UNCONFIRMED margins).
Splits: the official valid set is the test set (reported at the validation-selected and the final step; the
paper's evaluation split is UNCONFIRMED); selection uses a patient-disjoint 5 % slice of train ('train[95%:]',
about 11k images of 3k patients), training the other 95 %.
"""

from transfusion_jax.train import config_lib

MODELS = ("resnet50", "inception_v3", "cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny") + config_lib.VIT_MODELS
INITS = ("random", "transfer", "mean_var")


def get_config(arg: str = "resnet50,random"):
    a = config_lib.parse_arg(arg)
    if a["model"] not in MODELS:
        raise ValueError(f"Unknown model {a['model']!r} for CheXpert; choose one of {MODELS}.")
    if a["init"] not in INITS:
        raise ValueError(f"Unknown init {a['init']!r} for configs/chexpert.py; choose one of {INITS}.")
    c = config_lib.base_config()
    c.model.name = a["model"]
    c.init = a["init"]
    c.data.name = "chexpert_folder"
    c.data.image_size = 224
    c.train_split = "train[:95%]"
    c.val_split = "train[95%:]"  # patient-disjoint from train[:95%]
    c.test_split = "valid"  # the official valid set (TFDS: 'validation')
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 1e-3
    c.batch_size = 32
    c.num_train_steps = 100_000
    c.auc_threshold = 0.85  # no paper threshold for CheXpert; steps_to_threshold uses the mean AUC
    if a["model"] in config_lib.VIT_MODELS:
        config_lib.vit_recipe(c)
        c.data.channels = 1  # grey x-rays as one channel
    return config_lib.apply_runlocal(c) if a["local"] else c
