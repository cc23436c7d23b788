"""The trainer configs of the study's runs (docs/study.md §3): source pretraining and fine-tuning on the target, from
the design's numbers. Pure: building a config reads and writes nothing."""

from collections.abc import Sequence

from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import RunKey, widths_of
from transfusion_jax.train import config_lib


def _common(config, c, widths: Sequence[int], steps: int, seed: int):
    config.model.name = c.family
    config.model.overrides.widths = tuple(widths)
    config.data.image_size = c.image_size
    config.data.num_workers = 0
    config.data.cache_decoded = True  # small 32 px splits read in every epoch and evaluation
    config.batch_size = c.batch_size
    config.num_train_steps = steps
    config.log_every_steps = steps
    config.checkpoint_every_steps = steps  # one checkpoint, at the end: runs are short
    config.keep_checkpoints = 1
    config.keep_best_checkpoint = False  # the analyses read the final weights; the selected step stays in the summary
    config.progress_bar = False  # one line per run instead
    config.export_pretrained = True  # final weights: the checkpoint (pretraining), the analyses' input (fine-tuning)
    config.seed = seed
    return config


def pretrain_config(c, paths: dict[str, str], model: str):
    """Source pretraining: softmax over the fractal classes, Adam at a constant rate, no augmentation (every source
    image is already a fresh instance of its class), seed 0; the held-out source images report its accuracy."""
    config = _common(config_lib.base_config(), c, c.widths[model], c.pretrain.steps, seed=0)
    config.data.name, config.data.root = "image_folder", paths["source"]
    config.data.augment.enabled = False
    config.train_split, config.val_split, config.test_split = "train", "test", ""
    config.optimizer.learning_rate, config.optimizer.schedule = c.pretrain.learning_rate, "constant"
    config.eval_every_steps = c.pretrain.eval_every
    return config


def finetune_config(c, paths: dict[str, str], key: RunKey, workdir: str):
    """The target task with the design's recipe: binary moderate DR (grade >= 2), Adam with cosine decay, the Retina
    task's augmentation, validation (Kaggle Public) at the log-spaced steps. Every init of a model names that model's
    checkpoint, so all of them read the same input normalisation (random and Gabor use it for nothing else but the
    Gabor bank's scale); Slim names the large model's. The test split is scored once, after the run
    (`measures.score_test`): evaluating 2,200 test images at every one of the ~33 evaluations would cost more than
    training."""
    config = _common(config_lib.retina_config(c.family, key.init), c, widths_of(c, key), c.finetune.steps, key.seed)
    config.data.root = paths["target"]
    config.train_split, config.val_split, config.test_split = "train", "validation", ""
    config.data.subset_size = c.target.small_train if key.data == "small" else 0  # each seed draws its own subset
    config.optimizer.learning_rate, config.optimizer.schedule = c.finetune.learning_rate, "cosine"
    config.eval_steps = tuple(int(s) for s in c.eval_steps[key.data])
    config.auc_threshold, config.relative_threshold = c.threshold, c.relative_threshold
    config.pretrained = workdir_lib.checkpoint_of(workdir, "large" if key.init == "slim" else key.model)
    return config
