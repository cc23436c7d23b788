"""RunWeights.initial() must be the very weights training started from (the analyses of similarity to init and of
weight change depend on it): the trainer saves them at step 0 as init.npz. With a zero learning rate training leaves
params where they started, so a run's exported final params must equal its saved initial params exactly."""

import os

import chex

from transfusion_jax.experiments.run_weights import RunWeights
from transfusion_jax.experiments.runs import load_config_module
from transfusion_jax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_initial_weights_are_the_ones_training_started_from(tmp_path):
    # mean_var draws from the scheme's own RNG and a (local stand-in) checkpoint: the hardest init to get right.
    config = load_config_module(os.path.join(REPO, "configs", "hybrid.py")).get_config("cbr_small,mean_var,local")
    config.optimizer.learning_rate = 0.0
    config.num_train_steps = 2
    config.export_pretrained = True
    trainer.train_and_evaluate(config, str(tmp_path))

    run = RunWeights(str(tmp_path))
    chex.assert_trees_all_equal(run.initial()["params"], run.final()["params"])
    # The stand-in checkpoint moving away (or changing) does not change what the run started from.
    os.rename(tmp_path / "config.json", tmp_path / "config.json.bak")
    with open(tmp_path / "config.json.bak") as f, open(tmp_path / "config.json", "w") as g:
        g.write(f.read().replace('"stand-in"', '"/nowhere/moved.npz"'))
    chex.assert_trees_all_equal(RunWeights(str(tmp_path)).initial()["params"], run.final()["params"])
