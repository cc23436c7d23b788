"""`train_and_evaluate(config, workdir)`: the training loop with periodic evaluation, checkpoints and resume.

Resume is exact: state comes from the latest checkpoint, the data stream restarts at that step (`start_step`), each
step's RNG is a function of (seed, step), and metrics/best checkpoints written after that step by the killed run are
dropped and recomputed.
"""

import functools
import itertools
import json
import logging
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from tqdm import tqdm

from transfusion_jax import data as data_lib
from transfusion_jax.train import export, partition, protocols, steps
from transfusion_jax.train import metrics as metrics_lib
from transfusion_jax.train import state as state_lib
from transfusion_jax.train.checkpoint import Checkpointer, same_on_all_processes
from transfusion_jax.train.writer import MetricWriter


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stops rather than train on garbage."""


def _to_host(x) -> np.ndarray:
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def evaluate(
    eval_step, state, dataset, batch_size: int, mesh, calibration_bins: int = metrics_lib.DEFAULT_CALIBRATION_BINS
) -> dict:
    """Loss, AUCs and calibration over the whole split: every example exactly once (padding rows are dropped by
    `valid`). Every value is a float except 'reliability', the reliability diagram per output (a nested dict)."""
    task = dataset.task
    parts: dict[str, list[np.ndarray]] = {"scores": [], "label": [], "label_mask": [], "valid": []}
    loss_sum, loss_count = 0.0, 0.0
    for batch in dataset.batches(batch_size, mesh=mesh):
        out = eval_step(state, batch)
        loss_sum += float(out["loss_sum"])
        loss_count += float(out["loss_count"])
        parts["scores"].append(_to_host(out["scores"]))
        for key in ("label", "label_mask", "valid"):
            parts[key].append(_to_host(batch[key]))
    host = {k: np.concatenate(v) for k, v in parts.items()}
    valid = host["valid"].astype(bool)
    scores, labels, mask = host["scores"][valid], host["label"][valid], host["label_mask"][valid]
    result = {"loss": loss_sum / max(loss_count, 1.0), "num_examples": float(valid.sum())}
    result.update(metrics_lib.auc_metrics(task.loss, task.label_names, scores, labels, mask))
    diagram = metrics_lib.reliability_diagram(task.loss, task.label_names, scores, labels, mask, calibration_bins)
    result.update(metrics_lib.ece_metrics(diagram), reliability=diagram)
    if task.loss == "softmax":
        result.update(metrics_lib.accuracy_metrics(scores, labels))
    return result


def _check_finite(pending: list[tuple[int, dict]]) -> dict[str, float]:
    """Mean of the pending train metrics; raises at the first step whose loss is not finite (process 0's finding,
    so that every process stops at the same step rather than leave the others waiting in a collective)."""
    host = jax.device_get([m for _, m in pending])
    bad = [i for i, m in enumerate(host) if not np.isfinite(m["loss"])]
    first_bad = int(same_on_all_processes(bad[0] if bad else -1))
    if first_bad >= 0:
        step, loss = pending[first_bad][0], float(host[first_bad]["loss"])
        raise NonFiniteLossError(
            f"Training loss is {loss} at step {step}; stopping. Lower the learning rate, try "
            f"--config.optimizer.grad_clip_norm, or check the data for bad values."
        )
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def _write_config(config, workdir: epath.Path) -> None:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def _summary(records: list[dict], threshold: float) -> dict:
    evals = [r for r in records if r["split"] == "eval"]
    finite = [r for r in evals if _finite_auc(r) is not None]
    best = max(finite, key=lambda r: r["auc"]) if finite else None
    return {
        "final_eval": evals[-1] if evals else None,
        "best_auc": best["auc"] if best else None,
        "best_step": best["step"] if best else None,
        "auc_threshold": threshold,
        "steps_to_threshold": metrics_lib.first_step_reaching(evals, "auc", threshold),
    }


def _finite_auc(record: dict) -> float | None:
    value = record.get("auc")
    return value if isinstance(value, float) and math.isfinite(value) else None


def _export_variables(config, task, state, path: epath.Path, source: str) -> None:
    export.export_pretrained(
        str(path),
        {"params": state.params, "batch_stats": state.batch_stats},
        architecture=config.model.name,
        model_overrides=dict(config.model.overrides),
        num_classes=task.num_outputs,
        normalization=config.data.normalization,
        source=source,
    )


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint if any); returns the run summary."""
    workdir = epath.Path(workdir)
    lead = jax.process_index() == 0
    if lead:
        workdir.mkdir(parents=True, exist_ok=True)
        _write_config(config, workdir)
    mesh = partition.make_data_mesh()
    partition.check_batch_size(config.batch_size, mesh)
    eval_batch_size = config.eval_batch_size or config.batch_size
    partition.check_batch_size(eval_batch_size, mesh)

    train_ds = data_lib.build_dataset(config, config.train_split, train=True)
    eval_ds = data_lib.build_dataset(config, config.eval_split, train=False)
    task = train_ds.task
    model = state_lib.build_model(config, task.num_outputs)
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints, keep_best=1)
    start = ckpt.start_step
    batches = train_ds.batches(config.batch_size, mesh=mesh, seed=config.seed, start_step=start)
    first = next(batches)
    sample_input = jnp.zeros((1,) + first["image"].shape[1:], jnp.float32)
    batches = itertools.chain([first], batches)
    state, tx, schedule = state_lib.create_train_state(config, model, jax.random.key(config.seed), sample_input)
    if lead and not start:  # what step 1 starts from, as the analyses' "init" (one file, whatever the scheme)
        _export_variables(config, task, state, workdir / export.INIT_FILE, f"init:{workdir}")
    state = jax.device_put(state, partition.replicated(mesh))

    writer = MetricWriter(workdir, start_step=start, enabled=lead)
    # The loop's own state, saved with each checkpoint: every process resumes with the same best-so-far (the
    # metrics file is process 0's and may hold records the checkpoint does not).
    loop = {"best_auc": None}
    if start:
        logging.info("Resuming from the checkpoint at step %d in %s", start, workdir)
        state, loop = ckpt.restore(start, like=state)
    records = writer.records()
    best_auc = -math.inf if loop.get("best_auc") is None else loop["best_auc"]

    train_step_at = protocols.StepsByPhase(  # the step for each phase of config.finetune (LP-FT has two)
        config,
        state.params,
        functools.partial(
            steps.make_train_step,
            model,
            tx,
            task.loss,
            mesh,
            frozen_stats=state_lib.frozen_statistics(config, state.params, state.batch_stats),
            aux_loss_weight=config.aux_loss_weight,
        ),
    )
    eval_step = steps.make_eval_step(model, task.loss, mesh)
    bar = tqdm(total=config.num_train_steps, initial=start, unit="step", disable=not (lead and config.progress_bar))
    pending: list[tuple[int, dict]] = []
    tick, tick_step = time.perf_counter(), start
    reliability = None  # the last evaluation's reliability diagram, for summary.json
    try:
        for step in range(start, config.num_train_steps):
            state, train_metrics = train_step_at(step)(state, next(batches), steps.step_rng(config.seed, step))
            done = step + 1
            pending.append((done, train_metrics))
            bar.update(1)
            is_last = done == config.num_train_steps
            is_eval = done % config.eval_every_steps == 0 or is_last
            is_ckpt = done % config.checkpoint_every_steps == 0 or is_last
            if done % config.log_every_steps == 0 or is_eval or is_ckpt:
                logged = _check_finite(pending)
                now = time.perf_counter()
                logged.update(learning_rate=float(schedule(step)), steps_per_second=(done - tick_step) / (now - tick))
                tick, tick_step, pending = now, done, []
                writer.write(done, "train", logged)
                bar.set_postfix(loss=f"{logged['loss']:.4f}")
            if is_eval:
                eval_metrics = evaluate(eval_step, state, eval_ds, eval_batch_size, mesh, config.calibration_bins)
                reliability = eval_metrics.pop("reliability")
                writer.write(done, "eval", eval_metrics)
                records.append({"step": done, "split": "eval", **eval_metrics})
                reached = metrics_lib.first_step_reaching(records, "auc", config.auc_threshold)
                if reached == done:
                    logging.info("Eval AUC reached %s at step %d.", config.auc_threshold, done)
                logging.info("step %d eval %s", done, {k: round(v, 4) for k, v in eval_metrics.items()})
                # Process 0's decision, so that all processes call the collective save together.
                if same_on_all_processes(np.isfinite(eval_metrics["auc"]) and eval_metrics["auc"] > best_auc):
                    best_auc = eval_metrics["auc"]
                    ckpt.save_best(done, state, best_auc)
            if is_ckpt:
                ckpt.save(done, state, {"best_auc": best_auc if math.isfinite(best_auc) else None})
    finally:  # an error (e.g. a NaN loss) still finalises the checkpoints already started
        bar.close()
        ckpt.close()
        writer.close()
    if config.export_pretrained and lead:
        _export_variables(config, task, state, workdir / export.FINAL_FILE, f"trained:{workdir}")
    if reliability is None:  # resumed after the last evaluation: the same diagram, from the same final state
        reliability = evaluate(eval_step, state, eval_ds, eval_batch_size, mesh, config.calibration_bins)["reliability"]
    summary = {**_summary(records, config.auc_threshold), "reliability": reliability}
    if lead:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logging.info("Run summary: %s", summary)
    return summary
