"""`train_and_evaluate(config, workdir)`: the training loop with periodic evaluation, checkpoints and resume.

Resume is exact: state comes from the latest checkpoint, the data stream restarts at that step (`start_step`), each
step's RNG is a function of (seed, step), and metrics/best checkpoints written after that step by the killed run are
dropped and recomputed.

Selection and reporting: every evaluation scores the validation split (`config.val_split`) and the test split
(`config.test_split`), recorded separately ('val' / 'test' in metrics.jsonl). Everything that is *chosen* (the
selected step and its `best/` checkpoint, early stopping) looks at validation AUC only; the test split is reported
at the validation-selected step and at the final step, and its curve exists for convergence plots
(steps-to-threshold), but it never decides anything. Per-example test scores at both steps go to test_scores.npz
(for DeLong comparisons between runs on the same test examples).
"""

import hashlib
import itertools
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
from transfusion_jax.train import export, partition, preflight, steps
from transfusion_jax.train import metrics as metrics_lib
from transfusion_jax.train import state as state_lib
from transfusion_jax.train.checkpoint import Checkpointer
from transfusion_jax.train.writer import MetricWriter, dumps

# The split roles of a run, as written in metrics.jsonl / TensorBoard and as keys of summary.json.
VAL, TEST = "val", "test"
TEST_SCORES = "test_scores.npz"
_PENDING_SCORES = "test_scores_pending"  # test scores of each new validation best, until the run ends


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stops rather than train on garbage."""


def _to_host(x) -> np.ndarray:
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def evaluate(eval_step, state, dataset, batch_size: int, mesh) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Loss and AUCs over the whole split, every example exactly once (padding rows are dropped by `valid`), and
    the per-example outputs behind them: {'scores', 'label', 'label_mask', 'id'} of the usable examples."""
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
    if not valid.any():
        raise data_lib.TooManyBadImagesError(f"{dataset.name}: none of its {len(dataset)} examples could be read.")
    scores, labels, mask = host["scores"][valid], host["label"][valid], host["label_mask"][valid]
    result = {"loss": loss_sum / max(loss_count, 1.0), "num_examples": float(valid.sum())}
    result.update(metrics_lib.auc_metrics(task.loss, task.label_names, scores, labels, mask))
    if task.loss == "softmax":
        result.update(metrics_lib.accuracy_metrics(scores, labels))
    ids = np.asarray(dataset.example_ids())[valid[: len(dataset)]]  # eval order is row order; padding comes last
    return result, {"scores": scores, "label": labels, "label_mask": mask, "id": ids}


def _check_finite(pending: list[tuple[int, dict]]) -> dict[str, float]:
    """Mean of the pending train metrics; raises at the first step whose loss is not finite."""
    host = jax.device_get([m for _, m in pending])
    for (step, _), m in zip(pending, host):
        if not np.isfinite(m["loss"]):
            raise NonFiniteLossError(
                f"Training loss is {float(m['loss'])} at step {step}; stopping. Lower the learning rate, try "
                f"--config.optimizer.grad_clip_norm, or check the data for bad values."
            )
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def _write_config(config, workdir: epath.Path) -> None:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def _split_records(records: list[dict], role: str) -> list[dict]:
    return sorted((r for r in records if r["split"] == role), key=lambda r: r["step"])


def _finite_auc(record: dict) -> float | None:
    value = record.get("auc")
    return value if isinstance(value, float) and math.isfinite(value) else None


def selected_record(val_records: list[dict]) -> dict | None:
    """The validation evaluation with the highest finite AUC (the earliest of ties), or None."""
    finite = [r for r in val_records if _finite_auc(r) is not None]
    return max(finite, key=lambda r: (r["auc"], -r["step"])) if finite else None


def evals_since_best(val_records: list[dict]) -> int:
    """Validation evaluations after the selected one: what early stopping counts."""
    best = selected_record(val_records)
    return len([r for r in val_records if best is None or r["step"] > best["step"]])


def _at(records: list[dict], step: int | None) -> dict | None:
    metrics = next((r for r in records if r["step"] == step), None)
    return {k: v for k, v in metrics.items() if k != "split"} if metrics else None


