"""`pretrain(config, workdir)`: a self-supervised pretraining run, from unlabeled images to `pretrained.npz`.

What it shares with a supervised run (train/): the ('data',) mesh and its data-parallel jit, the data pipeline (any
reader; its labels ignored), the init schemes for the encoder's starting point, the orbax checkpoints with their
checksum manifests and recovery (train/checkpoint.Checkpointer), metrics.jsonl and TensorBoard (train/writer), and
the checkpoint format of the export (train/export). Resume is exact as there: the state comes from the latest intact
checkpoint, the images restart at that step, each step's views are drawn from (seed, step), and the metrics logged
after that step by a killed run are dropped and recomputed, so a run killed and restarted ends bit-identical to an
unbroken one.

Workdir: config.json; metrics.jsonl and tensorboard/ (train: loss, learning_rate, grad_norm, projection_std,
contrastive_accuracy (SimCLR) or momentum (BYOL), steps_per_second); checkpoints/; init.npz (the encoder at step 0)
and, at the end, pretrained.npz (the online encoder only: no projector, predictor or target network) and
summary.json.
"""

import dataclasses
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from tqdm import tqdm

from transfusion_jax import data as data_lib
from transfusion_jax.data import pipeline
from transfusion_jax.ssl import steps as ssl_steps
from transfusion_jax.ssl import views
from transfusion_jax.ssl.nets import FEATURE
from transfusion_jax.train import export, partition, preflight, rundir
from transfusion_jax.train import state as state_lib
from transfusion_jax.train.checkpoint import Checkpointer, same_on_all_processes
from transfusion_jax.train.steps import step_rng
from transfusion_jax.train.trainer import NonFiniteLossError
from transfusion_jax.train.writer import MetricWriter, dumps

# The encoder is built with a one-output task head (every model has one); it never trains and is exported as zeros.
ENCODER_OUTPUTS = 1
# The batch is decoded without augmentation and without normalisation (pixels / 255): the views are made and
# normalised on the devices, inside the step.
_RAW = "none"


def resolve(config):
    """A copy of `config` with the input normalisation resolved (a starting checkpoint's, else the configured or
    default preset) and every choice checked, before anything is read."""
    config = config.copy_and_resolve_references()
    ssl_steps.check_method(config.ssl.method)
    if config.data.augment.enabled:
        raise preflight.ConfigError(
            "config.data.augment.enabled is True: self-supervised runs make their own views (config.ssl.views); "
            "leave data.augment disabled."
        )
    if config.data.block_shuffle.block_size:
        raise preflight.ConfigError("config.data.block_shuffle is not supported by self-supervised runs.")
    unused = data_lib.unused_fields(config.data)
    if unused:
        raise preflight.ConfigError("Config fields this run would not use: " + "; ".join(unused) + ".")
    with config.unlocked():
        config.data.normalization = preflight.resolve_normalization(config)
    view_config(config)  # ranges checked now, not at the first step
    return config


def view_config(config) -> views.ViewConfig:
    """config.ssl.views as a ViewConfig, its flips 'auto' resolved to the task's (data.pipeline.TASK_FLIPS)."""
    v = dict(config.ssl.views)
    flips = v.pop("flips")
    if flips == "auto":
        flips = pipeline.TASK_FLIPS.get(data_lib.dataset_family(config.data), "horizontal")
    if flips not in pipeline.FLIPS:
        raise ValueError(f"config.ssl.views.flips must be 'auto' or one of {sorted(pipeline.FLIPS)}, got {flips!r}.")
    hflip, vflip = pipeline.FLIPS[flips]
    tuples = {k: tuple(v.pop(k)) for k in ("crop_scale", "aspect", "blur_sigma")}
    return views.ViewConfig(hflip=hflip, vflip=vflip, **tuples, **v)


def image_dataset(config) -> data_lib.Dataset:
    """The training images, decoded and resized as any run's, without augmentation or normalisation."""
    raw = config.copy_and_resolve_references()
    with raw.unlocked():
        raw.data.normalization = _RAW
    return data_lib.build_dataset(raw, config.train_split, train=True)


def warmup_steps(config, examples: int) -> int:
    opt = config.optimizer
    if opt.warmup_epochs < 0 or opt.warmup_steps < 0:
        raise preflight.ConfigError("config.optimizer.warmup_epochs and warmup_steps must be >= 0.")
    if opt.warmup_epochs:
        return round(opt.warmup_epochs * examples / config.batch_size)
    return int(opt.warmup_steps)


