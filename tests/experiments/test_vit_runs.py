"""ViT runs end to end: two seeds of configs/retina.py's local ViT trained as one stacked program by the real trainer,
then a CCA between the two runs' blocks through the analysis pipeline, checked against a NumPy CCA of the same rows."""

import numpy as np
import pytest

from transfusion_jax.analysis import activations
from transfusion_jax.analysis.activations import Reduction
from transfusion_jax.experiments import run_weights, runs
from transfusion_jax.models import feature_names


def mean_cca(x, y) -> float:
    """The mean canonical correlation in float64: singular values of Qx^T Qy of the centred rows' QR factors."""
    qx = np.linalg.qr(np.asarray(x, np.float64) - np.mean(x, axis=0))[0]
    qy = np.linalg.qr(np.asarray(y, np.float64) - np.mean(y, axis=0))[0]
    return float(np.linalg.svd(qx.T @ qy, compute_uv=False).mean())


@pytest.fixture(scope="module")
def two_vit_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit_runs")
    module = runs.load_config_module("configs/retina.py")
    configs = []
    for seed in (0, 1):
        c = module.get_config("vit_ti16,random,local")
        c.seed, c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = seed, 4, 4, 4
        c.export_pretrained, c.progress_bar = True, False
        configs.append(c)
    dirs = [str(root / f"seed_{seed}") for seed in (0, 1)]
    summaries = runs.train_many(list(zip(configs, dirs)), log=lambda _: None)
    return configs, dirs, summaries


def test_local_vit_runs_of_the_retina_config_train(two_vit_runs):
    configs, dirs, summaries = two_vit_runs
    assert configs[0].model.name == "vit_ti16" and configs[0].optimizer.name == "adamw"
    assert configs[0].finetune.layer_decay == 1.0  # random init: no layer-wise decay
    for summary in summaries:
        assert summary["final_step"] == 4 and summary["runs_in_program"] == 2  # the two seeds as one program
        assert 0.0 <= summary["test"]["final"]["auc"] <= 1.0


def test_cca_between_two_vit_runs_blocks(two_vit_runs):
    configs, dirs, _ = two_vit_runs
    run_a, run_b = run_weights.load_runs(dirs)
    batches = run_weights.eval_batches(configs[0], batch_size=16, max_images=32)
    assert batches[0].shape[1:] == (32, 32, 3)
    reduction = Reduction(mode="positions", seed=0)
    result = activations.compare_models((run_a.apply, run_a.final()), (run_b.apply, run_b.final()), batches, "cca")
    names = feature_names("vit_ti16", **dict(configs[0].model.overrides))
    assert set(result) == {f"{n}/{n}" for n in names}
    for scores in result.values():
        assert 0.0 < scores["score"] <= 1.0 + 1e-6
    rows = activations.collect_pair_rows(
        (run_a.apply, run_a.final()), (run_b.apply, run_b.final()), batches, ["encoderblock_5"], reduction
    )
    x, y = rows["encoderblock_5"]
    assert x.shape == (32 * 16, 16)  # 32 images x 16 patch tokens (4 x 4 grid of 8 px patches), 16 wide
    assert result["encoderblock_5/encoderblock_5"]["score"] == pytest.approx(mean_cca(x, y), abs=1e-4)
    same = activations.compare_models((run_a.apply, run_a.final()), (run_a.apply, run_a.final()), batches, "cca")
    assert all(s["score"] == pytest.approx(1.0, abs=1e-4) for s in same.values())
    assert not np.isclose(result["encoderblock_11/encoderblock_11"]["score"], 1.0, atol=1e-3)