def _summary(records: list[dict], config, train_examples: int, final_step: int) -> dict:
    """What the run measured. Chosen on validation: the selected step (max validation AUC), the relative threshold
    (config.relative_threshold x the run's own final validation AUC). Reported on both splits: AUCs at the selected
    and final steps, and the first eval step with AUC strictly above the paper's threshold and the relative one."""
    val, test = _split_records(records, VAL), _split_records(records, TEST)
    best = selected_record(val)
    selected = best["step"] if best else None
    final_val = _finite_auc(_at(val, final_step) or {})
    relative = config.relative_threshold * final_val if final_val is not None else None
    summary = {
        "train_split": config.train_split,
        "val_split": config.val_split,
        "test_split": config.test_split,
        "train_examples": train_examples,
        "num_train_steps": config.num_train_steps,
        "epochs": config.num_train_steps * config.batch_size / train_examples,
        "final_step": final_step,
        "stopped_early": final_step < config.num_train_steps,
        "eval_every_steps": config.eval_every_steps,
        "selection": "max validation AUC (earliest of ties)",
        "selected_step": selected,
        "auc_threshold": config.auc_threshold,
        "relative_threshold": config.relative_threshold,
        "relative_threshold_auc": relative,
    }
    for role, rs in ((VAL, val), (TEST, test)):
        if rs:
            summary[role] = {
                "final": _at(rs, final_step),
                "selected": _at(rs, selected),
                "steps_to_threshold": metrics_lib.first_step_above(rs, "auc", config.auc_threshold),
                "steps_to_relative_threshold": (
                    metrics_lib.first_step_above(rs, "auc", relative) if relative is not None else None
                ),
            }
    return summary


def _save_scores(path: epath.Path, arrays: dict[str, np.ndarray]) -> None:
    """Written whole or not at all (a temporary file renamed), so a kill never leaves a truncated file."""
    tmp = path.parent / f"{path.name}.tmp"
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