def encoder_feature_dim(encoder, sample_input) -> int:
    (_, features), _ = jax.eval_shape(
        lambda x: encoder.init_with_output(jax.random.key(0), x, train=False), sample_input
    )
    if FEATURE not in features:
        raise ValueError(f"{type(encoder).__name__} returns no {FEATURE!r} feature; it returns {list(features)}.")
    return int(features[FEATURE].shape[-1])


def initial_variables(config, net, encoder, sample_input) -> dict:
    """The online network's step-0 variables: the encoder from `config.init` (the supervised runs' init schemes:
    'random' is the same draw a supervised run of this seed starts from), the heads freshly initialised."""
    encoder_rng, heads_rng = jax.random.split(jax.random.key(config.seed))
    fresh = jax.jit(lambda r, x: net.init(r, x, train=False))(heads_rng, sample_input)
    body = state_lib.init_variables(config, encoder, encoder_rng, sample_input)
    params, stats = dict(fresh["params"]), dict(fresh.get("batch_stats", {}))
    params["encoder"], stats["encoder"] = body["params"], body["batch_stats"]
    return {"params": params, "batch_stats": stats}


def encoder_variables(params, batch_stats) -> dict:
    """The online encoder's variables, its never-trained task head zeroed (so no one mistakes it for a classifier;
    transfer and the other schemes drop it anyway)."""
    encoder = dict(params["encoder"])
    for head in ("head", "aux_logits"):
        if head in encoder:
            encoder[head] = jax.tree.map(jnp.zeros_like, encoder[head])
    return {"params": encoder, "batch_stats": batch_stats.get("encoder", {})}


def describe_training(config, examples: int, num_steps: int) -> dict:
    """What the export's metadata records about how the encoder was trained."""
    data = {k: config.data[k] for k in ("name", "root", "data_dir", "tfds_name", "image_size", "subset_size")}
    data.update(split=config.train_split, examples=examples, image_size=data_lib.image_size(config))
    return {
        "method": config.ssl.method,
        "steps": num_steps,
        "batch_size": config.batch_size,
        "epochs": num_steps * config.batch_size / examples,
        "seed": config.seed,
        "init": config.init,
        "data": data,
        "views": dataclasses.asdict(view_config(config)),
        "ssl": config.ssl.to_dict(),
        "optimizer": config.optimizer.to_dict(),
        "head": "zeros: self-supervised pretraining trains no classifier",
    }


class _Log:
    """The train metrics since the last log, their mean written at each log step; the run stops at a NaN."""

    def __init__(self, writer: MetricWriter, schedule, start_step: int):
        self.writer, self.schedule = writer, schedule
        self.pending: list[tuple[int, dict]] = []
        self._tick, self._tick_step = time.perf_counter(), start_step

    def write(self, done: int) -> dict:
        host = jax.device_get([m for _, m in self.pending])
        bad = [i for i, m in enumerate(host) if not np.isfinite(m["loss"])]
        first_bad = int(same_on_all_processes(bad[0] if bad else -1))
        if first_bad >= 0:
            step = self.pending[first_bad][0]
            raise NonFiniteLossError(
                f"Self-supervised loss is {float(host[first_bad]['loss'])} at step {step}; stopping. Lower "
                "config.optimizer.base_learning_rate or set config.optimizer.grad_clip_norm."
            )
        logged = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        now = time.perf_counter()
        logged.update(
            learning_rate=float(self.schedule(done - 1)), steps_per_second=(done - self._tick_step) / (now - self._tick)
        )
        self._tick, self._tick_step, self.pending = now, done, []
        self.writer.write(done, "train", logged)
        return logged


