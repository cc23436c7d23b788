"""Self-supervised runs end to end (configs/ssl.py's `,local` configs on generated images): the loss falls; the export
is the online encoder alone with its training in the metadata; fine-tuning with init=transfer, transfusion,
Mean-Var, the probes and the similarity measures all take it; an unknown method is refused naming the valid ones;
a run killed with SIGKILL and restarted ends bit-identical to an unbroken one."""

import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from transfusion_jax import data as data_lib
from transfusion_jax import models, pretrained, surgery
from transfusion_jax.analysis import probes, similarity
from transfusion_jax.ssl import trainer
from transfusion_jax.surgery import tree
from transfusion_jax.train import partition
from transfusion_jax.train import trainer as supervised

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 30  # the ',local' configs' length


def _config_module(name):
    spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def local_config(method):
    c = _config_module("ssl").get_config(f"cbr_small,{method},local")
    c.progress_bar = False
    return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """method -> finished workdir of its ',local' run."""
    root = tmp_path_factory.mktemp("ssl_runs")
    out = {}
    for method in ("simclr", "byol"):
        out[method] = str(root / method)
        trainer.pretrain(local_config(method), out[method])
    return out


def _train_records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == "train"]


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_loss_falls(runs, method):
    records = _train_records(runs[method])
    assert [r["step"] for r in records] == list(range(5, STEPS + 1, 5))
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]
    assert all(np.isfinite(r["loss"]) and r["projection_std"] > 0.01 for r in records)  # no collapse
    with open(os.path.join(runs[method], "summary.json")) as f:
        summary = json.load(f)
    assert summary["num_train_steps"] == STEPS and summary["final"]["loss"] == records[-1]["loss"]


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_export_is_the_online_encoder_only(runs, method):
    variables, meta = pretrained.load(os.path.join(runs[method], "pretrained.npz"))
    model = pretrained.model_from_metadata(meta)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=False))
    want = {k: v.shape for k, v in tree.flatten(shapes).items()}
    assert {k: v.shape for k, v in tree.flatten(variables).items()} == want  # exactly an encoder: no projector ...
    final = ocp.StandardCheckpointer().restore(
        os.path.join(runs[method], "checkpoints", "latest", str(STEPS), "default")
    )
    assert ("predictor" in final["params"]) == (method == "byol") and bool(final["target_params"]) == (method == "byol")
    online = {"params": final["params"]["encoder"], "batch_stats": final["batch_stats"]["encoder"]}
    for key, value in tree.flatten(variables).items():
        if tree.block_of(tree.name_of(key)) == "head":
            assert not np.any(value)  # never trained: exported as zeros
        else:
            np.testing.assert_array_equal(value, tree.flatten(online)[key])  # the online network, not the target
    if method == "byol":
        target = tree.flatten({"params": final["target_params"]["encoder"]})
        assert any(not np.array_equal(target[k], tree.flatten(online)[k]) for k in target)
    ssl = meta["self_supervised"]
    assert (ssl["method"], ssl["steps"], ssl["batch_size"]) == (method, STEPS, 16)
    assert ssl["data"]["name"] == "synthetic_retina" and ssl["data"]["examples"] == 64
    assert ssl["data"]["split"] == "train" and ssl["views"]["hflip"] and not ssl["views"]["vflip"]  # Retina's flips
    assert meta["architecture"] == "cbr_small" and meta["preprocessing"]["name"] == "torchvision"
    start, _ = pretrained.load(os.path.join(runs[method], "init.npz"))
    assert not np.array_equal(
        start["params"]["layer1"]["conv"]["kernel"], variables["params"]["layer1"]["conv"]["kernel"]
    )


def test_finetuning_with_transfer_starts_from_the_export(runs, tmp_path):
    export = os.path.join(runs["simclr"], "pretrained.npz")
    config = _config_module("retina").get_config("cbr_small,transfer,local")
    config.update(pretrained=export, num_train_steps=4, eval_every_steps=4, checkpoint_every_steps=4)
    config.progress_bar = False
    summary = supervised.train_and_evaluate(config, str(tmp_path))
    assert summary["final_step"] == 4
    start, _ = pretrained.load(str(tmp_path / "init.npz"))
    source, _ = pretrained.load(export)
    # The body's parameters exactly; its BatchNorm statistics are recomputed on the target's first training batches,
    # as every run's are (train/batch_stats.py: the network as step 1 sees it).
    body = lambda v: {  # noqa: E731
        k: x for k, x in tree.flatten(v).items() if tree.block_of(tree.name_of(k)) != "head" and k.startswith("params/")
    }
    start, source = body(start), body(source)
    assert start.keys() == source.keys()
    for key in source:
        np.testing.assert_array_equal(start[key], source[key])