def _load_scores(path: epath.Path) -> dict[str, np.ndarray]:
    with path.open("rb") as f, np.load(f, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _pending_scores(outputs: dict[str, np.ndarray], full: bool) -> dict[str, np.ndarray]:
    """What is kept of one test evaluation until the run ends: its scores and a digest of which examples they are;
    the final step's file also holds the ids (UTF-8 bytes), labels and masks, which do not change between steps."""
    ids = np.char.encode(np.asarray(outputs["id"], str), "utf-8")
    kept = {"scores": outputs["scores"], "id_digest": np.array(hashlib.sha256(ids.tobytes()).hexdigest())}
    if full:
        kept.update(id=ids, label=outputs["label"], label_mask=outputs["label_mask"])
    return kept


def _write_test_scores(workdir: epath.Path, task, selected: int | None, final: int) -> None:
    """test_scores.npz: per-example test scores at the selected and the final step, with ids, labels and masks,
    so that runs can be compared on the same examples (DeLong). The scores come from the files written at each new
    validation best and at the final step or, for a finished run started again, from the test_scores.npz it wrote;
    the pending files are dropped afterwards."""
    done, pending = workdir / TEST_SCORES, workdir / _PENDING_SCORES
    known = {}
    if done.exists():
        old = _load_scores(done)
        for when in ("selected", "final"):
            if f"{when}_step" in old:
                known[int(old[f"{when}_step"])] = {"scores": old[f"{when}_scores"], "id_digest": old["id_digest"]}
        common = {k: old[k] for k in ("id", "label", "label_mask")}
        known[int(old["final_step"])].update(common)
    for path in pending.glob("step_*.npz"):
        known[int(path.stem.split("_")[1])] = _load_scores(path)
    missing = [step for step in (selected, final) if step is not None and step not in known]
    if missing:
        raise RuntimeError(f"{workdir} holds no test scores of step(s) {missing}; delete the workdir to start over.")
    arrays = {
        **{k: known[final][k] for k in ("id", "id_digest", "label", "label_mask")},
        "loss": np.array(task.loss),
        "label_names": np.array(task.label_names),
        "final_step": np.array(final),
        "final_scores": known[final]["scores"],
    }
    if selected is not None:
        if known[selected]["id_digest"] != arrays["id_digest"]:
            raise RuntimeError(f"The test examples scored at steps {selected} and {final} differ (bad images?).")
        arrays.update(selected_step=np.array(selected), selected_scores=known[selected]["scores"])
    _save_scores(done, arrays)
    pending.rmtree(missing_ok=True)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint if any); returns the run summary."""
    workdir = epath.Path(workdir)
    lead = jax.process_index() == 0
    config = preflight.resolve(config)
    mesh = partition.make_data_mesh()
    partition.check_batch_size(config.batch_size, mesh)
    eval_batch_size = config.eval_batch_size or config.batch_size
    partition.check_batch_size(eval_batch_size, mesh)

    train_ds = data_lib.build_dataset(config, config.train_split, train=True)
    roles = ((VAL, config.val_split), (TEST, config.test_split))
    eval_sets = {role: data_lib.build_dataset(config, split, train=False) for role, split in roles if split}
    preflight.check_run(config, train_ds, eval_sets)
    config.num_train_steps = preflight.num_train_steps(config, len(train_ds))
    if lead:
        workdir.mkdir(parents=True, exist_ok=True)
        _write_config(config, workdir)
        if config.data.subset_size:  # which examples a small-data run trained on
            subset = {"subset_seed": data_lib.subset_seed(config), "ids": train_ds.example_ids()}
            (workdir / "train_subset.json").write_text(dumps(subset, indent=1) + "\n")
    task = train_ds.task
    model = state_lib.build_model(config, task.num_outputs)
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints, keep_best=1)
    start = ckpt.latest_step() or 0
    batches = train_ds.batches(config.batch_size, mesh=mesh, seed=config.seed, start_step=start)
    first = next(batches)
    sample_input = jnp.zeros((1,) + first["image"].shape[1:], jnp.float32)
    batches = itertools.chain([first], batches)
    state, tx = state_lib.create_train_state(config, model, jax.random.key(config.seed), sample_input)
    state = jax.device_put(state, partition.replicated(mesh))

    writer = MetricWriter(workdir, enabled=lead)
    pending_scores = workdir / _PENDING_SCORES
    if start:
        logging.info("Resuming from the checkpoint at step %d in %s", start, workdir)
        state = ckpt.restore(start, like=state)
        writer.truncate_after(start)
        ckpt.forget_best_after(start)
    if lead:
        pending_scores.mkdir(parents=True, exist_ok=True)
        for path in pending_scores.glob("step_*.npz"):  # written after `start` by a killed run: recomputed
            if int(path.stem.split("_")[1]) > start:
                path.unlink()
    records = writer.records()
    best = selected_record(_split_records(records, VAL))
    best_auc = best["auc"] if best else -math.inf

    train_step = steps.make_train_step(
        model,
        tx,
        task.loss,
        mesh,
        frozen=state_lib.frozen_blocks(config, state.params),
        aux_loss_weight=config.aux_loss_weight,
    )
    eval_step = steps.make_eval_step(model, task.loss, mesh)
    lr_fn = state_lib.learning_rate_fn(config)
    bar = tqdm(total=config.num_train_steps, initial=start, unit="step", disable=not (lead and config.progress_bar))
    pending: list[tuple[int, dict]] = []
    tick, tick_step = time.perf_counter(), start
    patience = config.early_stopping_evals
    stopped = bool(start and patience and evals_since_best(_split_records(records, VAL)) >= patience)
    final_step = start
    try:
        for step in range(start, config.num_train_steps if not stopped else start):
            state, train_metrics = train_step(state, next(batches), steps.step_rng(config.seed, step))
            done = final_step = step + 1
            pending.append((done, train_metrics))
            bar.update(1)
            is_last = done == config.num_train_steps
            is_eval = done % config.eval_every_steps == 0 or is_last
            is_ckpt = done % config.checkpoint_every_steps == 0 or is_last
            if done % config.log_every_steps == 0 or is_eval or is_ckpt:
                logged = _check_finite(pending)
                now = time.perf_counter()
                logged.update(learning_rate=float(lr_fn(step)), steps_per_second=(done - tick_step) / (now - tick))
                tick, tick_step, pending = now, done, []
                writer.write(done, "train", logged)
                bar.set_postfix(loss=f"{logged['loss']:.4f}")
            if is_eval:
                results, outputs = {}, {}
                for role, ds in eval_sets.items():
                    results[role], outputs[role] = evaluate(eval_step, state, ds, eval_batch_size, mesh)
                    writer.write(done, role, results[role])
                    records.append({"step": done, "split": role, **results[role]})
                    logging.info("step %d %s %s", done, role, {k: round(v, 4) for k, v in results[role].items()})
                val_auc = _finite_auc(results.get(VAL, {}))
                improved = val_auc is not None and val_auc > best_auc
                if improved:
                    best_auc = val_auc
                    ckpt.save_best(done, state, best_auc)
                if patience and VAL in eval_sets and evals_since_best(_split_records(records, VAL)) >= patience:
                    logging.info("Early stop at step %d: no better validation AUC in %d evaluations.", done, patience)
                    stopped = is_ckpt = True
                if lead and TEST in outputs and (improved or is_last or stopped):
                    full = is_last or stopped  # the final step's file carries the ids and labels
                    _save_scores(pending_scores / f"step_{done}.npz", _pending_scores(outputs[TEST], full))
            if is_ckpt:
                ckpt.save(done, state)
            if stopped:
                break
    finally:  # an error (e.g. a NaN loss) still finalises the checkpoints already started
        bar.close()
        ckpt.close()
        writer.close()
    if config.export_pretrained and lead:
        export.export_pretrained(
            str(workdir / "pretrained.npz"),
            {"params": state.params, "batch_stats": state.batch_stats},
            architecture=config.model.name,
            model_overrides=dict(config.model.overrides),
            num_classes=task.num_outputs,
            normalization=config.data.normalization,
            source=f"trained:{workdir}",
        )
    summary = _summary(records, config, len(train_ds), final_step)
    if lead:
        if TEST in eval_sets:
            _write_test_scores(workdir, task, summary["selected_step"], final_step)
        (workdir / "summary.json").write_text(dumps(summary, indent=2) + "\n")
    logging.info("Run summary: %s", summary)
    return summary
