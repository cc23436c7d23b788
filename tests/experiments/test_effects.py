"""The report's effects section on constructed sweep workdirs (summary.json + test_scores.npz as the trainer writes
them): intervals equal analysis.stats on the same numbers, and each verdict follows the paper's claim."""

import json
import math
import os

import numpy as np
import pytest

from transfusion_jax.analysis import stats
from transfusion_jax.experiments import effects, report, runs
from transfusion_jax.train import rundir

N_TEST = 1000
LABELS = np.arange(N_TEST) % 3 == 0  # a third positive, the same test examples for every run


SHARED = np.random.default_rng(0).normal(size=N_TEST)  # what makes an image hard for every model


def _scores(signal: float, seed: int) -> np.ndarray:
    """Softmax logits [N, 2] of a model whose class-1 log-odds are signal * label + the image's shared difficulty +
    the model's own noise (models' errors on the same images are correlated, which DeLong's pairing uses)."""
    logit = signal * LABELS + SHARED + 0.08 * np.random.default_rng(seed).normal(size=N_TEST)
    return np.stack([np.zeros(N_TEST), logit], axis=1).astype(np.float32)


def _auc(scores):
    return float(stats.delong(LABELS, scores[:, 1][None])[0][0])


def _noise_seed(init, seed, when):
    return 1000 * (init != "random") + 10 * seed + when


def _run(root, group, model, init, seed, signal, steps=None, relative=None, scores=True, final_step=1000):
    workdir = runs.RunSpec(group, model, init, seed).workdir(str(root))
    os.makedirs(workdir)
    selected, final = _scores(signal, _noise_seed(init, seed, 1)), _scores(signal, _noise_seed(init, seed, 2))
    summary = {
        "final_step": final_step,
        "eval_every_steps": 10,
        "selected_step": 500,
        "auc_threshold": 0.91,
        "relative_threshold": 0.95,
        "val": {"final": {"auc": 0.9}, "steps_to_relative_threshold": relative},
        "test": {
            "final": {"step": final_step, "auc": _auc(final)},
            "selected": {"step": 500, "auc": _auc(selected)},
            "steps_to_threshold": steps,
        },
    }
    with open(os.path.join(workdir, rundir.SUMMARY), "w") as f:
        json.dump(summary, f)
    if scores:
        np.savez(
            os.path.join(workdir, rundir.TEST_SCORES),
            id=np.array([f"img{i}" for i in range(N_TEST)]),
            label=LABELS.astype(np.int32),
            label_mask=np.ones((N_TEST, 1), np.float32),
            loss=np.array("softmax"),
            label_names=np.array(["grade < 2", "grade >= 2"]),
            selected_step=np.array(500),
            selected_logits=selected,
            final_step=np.array(final_step),
            final_logits=final,
        )


def _effects(root, group):
    results = [r for r in report.collect(str(root)) if r.group == group]
    return {(e.model, e.init, e.measure): e for e in effects.effects(group, results)}


def test_auc_interval_is_stats_on_the_saved_scores_and_equal_models_are_supported(tmp_path):
    for seed in range(3):
        _run(tmp_path, "retina", "cbr_small", "random", seed, signal=2.0)
        _run(tmp_path, "retina", "cbr_small", "transfer", seed, signal=2.0)
    got = _effects(tmp_path, "retina")[("cbr_small", "transfer", "test AUC at the selected step")]
    a = [_scores(2.0, _noise_seed("transfer", s, 1))[:, 1] for s in range(3)]
    b = [_scores(2.0, _noise_seed("random", s, 1))[:, 1] for s in range(3)]  # same signal, other noise
    want = stats.averaged_auc_difference(LABELS, a, b)
    assert (got.interval.low, got.interval.high) == pytest.approx((want.low, want.high), abs=1e-12)
    assert got.claim.kind == "equivalent" and got.verdict == "supported"  # Table 1's claim
    assert got.interval.n == 3 and "DeLong" in got.interval.method


def test_small_data_claims_depend_on_the_model(tmp_path):
    for seed in range(4):
        for model in ("resnet50", "cbr_larget"):
            _run(tmp_path, "retina_small", model, "random", seed, signal=1.0)
            _run(tmp_path, "retina_small", model, "transfer", seed, signal=2.5)
    found = _effects(tmp_path, "retina_small")
    big = found[("resnet50", "transfer", "test AUC at the final step")]
    small = found[("cbr_larget", "transfer", "test AUC at the final step")]
    assert big.interval.low > effects.AUC_MARGIN  # transfer's scores carry much more signal here
    assert (big.claim.kind, big.verdict) == ("greater", "supported")  # Table 3: transfer helps large models ...
    assert (small.claim.kind, small.verdict) == ("equivalent", "contradicted")  # ... and not small ones: not so here


def test_steps_with_censored_random_runs(tmp_path):
    """Five seeds: with only one-sided values (runs that never crossed), fewer seeds cannot bound the mean's other
    side either (docs/statistics.md: n ln 2 against the t threshold's drop)."""
    for seed in range(5):
        _run(tmp_path, "hybrid", "resnet50", "random", seed, 1.0, steps=None, relative=800)  # never above 0.91
        _run(tmp_path, "hybrid", "resnet50", "transfer", seed, 2.0, steps=100 + 10 * seed, relative=100)
        _run(tmp_path, "hybrid", "resnet50", "gabor", seed, 1.0, steps=None, relative=790 + 10 * seed)
    found = _effects(tmp_path, "hybrid")
    faster = found[("resnet50", "transfer", "steps to test AUC > 0.91")]
    # Random never crossed within its 1000 steps: its side is open; the other end is bounded, below ln(1 / 1.25).
    assert faster.interval.low == -math.inf and faster.interval.high < -effects.LOG_STEPS_MARGIN
    assert faster.verdict == "supported" and faster.claim.kind == "less"
    assert effects.describe(faster) == "**supported** (fewer steps)"
    both = found[("resnet50", "gabor", "steps to test AUC > 0.91")]  # nothing bounds a contrast of two open runs
    assert both.verdict == "inconclusive" and both.interval.n == 0
    relative = found[("resnet50", "gabor", "steps to validation AUC > 0.95 x final")]
    # 790-830 against 800, each seen to its 10-step cell: well inside x1.25 either way, and never of zero width.
    assert -effects.LOG_STEPS_MARGIN < relative.interval.low < 0 < relative.interval.high < effects.LOG_STEPS_MARGIN
    assert relative.verdict == "contradicted" and relative.why == "equivalent"


def test_without_scores_the_interval_is_over_seeds_only_and_one_seed_decides_nothing(tmp_path):
    for seed in range(2):
        _run(tmp_path, "retina", "cbr_tiny", "random", seed, 2.0, scores=False)
        _run(tmp_path, "retina", "cbr_tiny", "transfer", seed, 2.0, scores=seed == 0)
    _run(tmp_path, "retina", "resnet50", "random", 0, 2.0)
    _run(tmp_path, "retina", "resnet50", "transfer", 0, 4.0)
    found = _effects(tmp_path, "retina")
    assert "seeds only" in found[("cbr_tiny", "transfer", "test AUC at the final step")].interval.method
    lone = found[("resnet50", "transfer", "test AUC at the final step")]
    assert lone.verdict == "inconclusive" and "training variance unknown" in lone.why
    text = report.render(str(tmp_path))
    assert "## Effects: init - random, paired by seed (95% intervals)" in text
    assert "| resnet50 | transfer | test AUC at the final step | 1 |" in text