def pretrain(config, workdir: str) -> dict:
    """Pretrains config.model with config.ssl.method on the images of config.data (resuming from the workdir's
    latest intact checkpoint); writes pretrained.npz and summary.json; returns the summary."""
    start_time = time.perf_counter()
    mesh = partition.make_data_mesh()
    lead = jax.process_index() == 0
    workdir = epath.Path(workdir)
    config = resolve(config)
    partition.check_batch_size(config.batch_size, mesh)
    preflight.check_input_size(config)
    dataset = image_dataset(config)
    dataset.check()
    examples = len(dataset)
    num_steps = preflight.num_train_steps(config, examples)
    warmup = warmup_steps(config, examples)
    with config.unlocked():
        config.num_train_steps = num_steps
    if lead:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / rundir.CONFIG).write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    logging.info(
        "%s on %d images of %s/%s: %d steps of %d (%.1f epochs), warmup %d",
        config.ssl.method,
        examples,
        config.data.name,
        config.train_split,
        num_steps,
        config.batch_size,
        num_steps * config.batch_size / examples,
        warmup,
    )
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints, keep_best=1)
    start = ckpt.start_step
    writer = None
    try:
        size = data_lib.image_size(config)
        sample = jnp.zeros((1, size, size, 3), jnp.float32)
        encoder = state_lib.build_model(config, ENCODER_OUTPUTS)
        net, target_net = ssl_steps.build_nets(config, encoder, encoder_feature_dim(encoder, sample))
        variables = initial_variables(config, net, encoder, sample)
        tx, schedule = ssl_steps.make_optimizer(config, variables["params"], num_steps, warmup)
        state = ssl_steps.init_state(net, target_net, tx, variables)
        if lead and not start:  # the encoder step 1 starts from, as the analyses' "init"
            _export(config, state, workdir / rundir.INIT, f"init:{workdir}", None)
        state = jax.device_put(state, partition.replicated(mesh))
        writer = MetricWriter(workdir, start_step=start, enabled=lead)
        if start:
            logging.info("Resuming from the checkpoint at step %d in %s", start, workdir)
            state, _ = ckpt.restore(start, like=state)
        normalization = data_lib.get_normalization(config.data.normalization)
        train_step = ssl_steps.make_train_step(
            config, net, target_net, tx, view_config(config), normalization, mesh, num_steps
        )
        log = _Log(writer, schedule, start)
        batches = dataset.batches(config.batch_size, mesh=mesh, seed=config.seed, start_step=start)
        bar = tqdm(total=num_steps, initial=start, unit="step", disable=not (lead and config.progress_bar))
        try:
            for step in range(start, num_steps):
                batch = next(batches)
                state, metrics = train_step(
                    state, {"image": batch["image"], "valid": batch["valid"]}, step_rng(config.seed, step)
                )
                done = step + 1
                log.pending.append((done, metrics))
                bar.update(1)
                is_ckpt = done % config.checkpoint_every_steps == 0 or done == num_steps
                if done % config.log_every_steps == 0 or is_ckpt:
                    bar.set_postfix(loss=f"{log.write(done)['loss']:.4f}")
                if is_ckpt:
                    ckpt.save(done, state, {})
        finally:
            bar.close()
            batches.close()
    finally:  # an error (e.g. a NaN loss) still finalises the checkpoints already started
        ckpt.close()
        if writer is not None:
            writer.close()
    summary = {
        "method": config.ssl.method,
        "model": config.model.to_dict(),
        "train_split": config.train_split,
        "train_examples": examples,
        "num_train_steps": num_steps,
        "warmup_steps": warmup,
        "batch_size": config.batch_size,
        "epochs": num_steps * config.batch_size / examples,
        "resumed_from": start,
        "final": _last_train_record(writer),
        "seconds": time.perf_counter() - start_time,
        "pretrained": rundir.FINAL,
    }
    if lead:
        training = describe_training(config, examples, num_steps)
        _export(config, state, workdir / rundir.FINAL, f"ssl:{config.ssl.method}:{workdir}", training)
        (workdir / rundir.SUMMARY).write_text(dumps(summary, indent=2) + "\n")
    logging.info("Self-supervised run summary: %s", summary)
    return summary


def _last_train_record(writer: MetricWriter) -> dict:
    """The last logged train metrics (of this run or, when it resumed at its end, of the one before)."""
    train = [r for r in writer.records() if r["split"] == "train"]
    return {k: v for k, v in train[-1].items() if k not in ("split", "steps_per_second")} if train else {}


def _export(config, state, path: epath.Path, source: str, training: dict | None) -> None:
    export.export_pretrained(
        str(path),
        encoder_variables(state.params, state.batch_stats),
        architecture=config.model.name,
        model_overrides=dict(config.model.overrides),
        num_classes=ENCODER_OUTPUTS,
        normalization=config.data.normalization,
        source=source,
        extra={"self_supervised": training} if training is not None else None,
    )