def test_transfusion_mean_var_probes_and_similarity_take_the_export(runs):
    path = os.path.join(runs["byol"], "pretrained.npz")
    variables, meta = pretrained.load(path)
    overrides = meta["model_overrides"]
    model = models.get_model("cbr_small", 2, **overrides)
    fresh = model.init(jax.random.key(1), np.zeros((1, 32, 32, 3), np.float32), train=False)
    init = functools.partial(
        surgery.initialize, model_name="cbr_small", rng=jax.random.key(2), pretrained=path,
        model_overrides=overrides, loader=pretrained.load,
    )  # fmt: skip
    _, provenance = init("transfusion:layer2", variables=fresh)
    assert {tree.block_of(tree.name_of(k)) for k, v in provenance.items() if v == "checkpoint"} == {"layer1", "layer2"}
    _, provenance = init("mean_var", variables=fresh)
    assert {v for k, v in provenance.items() if "conv/kernel" in k} == {"mean_var"}
    # probes per block on labelled generated fundus images, through the export's own model
    config = local_config("byol")
    mesh = partition.make_data_mesh()
    splits = {s: data_lib.build_dataset(config, s, train=False) for s in ("train", "test")}
    encoder = pretrained.model_from_metadata(meta)
    apply = functools.partial(encoder.apply, train=False)
    task = splits["train"].task
    result = probes.layerwise_probes(
        apply, variables, splits["train"].batches(16, mesh=mesh), splits["test"].batches(16, mesh=mesh),
        kind=task.loss, label_names=task.label_names, probes=("linear",),
    )  # fmt: skip
    assert result["layers"] == list(models.feature_names("cbr_small", **overrides))
    assert all(0 <= result["linear"][b]["auc"] <= 1 for b in result["layers"])
    # the similarity of its features to those of its own initialisation
    start, _ = pretrained.load(os.path.join(runs["byol"], "init.npz"))
    images = next(splits["test"].batches(32, mesh=mesh))["image"]
    ours = probes.pooled_features(apply, variables, [images])["layer2"]
    theirs = probes.pooled_features(apply, start, [images])["layer2"]
    assert 0 < similarity.similarity(ours, theirs, "cka").score <= 1 + 1e-9


def test_unknown_method_is_refused_naming_the_valid_ones(tmp_path):
    module = _config_module("ssl")
    with pytest.raises(ValueError, match="Unknown method 'moco' in configs/ssl.py; choose one of simclr, byol"):
        module.get_config("cbr_small,moco")
    config = local_config("simclr")
    config.ssl.method = "moco"  # as --config.ssl.method=moco would
    with pytest.raises(ValueError, match="'moco'; choose one of simclr, byol"):
        trainer.pretrain(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "config.json")  # refused before anything is written


def _cli(workdir, env, *extra):
    args = [
        sys.executable,
        "-m",
        "transfusion_jax.main",
        "--config=configs/ssl.py:cbr_small,byol,local",
        f"--workdir={workdir}",
        "--config.checkpoint_every_steps=5",
        "--config.keep_checkpoints=10",
        "--config.progress_bar=False",
        *extra,
    ]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_run_killed_with_sigkill_resumes_to_identical_result(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
        "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
    }
    unbroken, killed = str(tmp_path / "unbroken"), str(tmp_path / "killed")
    reference = _cli(unbroken, env)
    victim = _cli(killed, env)
    first_ckpt = os.path.join(killed, "checkpoints", "latest", "5", "checksums.json")  # a finished checkpoint
    deadline = time.time() + 240
    while not os.path.exists(first_ckpt) and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed:\n" + victim.stdout.read()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = _cli(killed, env)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "Resuming from the checkpoint at step" in out
    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out

    def final(workdir):
        return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "latest", str(STEPS), "default"))

    a, b = jax.tree.leaves(final(unbroken)), jax.tree.leaves(final(killed))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    exports = [pretrained.load(os.path.join(w, "pretrained.npz"))[0] for w in (unbroken, killed)]
    for x, y in zip(jax.tree.leaves(exports[0]), jax.tree.leaves(exports[1]), strict=True):
        np.testing.assert_array_equal(x, y)
    drop_timing = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_second"} for r in rs]  # noqa: E731
    assert drop_timing(_train_records(unbroken)) == drop_timing(_train_records(killed))
    assert len(_train_records(killed)) == STEPS // 5  # each step's record once


def test_cli_refuses_an_unknown_method(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "transfusion_jax.main", "--config=configs/ssl.py:cbr_small,moco,local",
         f"--workdir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip
    assert result.returncode != 0
    assert "choose one of simclr, byol" in result.stderr
