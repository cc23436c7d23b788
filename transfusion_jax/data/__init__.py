"""Data: Retina (diabetic retinopathy) and CheXpert from their real formats, synthetic stand-ins, small-data subsets.

Contract with the training loop
-------------------------------
`build_dataset(config, split, *, train) -> Dataset`; `config` is the experiment ConfigDict whose `config.data`
is `default_data_config()` (or that data ConfigDict itself). `config.data.name` picks the reader:

  retina_folder    Kaggle layout: root/trainLabels.csv + root/train/<image>.jpeg (split 'train'); with
                   root/retinopathy_solution.csv + root/test/ also 'validation' (Usage Public) and 'test' (Private).
  retina_tfds      TFDS diabetic_retinopathy_detection/<tfds_config> prepared to ArrayRecord under data_dir
                   (`python -m transfusion_jax.data prepare ...`); splits train / validation / test.
  chexpert_folder  the official CheXpert-v1.0-small/ download under root; splits 'train', 'valid'.
  chexpert_tfds    TFDS chexpert prepared under data_dir; splits train / validation.
  local_chexpert   a miniature generated CheXpert-v1.0-small folder, made on first use and cached (local.py);
                   what `,local` CheXpert configs read. Splits 'train', 'valid'.
  synthetic_retina, synthetic_source   rendered in memory (config.data.synthetic.*); any split name, each its
                   own seed.
  image_folder     root/<split>/<class>/*.jpeg, e.g. from `generate source`.
  unlabeled_folder every image file under root at any depth, sorted by path, no labels (one placeholder class):
                   unlabeled images for self-supervised pretraining (transfusion_jax.ssl). One split, 'train'.
  tfds_classification  any prepared TFDS single-label image set: config.data.tfds_name, image_key (encoded
                   image), label_key (a ClassLabel: its names and num_classes give the task); softmax.
  imagenet_tfds    its preset for TFDS imagenet2012 (1000 classes named by WordNet id); splits train / validation.
                   Prepared with TFDS's own builder from ILSVRC2012_img_train.tar + ILSVRC2012_img_val.tar
                   (`tfds build imagenet2012 --manual_dir=M --data_dir=D --file_format=array_record`, needs TF).
  resized          a resized copy written by `python -m transfusion_jax.data resize OUT --name NAME ...` from any
                   of the above (root = OUT): ArrayRecord shards of JPEG/PNG images with the original ids and raw
                   labels, so every task option still applies; image_size 0 = the stored size. Its splits are the
                   ones written, by name (slices included: write 'train[:95%]' to train on it). See resized.py.
Splits take TFDS-style slices, e.g. 'train[:95%]' / 'train[95%:]' (CheXpert's validation split: its official
valid set is the paper's test set). Rows are grouped by patient wherever they are in the file (Kaggle: the
'<patient>' of '<patient>_<eye>'; CheXpert: the patientNNNNN folder of Path; TFDS DR and CheXpert: the same from
each record's name), then cut between patients, so no patient is on both sides of complementary slices. Other TFDS
slices (tfds_classification) go to TFDS unchanged.

Tasks (`Dataset.task`, a `TaskInfo(name, label_names, num_outputs, loss)`):
  Retina: loss 'softmax'. retina_target 'binary' (default) = grade >= retina_threshold (default 2, the paper's
  "moderate DR"), 2 outputs, AUC from the class-1 probability; 'five_class' = the 0-4 grade, 5 outputs.
  CheXpert: loss 'sigmoid', 5 outputs in the order Atelectasis, Cardiomegaly, Consolidation, Edema,
  Pleural Effusion. Blank labels count as negative. Uncertain (-1) labels follow `uncertainty_policy`:
  u_ones, u_zeros, u_ignore (mask 0: the loss and the AUC must skip them) or u_mixed (default: U-Ones for
  Atelectasis and Edema, U-Zeros for the rest). u_mixed is the default because it is the only recipe published
  by overlapping authors (docs/paper.md §2.2) and CheXpert's own paper found U-Ones best for Atelectasis and Edema;
  Transfusion's own choice is unknown.
  TFDS classification (imagenet_tfds): loss 'softmax' over the ClassLabel's classes; labels outside them (the
  unlabelled imagenet2012 'test' split, -1) are an error.

`Dataset`: `len(ds)` = number of examples (after frontal_only, and subset_size for training); `ds.task`;
`ds.class_balance`; `ds.bad_images` (path -> error, images skipped so far); `ds.num_batches(B)` (eval batches);
`ds.example_ids()` (each example's path or record key, eval order); `ds.check()` (before step 1: image files exist,
the first example decodes; raises BadImageError / TooManyBadImagesError);
`ds.batches(global_batch_size, *, mesh, seed=0, epoch_start=0, start_step=0)` yields dicts of global jax.Arrays,
sharded along mesh axis 'data' (`NamedSharding(mesh, P('data'))`), each process decoding only its own
contiguous share of every global batch:
  image       float32 [B, H, W, C], C = config.data.channels (3, or 1 for grey input), normalised with the
              `normalization` preset ('' = torchvision here; the trainer sets it from the checkpoint's metadata;
              its `preprocess.grey` form for one channel)
  label       int32 [B] (softmax tasks) or float32 [B, C] (sigmoid tasks)
  label_mask  float32 [B, 1] (softmax) or [B, C] (sigmoid): 1 where the label counts; 0 for u_ignore'd labels,
              padding and skipped images
  valid       bool [B]: False for eval padding and for images skipped under on_bad_image='skip'
Weight every per-example loss by `valid` (and per-label by `label_mask`) and count only valid rows in
metrics. The host only decodes and resizes; images travel to the devices as uint8 and one jitted per-example
transform makes the model input there: augmentation (train), block shuffle (if set), normalisation.
train=True: endless; epoch e is a permutation drawn from (seed, e); batches run across epoch ends without
gaps; example at position p of epoch e is augmented with key fold_in(fold_in(key(seed), e), p)
(`preprocess.augment`). Batch s therefore depends only on (seed, epoch_start, s): `start_step=s` resumes exactly,
by index arithmetic, decoding nothing skipped; the iterator's `get_state()` / `set_state()` do the same.
train=False: one pass, every example exactly once in file order, `ceil(N / B)` batches, the last padded with
valid=False; no augmentation.
Block shuffle (`config.data.block_shuffle.block_size` = b > 0; Neyshabur et al. 2020): every split, after
augmentation, the image cut into b x b pixel tiles permuted by one permutation for all images (from
block_shuffle.seed, as the authors' code), or with per_example=True by a permutation fixed per example (from
(block_shuffle.seed, the example's index in its source)); b must
divide image_size (checked when the dataset is built).

Images: decoded with Pillow (JPEG draft mode for big photos), Retina center-cropped to a square, CheXpert
squashed, to `image_size` (0 = paper: 587 Retina, 224 CheXpert); grayscale is replicated to 3 channels, or with
`channels=1` every image is decoded grey (colour ones to their luma) and fed as one channel. See
`preprocess.py` for the normalisation formula and presets, and `default_data_config()` for every field.

Small-data subsets (`subset_size`) restrict training only: validation and test always score their whole split.
The subset is a stratified sample drawn with `subset_seed`, which by default (-1) is the run's `config.seed`, so
each seed trains on its own subset and the spread over seeds includes the subset's variance.

Augmentation per task (`augment.flips='auto'`): Retina flips left-right (a mirrored fundus is a plausible other
eye); CheXpert never flips (a mirrored chest x-ray has its heart on the wrong side); the other sets flip
left-right. Then a small affine (±10°, 5 % translation, scale 0.95-1.05) and brightness/contrast ±0.1 everywhere.

Bad images: under on_bad_image='raise' the first missing or undecodable image stops the run naming it; under
'skip' they are masked out and counted, and a split with more than `max_skip_fraction` (default 1 %) of its
images bad stops the run (TooManyBadImagesError): a run that cannot see its data fails instead of "succeeding".
Grain's workers only report a bad image (zeros and its message); the main process raises or counts it when it
assembles the batch. Missing files are found before step 1 (`check()`, every split).

Decoding runs on grain: a MapDataset over this process's stream positions (index arithmetic above), decoded
by config.data.num_workers worker threads or processes (worker_type; grain's `mp_prefetch`, whose workers need
absl flags marked parsed, which the pipeline does when the caller has not). TFDS sources are read with
`tfds.data_source` (ArrayRecord), no TF; resized copies with grain's ArrayRecordDataSource. With
config.data.cache_decoded a dataset keeps each image's decoded, resized pixels after the first read (small splits
read many times, e.g. the miniature study's), so later epochs and evaluations decode nothing.

Command line: `python -m transfusion_jax.data generate {chexpert,kaggle_dr,tfds_dr_manual,source} OUT --num N`
writes miniature datasets in the real formats; `python -m transfusion_jax.data prepare NAME --manual_dir M
--data_dir D` prepares a TFDS builder (see prepare.py for where the Kaggle / Stanford files go);
`python -m transfusion_jax.data resize OUT --name NAME [--root R | --data_dir D] --size S --splits a,b` writes a
resized copy (see resized.py). docs/INPUT.md explains the design and its choices.
"""

from transfusion_jax.data.pipeline import (
    DATASET_NAMES,
    Dataset,
    build_dataset,
    dataset_family,
    default_data_config,
    image_size,
    subset_seed,
    unused_fields,
)
from transfusion_jax.data.preprocess import Normalization, get_normalization
from transfusion_jax.data.readers import BadImageError, DatasetFormatError, TooManyBadImagesError
from transfusion_jax.data.tasks import CHEXPERT_PATHOLOGIES, TaskInfo

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "build_dataset",
    "dataset_family",
    "default_data_config",
    "image_size",
    "subset_seed",
    "unused_fields",
    "Normalization",
    "get_normalization",
    "BadImageError",
    "DatasetFormatError",
    "TooManyBadImagesError",
    "CHEXPERT_PATHOLOGIES",
    "TaskInfo",
]
