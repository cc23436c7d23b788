"""ImageNet pretraining of the CBR models (the paper trained them itself to get transfer weights and Table 1's top-5).

Launch (arg 'MODEL[,local]'; MODEL in cbr_larget, cbr_largew, cbr_small, cbr_tiny, cbr_tiny_alt):
  python -m transfusion_jax.main --config=configs/imagenet.py:cbr_small --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR
The run ends by writing $WORKDIR/pretrained.npz (transfusion_jax.pretrained format): pass it as
--config.pretrained to configs/retina.py / chexpert.py / hybrid.py with INIT transfer, mean_var or transfusion:*.
Data: data.name='imagenet_tfds', TFDS imagenet2012 read as ArrayRecord (no TensorFlow at train time); splits
train / validation. Prepare it once with TFDS's own builder, which needs TensorFlow: ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in MANUAL_DIR, then `tfds build imagenet2012 --manual_dir=MANUAL_DIR
--data_dir=$TFDS_DATA_DIR --file_format=array_record`. Start-up scans every record once for its label (reading
the whole train set from disk). Extracted class folders instead: --config.data.name=image_folder
--config.data.root=ROOT --config.val_split=val for root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG (val
images sorted into class folders, e.g. with the common valprep.sh).
Recipe (paper UNCONFIRMED; the standard ResNet one): SGD momentum 0.9, lr 0.1 x batch/256 with 5-epoch warmup and
cosine decay, weight decay 1e-4 on kernels, batch 1024, 90 epochs (112,590 steps), 224 px. Eval reports top-1 and
top-5 accuracy (and one-vs-rest AUC). Target: the paper reports CBRs "much worse on ImageNet" than ResNet-50
(top-5 numbers UNCONFIRMED).
"""

from transfusion_jax.train import config_lib

MODELS = ("cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny", "cbr_tiny_alt")
IMAGES_PER_EPOCH = 1_281_167


def get_config(arg: str = "cbr_small"):
    a = config_lib.parse_arg(arg, names=("model",))
    config_lib.check_choice("model", a["model"], MODELS, "configs/imagenet.py")
    c = config_lib.base_config()
    c.model.name = a["model"]
    c.data.name = "imagenet_tfds"
    c.data.image_size = 224
    c.data.normalization = "torchvision"
    c.train_split = "train"
    c.val_split = "validation"  # ImageNet's labelled held-out set (its 'test' has no labels)
    c.test_split = ""
    c.batch_size = 1024
    steps_per_epoch = IMAGES_PER_EPOCH // c.batch_size
    c.num_train_steps = 90 * steps_per_epoch
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 0.1 * c.batch_size / 256
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 5 * steps_per_epoch
    c.optimizer.weight_decay = 1e-4
    c.eval_every_steps = 5 * steps_per_epoch
    c.checkpoint_every_steps = steps_per_epoch
    c.export_pretrained = True
    return config_lib.apply_runlocal(c) if a["local"] else c
