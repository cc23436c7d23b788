"""Very small data: 5000 Retina training examples, random init vs transfer: paper Table 3.

Launch (arg 'MODEL,INIT[,local]'; any of the six paper models, INIT random or transfer, or mean_var for the
feature-reuse decomposition at this data size, docs/instruments.md):
  python -m transfusion_jax.main --config=configs/retina_small.py:resnet50,transfer --workdir=$WORKDIR \
      --config.data.root=/path/to/kaggle_dr --config.pretrained=/path/to/imagenet.npz
Targets (Table 3, AUC %, random / transfer): ResNet-50 92.2 / 94.6, CBR-LargeT 93.6 / 93.9,
CBR-LargeW 93.6 / 93.7 (other models UNCONFIRMED). The 5000 training images are a class-stratified random sample
drawn per seed (config.data.subset_seed=-1 follows config.seed, so the spread over seeds includes the subset's;
the same subset for every init at one seed; its ids are saved in the workdir's train_subset.json; the paper's
sampling is UNCONFIRMED). Validation (Kaggle Public) and test (Private) are always the full splits.
Steps: 30k at batch 32 (about 190 passes over 5000; the paper's length here is UNCONFIRMED). Small-data runs
overfit, so the test AUC at the validation-selected step (summary.json: test.selected) matters here beside the
final step's; the best/ checkpoint is that step's.
"""

from transfusion_jax.train import config_lib

INITS = ("random", "transfer", "mean_var")


def get_config(arg: str = "resnet50,random"):
    a = config_lib.parse_arg(arg)
    config_lib.check_choice("model", a["model"], config_lib.PAPER_MODELS, "configs/retina_small.py")
    config_lib.check_choice("init", a["init"], INITS, "configs/retina_small.py")
    c = config_lib.retina_config(a["model"], a["init"])
    c.data.subset_size = 5000
    c.num_train_steps = 30_000
    return config_lib.apply_runlocal(c) if a["local"] else c
