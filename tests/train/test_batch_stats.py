"""BatchNorm statistics recomputed in train mode (train/batch_stats.py): against NumPy forward passes (a two-BN MLP,
and the CBR a run trains, from its own first training batches), what a run starts from and its init.npz records, and
the statistics step 1 keeps fixed (frozen blocks, a linear probe's backbone) left alone."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_events import CompileEvents
from fake_data import FakeDataset, route_build_dataset, tiny_config
from numpy.lib.stride_tricks import sliding_window_view

from transfusion_jax import pretrained
from transfusion_jax.models import get_model
from transfusion_jax.surgery import tree
from transfusion_jax.train import batch_stats, partition, rundir, trainer
from transfusion_jax.train import state as state_lib


class TwoBN(nn.Module):
    """Dense -> BN(momentum 0.9) -> relu -> Dense -> BN(momentum 0.99): the second BN's input depends on the first
    BN's train-mode normalisation, so a reference must run the whole forward pass in train mode."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(5, name="d1")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn1")(x))
        x = nn.Dense(3, name="d2")(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.99, name="bn2")(x), {}


def numpy_bn_stats(params, batches):
    """Per batch: train-mode forward in float64 with batch statistics (biased variance, eps 1e-5); then averages."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    per_batch = []
    for x in batches:
        h = x @ p["d1"]["kernel"] + p["d1"]["bias"]
        m1, v1 = h.mean(0), h.var(0)
        h = np.maximum((h - m1) / np.sqrt(v1 + 1e-5) * p["bn1"]["scale"] + p["bn1"]["bias"], 0)
        h = h @ p["d2"]["kernel"] + p["d2"]["bias"]
        per_batch.append((m1, v1, h.mean(0), h.var(0)))
    return [np.mean([s[i] for s in per_batch], axis=0) for i in range(4)]


def test_recomputed_statistics_equal_a_numpy_train_mode_forward():
    model = TwoBN()
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(32, 4)) * 2 + 1).astype(np.float32) for _ in range(3)]
    variables = model.init(jax.random.key(0), batches[0], train=False)
    variables = {
        "params": jax.tree_util.tree_map(lambda a: a + 0.3 * rng.normal(size=a.shape), variables["params"]),
        "batch_stats": jax.tree_util.tree_map(lambda a: a + 7.0, variables["batch_stats"]),  # stale: must not leak
    }
    stats = batch_stats.recompute_batch_stats(
        model, variables, [{"image": b, "valid": np.ones(32, bool)} for b in batches]
    )
    m1, v1, m2, v2 = numpy_bn_stats(variables["params"], batches)
    np.testing.assert_allclose(stats["bn1"]["mean"], m1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["bn1"]["var"], v1, rtol=1e-5)
    np.testing.assert_allclose(stats["bn2"]["mean"], m2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["bn2"]["var"], v2, rtol=1e-5)
    with pytest.raises(ValueError, match="padding rows"):
        batch_stats.recompute_batch_stats(model, variables, [{"image": batches[0], "valid": np.arange(32) < 30}])


@pytest.mark.parametrize("name,size", [("resnet50", 32), ("inception_v3", 75), ("cbr_larget", 32)])
def test_every_batchnorm_of_every_family_has_a_known_momentum(name, size):
    """Traced only: the momentum read for BN recomputation covers every batch_stats leaf of each model family."""
    model = get_model(name, 2)
    x = jnp.zeros((2, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    momenta = batch_stats.bn_momenta(model, variables, x)
    modules = {tuple(k.split("/")[1:-1]) for k in tree.flatten({"batch_stats": variables["batch_stats"]})}
    assert set(momenta) == modules and set(momenta.values()) == {0.9}


# ----- what a run starts from -------------------------------------------------------------------------------------


@pytest.fixture
def fake_data(monkeypatch):
    route_build_dataset(monkeypatch)


def _conv_same(x, kernel):
    """float64 'SAME' convolution, stride 1, no bias: x [B, H, W, C], kernel [k, k, C, F]."""
    k = kernel.shape[0]
    padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    patches = sliding_window_view(padded, (k, k), axis=(1, 2))  # [B, H, W, C, k, k]
    return np.einsum("bhwcij,ijcf->bhwf", patches, kernel)


def _max_pool(x):
    """3 x 3 windows, stride 2, VALID (the CBRs' pool)."""
    windows = sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
    return windows.max(axis=(-2, -1))


def numpy_cbr_stats(params, batches):
    """Per batch, the CBR's train-mode forward in float64 (conv, BN with the batch's statistics, ReLU, max-pool) and
    each BN layer's batch mean and biased variance, taken from that layer's input; averaged over the batches."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    per_layer = {}
    for x in batches:
        h = np.asarray(x, np.float64)
        for layer in ("layer1", "layer2"):
            h = _conv_same(h, p[layer]["conv"]["kernel"])
            mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
            per_layer.setdefault(layer, []).append((mean, var))
            bn = p[layer]["bn"]
            h = _max_pool(np.maximum((h - mean) / np.sqrt(var + 1e-5) * bn["scale"] + bn["bias"], 0.0))
    return {layer: [np.mean([s[i] for s in stats], axis=0) for i in (0, 1)] for layer, stats in per_layer.items()}


@pytest.mark.parametrize("init", ["random", "mean_var"])
def test_a_run_starts_from_the_statistics_of_its_first_training_batches(fake_data, tmp_path, init):
    """init.npz (what step 1 starts from, what every analysis "at init" reads) carries each BN layer's mean and
    variance over the run's first 3 training batches in train mode, equal to a NumPy forward pass over those
    batches to 1e-5; no BN entry keeps the initialiser's placeholders 0 / 1."""
    config = tiny_config(num_train_steps=2, eval_every_steps=2, init_bn_batches=3, seed=4)
    if init == "mean_var":
        source = str(tmp_path / "source")
        trainer.train_and_evaluate(tiny_config(num_train_steps=4, export_pretrained=True), source)
        config.update(init="mean_var", pretrained=f"{source}/{rundir.FINAL}")
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(config, workdir)
    variables, _ = pretrained.load(f"{workdir}/{rundir.INIT}")
    stream = FakeDataset(64, size=8, train=True, seed=0, name="train").batches(
        config.batch_size, mesh=partition.make_data_mesh(), seed=config.seed
    )
    first = [np.asarray(next(stream)["image"]) for _ in range(3)]
    expected = numpy_cbr_stats(variables["params"], first)
    for layer, (mean, var) in expected.items():
        got = variables["batch_stats"][layer]["bn"]
        np.testing.assert_allclose(got["mean"], mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["var"], var, rtol=1e-5)
        assert not np.allclose(got["mean"], 0.0) and not np.allclose(got["var"], 1.0)


def test_statistics_step_one_keeps_fixed_are_left_alone(fake_data, tmp_path):
    """A linear probe runs its backbone in eval mode (its running statistics are what step 1 computes with), and
    config.freeze fixes the statistics of what it freezes: both stay the checkpoint's; the rest is recomputed."""
    source = str(tmp_path / "source")
    trainer.train_and_evaluate(tiny_config(num_train_steps=4, export_pretrained=True), source)
    checkpoint = f"{source}/{rundir.FINAL}"
    pretrained_stats = pretrained.load(checkpoint)[0]["batch_stats"]
    probe = tiny_config(num_train_steps=2, eval_every_steps=2, init="transfer", pretrained=checkpoint)
    probe.finetune.protocol = "linear_probe"
    trainer.train_and_evaluate(probe, str(tmp_path / "probe"))
    got = pretrained.load(str(tmp_path / "probe" / rundir.INIT))[0]["batch_stats"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, pretrained_stats)
    frozen = tiny_config(num_train_steps=2, eval_every_steps=2, init="transfer", pretrained=checkpoint)
    frozen.freeze = ("layer1",)
    trainer.train_and_evaluate(frozen, str(tmp_path / "frozen"))
    got = pretrained.load(str(tmp_path / "frozen" / rundir.INIT))[0]["batch_stats"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, got["layer1"], pretrained_stats["layer1"])
    assert not np.allclose(got["layer2"]["bn"]["var"], pretrained_stats["layer2"]["bn"]["var"])


def test_no_batches_keeps_the_inits_own_statistics(fake_data, tmp_path):
    trainer.train_and_evaluate(tiny_config(num_train_steps=2, eval_every_steps=2, init_bn_batches=0), str(tmp_path))
    stats = pretrained.load(str(tmp_path / rundir.INIT))[0]["batch_stats"]
    assert all(np.all(s["bn"]["mean"] == 0) and np.all(s["bn"]["var"] == 1) for s in stats.values())


def test_the_statistics_pass_leaves_training_unchanged(fake_data, tmp_path):
    """The statistics are read from a second reader of the training stream: the batches step 1 onwards sees, and so
    every trained parameter, are the same with or without the pass (only running statistics may differ)."""
    finals = []
    for batches in (0, 3):
        workdir = str(tmp_path / f"bn_{batches}")
        config = tiny_config(num_train_steps=3, eval_every_steps=3, init_bn_batches=batches, export_pretrained=True)
        trainer.train_and_evaluate(config, workdir)
        finals.append(pretrained.load(f"{workdir}/{rundir.FINAL}")[0]["params"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, *finals)


def test_equal_models_of_different_runs_trace_the_statistics_and_init_programs_once():
    """A study builds each run's own model (widths from a config, a list or a tuple); equal architectures share the
    init and statistics programs in a process. Fails if either is traced again for the second, equal model."""
    images = [np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32) for _ in range(2)]
    first = get_model("cbr_small", 2, widths=(3, 5))
    variables = state_lib.random_variables(first, jax.random.key(0), images[0][:1])
    expected = batch_stats.recompute_batch_stats(first, variables, images)
    with CompileEvents() as compiles:
        second = get_model("cbr_small", 2, widths=[3, 5])
        again = state_lib.random_variables(second, jax.random.key(0), images[0][:1])
        stats = batch_stats.recompute_batch_stats(second, again, images)
    assert compiles.traces() == []
    chex.assert_trees_all_equal(again, variables)
    chex.assert_trees_all_equal(stats, expected)
