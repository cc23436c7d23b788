"""Environment for the processes these tests start (the quickstart CLI, notebook kernels): one persistent JAX
compilation cache shared by all of them (they compile the same tiny programs, so only the first pays), a single CPU
device as a user's laptop has (not the 8 fake devices of the in-process tests), and the checkout on PYTHONPATH.

`trained`: real trainer workdirs (generated data, a 3-step pretrain, 4-step fine-tunes from random seeds 0 and 1
and from the pretrained weights), made once per session for every analysis test of finished runs."""

import os

import pytest

from transfusion_jax.experiments import runs, toy_runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def child_env(tmp_path_factory):
    return {
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
    }


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Three finished workdirs of the real trainer: random seed 0, random seed 1, transfer seed 0."""
    root = str(tmp_path_factory.mktemp("analysis_runs"))
    s = toy_runs.load_config(
        [
            "source_train=32",
            "source_test=8",
            "target_train=48",
            "target_test=32",
            "pretrain_steps=3",
            "finetune_steps=4",
            "eval_every=4",
            "batch_size=16",
        ],
    )
    paths = toy_runs.make_data(root, s)
    pretrained = f"{root}/runs/pretrain/pretrained.npz"
    runs.run(toy_runs.pretrain_config(paths, s), f"{root}/runs/pretrain")
    dirs = {}
    for init, seed in (("random", 0), ("random", 1), ("transfer", 0)):
        dirs[f"{init}{seed}"] = toy_runs.run_dir(root, init, seed)
        runs.run(toy_runs.finetune_config(paths, s, init, seed, pretrained), dirs[f"{init}{seed}"])
    return dirs
