"""`train_and_evaluate(config, workdir)`: the training loop with periodic evaluation, checkpoints and resume; and
`train_group(configs, workdirs)`: the same for compatible runs stacked as one program (train/multirun.py). Both
loops only step and evaluate; what a run records and decides lives in one place, `RunRecorder`, used by both.

Resume is exact: state comes from the latest checkpoint, the data stream restarts at that step (`start_step`), each
step's RNG is a function of (seed, step), and metrics/best checkpoints written after that step by the killed run are
dropped and recomputed.

Selection and reporting: every evaluation scores the validation split (`config.val_split`) and the test split
(`config.test_split`), recorded separately ('val' / 'test' in metrics.jsonl). Everything that is *chosen* (the
selected step and its `best/` checkpoint, early stopping) looks at validation AUC only; the test split is reported
at the validation-selected step and at the final step, and its curve exists for convergence plots
(steps-to-threshold), but it never decides anything. Per-example test logits at both steps go to test_scores.npz
(for DeLong comparisons between runs on the same test examples). Calibration (ECE and ACE) is recorded for
both splits; summary.json holds the test split's reliability diagrams at the selected and the final step.

Multi-process runs: every decision that leads to a collective (a new best, early stopping, a NaN stop, the resume
step) is process 0's, and what selection and early stopping need on resume (best validation AUC, its step, the
evaluations since) lives in the checkpoint's `loop` dict, which every process restores, not in metrics.jsonl.
"""

import functools
import itertools
import logging
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from tqdm import tqdm

from transfusion_jax import data as data_lib
from transfusion_jax.train import batch_stats, export, multirun, partition, preflight, protocols, rundir, steps
from transfusion_jax.train import metrics as metrics_lib
from transfusion_jax.train import state as state_lib
from transfusion_jax.train.checkpoint import Checkpointer, same_on_all_processes
from transfusion_jax.train.writer import MetricWriter, dumps

# The split roles of a run, as written in metrics.jsonl / TensorBoard and as keys of summary.json.
VAL, TEST = "val", "test"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stops rather than train on garbage."""


def _to_host(x) -> np.ndarray:
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def _eval_batches(eval_step, state, dataset, batch_size: int, mesh, stacked: bool = False):
    """Runs `eval_step` over the whole split: (host arrays {'logits', 'label', 'label_mask', 'valid'} with batches
    concatenated on the example axis, loss sum, loss count); with `stacked` runs, logits, sums and counts have a
    leading run axis."""
    parts: dict[str, list[np.ndarray]] = {"logits": [], "label": [], "label_mask": [], "valid": []}
    loss_sum, loss_count = [], []
    for batch in dataset.batches(batch_size, mesh=mesh):
        out = eval_step(state, batch)
        loss_sum.append(np.asarray(jax.device_get(out["loss_sum"]), np.float64))
        loss_count.append(np.asarray(jax.device_get(out["loss_count"]), np.float64))
        parts["logits"].append(_to_host(out["logits"]))
        for key in ("label", "label_mask", "valid"):
            parts[key].append(_to_host(batch[key]))
    host = {k: np.concatenate(v, axis=1 if stacked and k == "logits" else 0) for k, v in parts.items()}
    return host, sum(loss_sum), sum(loss_count)


def _eval_results(dataset, logits, host, loss_sum: float, loss_count: float, calibration_bins: int):
    """(metrics, outputs) of one run's logits over the split (see `evaluate`)."""
    task = dataset.task
    valid = host["valid"].astype(bool)
    if not valid.any():
        raise data_lib.TooManyBadImagesError(f"{dataset.name}: none of its {len(dataset)} examples could be read.")
    logits, labels, mask = logits[valid], host["label"][valid], host["label_mask"][valid]
    result = {"loss": float(loss_sum) / max(float(loss_count), 1.0), "num_examples": float(valid.sum())}
    result.update(metrics_lib.auc_metrics(task.loss, task.label_names, logits, labels, mask))
    calibration, diagram = metrics_lib.calibration_metrics(
        task.loss, task.label_names, logits, labels, mask, calibration_bins
    )
    result.update(calibration, reliability=diagram)
    if task.loss == "softmax":
        result.update(metrics_lib.accuracy_metrics(logits, labels))
    ids = np.asarray(dataset.example_ids())[valid[: len(dataset)]]  # eval order is row order; padding comes last
    return result, {"logits": logits, "label": labels, "label_mask": mask, "id": ids}


def evaluate(
    eval_step, state, dataset, batch_size: int, mesh, calibration_bins: int = metrics_lib.DEFAULT_CALIBRATION_BINS
) -> tuple[dict, dict[str, np.ndarray]]:
    """(metrics, outputs) over the whole split, every example exactly once (padding rows are dropped by `valid`).

    metrics: loss, AUCs and calibration, every value a float except 'reliability', the reliability diagram per
    output (a nested dict). outputs: the per-example arrays behind them, {'logits', 'label', 'label_mask', 'id'} of
    the usable examples."""
    host, loss_sum, loss_count = _eval_batches(eval_step, state, dataset, batch_size, mesh)
    return _eval_results(dataset, host["logits"], host, loss_sum, loss_count, calibration_bins)


def evaluate_runs(
    eval_step, stacked_state, dataset, batch_size: int, mesh, runs, calibration_bins: int
) -> dict[int, tuple[dict, dict[str, np.ndarray]]]:
    """`evaluate` for stacked runs in one pass over the split (`multirun.make_multi_eval_step`): run index ->
    (metrics, outputs), for the indices in `runs` (the others' logits are dropped unread)."""
    host, loss_sum, loss_count = _eval_batches(eval_step, stacked_state, dataset, batch_size, mesh, stacked=True)
    return {
        i: _eval_results(dataset, host["logits"][i], host, loss_sum[i], loss_count[i], calibration_bins) for i in runs
    }


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
    (workdir / rundir.CONFIG).write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def _split_records(records: list[dict], role: str) -> list[dict]:
    return sorted((r for r in records if r["split"] == role), key=lambda r: r["step"])


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


def _at(records: list[dict], step: int | None) -> dict | None:
    metrics = next((r for r in records if r["step"] == step), None)
    return {k: v for k, v in metrics.items() if k != "split"} if metrics else None


def _summary(records: list[dict], config, train_examples: int, final_step: int, selected: int | None) -> dict:
    """What the run measured. Chosen on validation: the selected step (`selected`, the training loop's: the first
    evaluation with the highest validation AUC), the relative threshold (config.relative_threshold x the run's own
    final validation AUC). Reported on both splits: AUCs at the selected and final steps, and the first eval step
    with AUC strictly above the paper's threshold and the relative one."""
    val, test = _split_records(records, VAL), _split_records(records, TEST)
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
        "eval_steps": sorted(int(s) for s in config.eval_steps),  # empty: every eval_every_steps (and the last)
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


def _pending_scores(outputs: dict[str, np.ndarray], full: bool) -> dict[str, np.ndarray]:
    """What is kept of one test evaluation until the run ends: its logits and a digest of which examples they are;
    the final step's file also holds the ids (UTF-8 bytes), labels and masks, which do not change between steps."""
    ids = rundir.encode_ids(outputs["id"])
    kept = {"logits": outputs["logits"], "id_digest": rundir.ids_digest(ids)}
    if full:
        kept.update(id=ids, label=outputs["label"], label_mask=outputs["label_mask"])
    return kept


def _write_test_scores(workdir: epath.Path, task, selected: int | None, final: int) -> dict[str, np.ndarray]:
    """test_scores.npz (`rundir.write_test_scores`) at the selected and the final step. The logits come from the
    files written at each new validation best and at the final step or, for a finished run started again, from the
    test_scores.npz it wrote; the pending files are dropped afterwards."""
    pending = workdir / rundir.PENDING_SCORES
    known = {}
    old = rundir.load_test_scores(workdir)
    if old is not None:
        if "final_logits" not in old:
            raise RuntimeError(
                f"{workdir / rundir.TEST_SCORES} holds probabilities from an older version of this toolkit, not "
                "logits; delete the workdir to train the run again."
            )
        for when in ("selected", "final"):
            if f"{when}_step" in old:
                known[int(old[f"{when}_step"])] = {"logits": old[f"{when}_logits"], "id_digest": old["id_digest"]}
        common = {k: old[k] for k in ("id", "label", "label_mask")}
        known[int(old["final_step"])].update(common)
    for path in pending.glob("step_*.npz"):
        known[int(path.stem.split("_")[1])] = rundir.load_npz(path)
    missing = [step for step in (selected, final) if step is not None and step not in known]
    if missing:
        raise RuntimeError(f"{workdir} holds no test logits of step(s) {missing}; delete the workdir to start over.")
    if selected is not None and known[selected]["id_digest"] != known[final]["id_digest"]:
        raise RuntimeError(f"The test examples scored at steps {selected} and {final} differ (bad images?).")
    arrays = rundir.write_test_scores(
        workdir,
        loss=task.loss,
        label_names=task.label_names,
        final_step=final,
        final_logits=known[final]["logits"],
        ids=known[final]["id"],
        label=known[final]["label"],
        label_mask=known[final]["label_mask"],
        selected_step=selected,
        selected_logits=known[selected]["logits"] if selected is not None else None,
    )
    pending.rmtree(missing_ok=True)
    return arrays


def _test_reliability(summary: dict, scores: dict[str, np.ndarray], task, num_bins: int) -> None:
    """Adds the test split's reliability diagram at the selected and the final step to `summary`, computed from
    test_scores.npz: the same logits, labels and masks the evaluation's ECE came from, so a run resumed after its
    last evaluation reports the same diagrams without evaluating again."""
    for when in ("selected", "final"):
        record = summary.get(TEST, {}).get(when)
        if record is not None and f"{when}_logits" in scores:
            record["reliability"] = metrics_lib.reliability_diagram(
                task.loss, task.label_names, scores[f"{when}_logits"], scores["label"], scores["label_mask"], num_bins
            )


def data_order_seed(config) -> int:
    """The seed of the run's training stream (its order and augmentation): `config.data_order_seed`, or the run's
    own seed when that is -1 (the default). Runs given one value see the same batches in the same order, a paired
    design; stacked in one program (`train_group`) they then share one stream, read and decoded once."""
    value = int(config.get("data_order_seed", -1))
    return int(config.seed) if value < 0 else value


class RunRecorder:
    """One run's bookkeeping, the same whether the run trains alone (`train_and_evaluate`) or stacked with others
    in one program (`train_group`): the loops only step and evaluate, and hand each run's numbers and state here.

    Constructing it does what a run does before step 1: resolves and checks the config (`preflight`), builds and
    opens every split, writes config.json (and train_subset.json for a small-data run) and opens the run's
    checkpoints, recovering them (`start_step`: where the run resumes). `begin` gives the step-`start_step` state;
    then per step `log_train` (when `is_log`), `record_eval` (when `is_eval`: metrics, selection on validation,
    best checkpoint, early stopping, pending test scores), `checkpoint` (when `is_ckpt` or `stopped`), and at the
    end `finish` (final export, summary.json, test_scores.npz) or `close` after an error.
    """

    def __init__(self, config, workdir, mesh):
        self.workdir = epath.Path(workdir)
        self.mesh = mesh
        self.lead = jax.process_index() == 0
        config = preflight.resolve(config)
        partition.check_batch_size(config.batch_size, mesh)
        self.eval_batch_size = config.eval_batch_size or config.batch_size
        partition.check_batch_size(self.eval_batch_size, mesh)
        self.train_ds = data_lib.build_dataset(config, config.train_split, train=True)
        roles = ((VAL, config.val_split), (TEST, config.test_split))
        self.eval_sets = {role: data_lib.build_dataset(config, split, train=False) for role, split in roles if split}
        preflight.check_run(config, self.train_ds, self.eval_sets)
        config.num_train_steps = preflight.num_train_steps(config, len(self.train_ds))
        self.eval_at = preflight.eval_steps(config)
        self.config, self.task = config, self.train_ds.task
        if self.lead:
            self.workdir.mkdir(parents=True, exist_ok=True)
            _write_config(config, self.workdir)
            if config.data.subset_size:  # which examples a small-data run trained on
                subset = {"subset_seed": data_lib.subset_seed(config), "ids": self.train_ds.example_ids()}
                (self.workdir / rundir.TRAIN_SUBSET).write_text(dumps(subset, indent=1) + "\n")
        self.ckpt = Checkpointer(self.workdir, keep=config.keep_checkpoints, keep_best=1)
        self.start_step = self.ckpt.start_step
        self.writer = None
        # The loop's own state, saved with each checkpoint, so that every process resumes with the same selection
        # and early-stopping state (the metrics file is process 0's and may hold records the checkpoint does not):
        # the best validation AUC so far, its step, and the validation evaluations since it.
        self.loop = {"best_auc": None, "best_step": None, "evals_since_best": 0}
        self.patience = config.early_stopping_evals if VAL in self.eval_sets else 0
        self.stopped = False
        self.final_step = self.start_step
        self.schedule = None
        self._closed = False

    def batches(self):
        """The run's training batches from step `start_step` on."""
        return self.train_ds.batches(
            self.config.batch_size, mesh=self.mesh, seed=data_order_seed(self.config), start_step=self.start_step
        )

    def begin(self, model, sample_input):
        """(state at `start_step`, replicated on the mesh; the run's own optimizer). Exports the step-0 variables of
        a fresh run; restores a resumed one with its loop state."""
        config = self.config
        state, tx, self.schedule = state_lib.create_train_state(
            config, model, jax.random.key(config.seed), sample_input
        )
        if not self.start_step:  # a fresh run starts from its init's statistics as step 1 sees the network
            state = state.replace(batch_stats=self._initial_batch_stats(model, state))
        if self.lead and not self.start_step:  # what step 1 starts from, as the analyses' "init" (whatever the scheme)
            _export_variables(config, self.task, state, self.workdir / rundir.INIT, f"init:{self.workdir}")
        state = jax.device_put(state, partition.replicated(self.mesh))
        self.writer = MetricWriter(self.workdir, start_step=self.start_step, enabled=self.lead)
        if self.start_step:
            logging.info("Resuming from the checkpoint at step %d in %s", self.start_step, self.workdir)
            state, saved_loop = self.ckpt.restore(self.start_step, like=state)
            self.loop.update(saved_loop)
        pending_scores = self.workdir / rundir.PENDING_SCORES
        if self.lead and TEST in self.eval_sets:
            pending_scores.mkdir(parents=True, exist_ok=True)
            for path in pending_scores.glob("step_*.npz"):  # written after the start by a killed run: recomputed
                if int(path.stem.split("_")[1]) > self.start_step:
                    path.unlink()
        self.records = self.writer.records()
        self.best_auc = -math.inf if self.loop["best_auc"] is None else self.loop["best_auc"]
        # a run that stopped early stays stopped
        self.stopped = bool(self.patience and self.loop["evals_since_best"] >= self.patience)
        self._tick, self._tick_step = time.perf_counter(), self.start_step
        return state, tx

    def _initial_batch_stats(self, model, state):
        """batch_stats.initial_batch_stats over the run's first training batches (a second reader of its stream)."""
        stream = self.train_ds.batches(
            self.config.batch_size, mesh=self.mesh, seed=data_order_seed(self.config), start_step=0
        )
        try:
            frozen = state_lib.frozen_statistics(self.config, state.params, state.batch_stats)
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            return batch_stats.initial_batch_stats(self.config, model, variables, stream, frozen, self.mesh)
        finally:
            stream.close()

    def is_eval(self, done: int) -> bool:
        return done in self.eval_at

    def is_ckpt(self, done: int) -> bool:
        return done % self.config.checkpoint_every_steps == 0 or done == self.config.num_train_steps

    def is_log(self, done: int) -> bool:
        return done % self.config.log_every_steps == 0 or self.is_eval(done) or self.is_ckpt(done)

    def log_train(self, done: int, pending: list[tuple[int, dict]]) -> dict[str, float]:
        """Writes the mean of the train metrics of the steps since the last log; raises NonFiniteLossError at the
        first non-finite loss."""
        logged = _check_finite(pending)
        now = time.perf_counter()
        logged.update(
            learning_rate=float(self.schedule(done - 1)), steps_per_second=(done - self._tick_step) / (now - self._tick)
        )
        self._tick, self._tick_step = now, done
        self.writer.write(done, "train", logged)
        return logged

    def record_eval(self, done: int, evaluations: dict, own_state) -> None:
        """Records one evaluation, {role: (metrics, outputs)} at step `done`, and acts on it: a new validation best
        saves `own_state()` (a callable: the run's state, asked for only when needed) as the best checkpoint; no
        better AUC in `patience` evaluations sets `stopped`. Decisions are process 0's, so that all processes call
        the collective saves (and stop) together; the count follows from them and the restored loop state."""
        results = {}
        for role, (metrics, _) in evaluations.items():
            metrics = dict(metrics)
            metrics.pop("reliability")  # nested: the summary has the test split's (from test_scores.npz)
            results[role] = metrics
            self.writer.write(done, role, metrics)
            self.records.append({"step": done, "split": role, **metrics})
            logging.info("step %d %s %s", done, role, {k: round(v, 4) for k, v in metrics.items()})
        val_auc = _finite_auc(results.get(VAL, {}))
        improved = bool(same_on_all_processes(val_auc is not None and val_auc > self.best_auc))
        if VAL in evaluations:
            self.loop["evals_since_best"] = 0 if improved else self.loop["evals_since_best"] + 1
        if improved:
            self.best_auc = val_auc
            self.loop.update(best_auc=val_auc, best_step=done)
            if self.config.keep_best_checkpoint:
                self.ckpt.save_best(done, own_state(), val_auc)
        if self.patience and self.loop["evals_since_best"] >= self.patience:
            logging.info("Early stop at step %d: no better validation AUC in %d evaluations.", done, self.patience)
            self.stopped = True
        is_last = done == self.config.num_train_steps
        if self.lead and TEST in evaluations and (improved or is_last or self.stopped):
            full = is_last or self.stopped  # the final step's file carries the ids and labels
            path = self.workdir / rundir.PENDING_SCORES / f"step_{done}.npz"
            rundir.save_npz(path, _pending_scores(evaluations[TEST][1], full))

    def checkpoint(self, done: int, state) -> None:
        self.ckpt.save(done, state, dict(self.loop))

    def close(self) -> None:
        """Finalises the checkpoints already started and closes the metric files (also after an error); once."""
        if self._closed:
            return
        self._closed = True
        self.ckpt.close()
        if self.writer is not None:
            self.writer.close()

    def finish(self, state) -> dict:
        """Closes the run at `final_step` with `state`: exports the final weights, writes test_scores.npz and
        summary.json; returns the summary."""
        self.close()
        config, lead = self.config, self.lead
        if config.export_pretrained and lead:
            _export_variables(config, self.task, state, self.workdir / rundir.FINAL, f"trained:{self.workdir}")
        summary = _summary(self.records, config, len(self.train_ds), self.final_step, self.loop["best_step"])
        if lead:
            if TEST in self.eval_sets:
                scores = _write_test_scores(self.workdir, self.task, summary["selected_step"], self.final_step)
                _test_reliability(summary, scores, self.task, config.calibration_bins)
            (self.workdir / rundir.SUMMARY).write_text(dumps(summary, indent=2) + "\n")
        logging.info("Run summary: %s", summary)
        return summary


def _sample_input(batches):
    """(a zero input of the batches' image shape, the stream with its first batch put back)."""
    first = next(batches)
    return jnp.zeros((1,) + first["image"].shape[1:], jnp.float32), itertools.chain([first], batches)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint if any); returns the run summary."""
    mesh = partition.make_data_mesh()
    run = RunRecorder(config, workdir, mesh)
    config = run.config
    model = state_lib.build_model(config, run.task.num_outputs)
    sample_input, batches = _sample_input(run.batches())
    state, tx = run.begin(model, sample_input)

    train_step_at = protocols.StepsByPhase(  # the step for each phase of config.finetune (LP-FT has two)
        config,
        state.params,
        functools.partial(
            steps.make_train_step,
            model,
            tx,
            run.task.loss,
            mesh,
            frozen_stats=state_lib.frozen_statistics(config, state.params, state.batch_stats),
            aux_loss_weight=config.aux_loss_weight,
        ),
    )
    eval_step = steps.make_eval_step(model, run.task.loss, mesh)
    bar = tqdm(
        total=config.num_train_steps,
        initial=run.start_step,
        unit="step",
        disable=not (run.lead and config.progress_bar),
    )
    pending: list[tuple[int, dict]] = []
    try:
        for step in range(run.start_step, config.num_train_steps if not run.stopped else run.start_step):
            state, train_metrics = train_step_at(step)(state, next(batches), steps.step_rng(config.seed, step))
            done = run.final_step = step + 1
            pending.append((done, train_metrics))
            bar.update(1)
            if run.is_log(done):
                logged = run.log_train(done, pending)
                pending = []
                bar.set_postfix(loss=f"{logged['loss']:.4f}")
            if run.is_eval(done):
                evaluations = {
                    role: evaluate(eval_step, state, ds, run.eval_batch_size, mesh, config.calibration_bins)
                    for role, ds in run.eval_sets.items()
                }
                run.record_eval(done, evaluations, lambda: state)
            if run.is_ckpt(done) or run.stopped:
                run.checkpoint(done, state)
            if run.stopped:
                break
    finally:  # an error (e.g. a NaN loss) still finalises the checkpoints already started
        bar.close()
        run.close()
    return run.finish(state)


def _stream_key(config) -> tuple:
    """Runs with equal keys see identical training batches: the same order seed and the same training examples."""
    return data_order_seed(config), data_lib.subset_seed(config) if config.data.subset_size else None


class _OwnStates:
    """Each stacked run's own state (as it would be alone, replicated on the mesh), copied out of the stacked state
    of one step at most once: for its checkpoints, best checkpoint and final export."""

    def __init__(self, group, stacked, mesh):
        self._group, self._stacked, self._mesh = group, stacked, mesh
        self._host, self._own = None, {}

    def __call__(self, position: int):
        if position not in self._own:
            if self._host is None:
                self._host = jax.device_get(self._stacked)
            own = self._group.unstack(self._host, position)
            self._own[position] = jax.device_put(own, partition.replicated(self._mesh))
        return self._own[position]


def train_group(configs, workdirs, on_started: Callable[[], None] | None = None) -> list:
    """Trains runs that may share a program (`multirun.group_runs`) as one jitted program over their stacked
    states; each run gets what `train_and_evaluate` gives it alone, in its own workdir, equal to float32 rounding
    (see the `transfusion_jax.train.multirun` docstring for what may differ between runs, and for the outputs).

    Returns, per run in order, its summary or the exception that stopped it: a run whose preflight fails, whose
    checkpoint cannot be restored or whose loss turns non-finite stops alone and the others go on (an error of the
    program itself stops its unfinished runs). Runs are
    regrouped after their preflight (by their resolved configs, e.g. the input normalisation a checkpoint
    implies) and after opening their checkpoints (by the step each resumes from): runs killed at different steps
    train as separate programs, each from its own checkpoint, so every run's steps are exactly as when alone.

    `on_started()` is called once, as soon as the first training step is compiled and dispatched (or when nothing is
    left to train): a caller training programs side by side starts the next one's setup and compile only then, so
    that two programs' compile-time memory peaks never add up (`experiments.runs.train_many`).
    """
    signalled = False

    def started() -> None:
        nonlocal signalled
        if on_started is not None and not signalled:
            signalled = True
            on_started()

    try:
        return _train_group(configs, workdirs, started)
    finally:
        started()


def _train_group(configs, workdirs, started: Callable[[], None]) -> list:
    if len(configs) != len(workdirs):
        raise ValueError(f"{len(configs)} configs but {len(workdirs)} workdirs.")
    if jax.process_count() > 1:
        raise ValueError("train_group runs on one process; train multi-process runs with train_and_evaluate.")
    mesh = partition.make_data_mesh()
    results: list = [None] * len(configs)
    prepared: dict[int, RunRecorder] = {}
    for i, (config, workdir) in enumerate(zip(configs, workdirs)):
        try:
            prepared[i] = RunRecorder(config, workdir, mesh)
        except Exception as e:  # this run's own problem (bad config, unreadable data, damaged checkpoints)
            results[i] = e
    subgroups: dict[tuple, dict[int, RunRecorder]] = {}
    for i, run in prepared.items():
        subgroups.setdefault((multirun.program_key(run.config), run.start_step), {})[i] = run
    for runs in subgroups.values():
        try:
            _train_stacked(runs, mesh, results, started)
        except Exception as e:  # the program itself failed: each of its unfinished runs did (the others go on)
            for i in runs:
                if results[i] is None:
                    results[i] = e
    return results


def _finish(run: RunRecorder, state):
    """The run's summary, or the exception that kept it from writing its files (the other runs go on)."""
    try:
        return run.finish(state)
    except Exception as e:
        return e


def _train_stacked(runs: dict[int, RunRecorder], mesh, results: list, started: Callable[[], None]) -> None:
    """The group loop over `runs` (input index -> recorder, all resuming from one step); fills `results`; calls
    `started()` once its first step is compiled."""
    first = next(iter(runs.values()))
    config = first.config
    for i, run in runs.items():
        for role, ds in first.eval_sets.items():
            if run.eval_sets[role].example_ids() != ds.example_ids():
                raise ValueError(f"Run {i}'s {role} split differs from run {next(iter(runs))}'s: it cannot share them.")
    model = state_lib.build_model(config, first.task.num_outputs)
    streams = {}  # one training stream per distinct order and training subset, read once for all its runs
    for run in runs.values():
        streams.setdefault(_stream_key(run.config), run)
    streams = {key: run.batches() for key, run in streams.items()}
    key0 = next(iter(streams))
    sample_input, streams[key0] = _sample_input(streams[key0])
    states = {}
    try:
        for i, run in list(runs.items()):
            try:
                states[i], _ = run.begin(model, sample_input)
                if run.stopped or run.start_step >= config.num_train_steps:  # nothing left to train: finish it
                    results[i] = run.finish(states.pop(i))
                    del runs[i]
            except Exception as e:
                run.close()
                results[i] = e
                states.pop(i, None)
                del runs[i]
        if not runs:
            return
        order = list(runs)  # stack position -> input index
        group = multirun.RunGroup(
            [runs[i].config for i in order], states[order[0]].params, states[order[0]].batch_stats
        )
        stacked = jax.device_put(group.stack([jax.device_get(states[i]) for i in order]), partition.replicated(mesh))
        states.clear()
        keys = [_stream_key(runs[i].config) for i in order]
        streams = {key: stream for key, stream in streams.items() if key in keys}  # of the runs that train
        shared = len(streams) == 1
        train_step_at = protocols.StepsByPhase(
            config,
            group.params,
            functools.partial(
                multirun.make_multi_train_step,
                model,
                group.tx,
                first.task.loss,
                mesh,
                shared_batch=shared,
                aux_loss_weight=config.aux_loss_weight,
            ),
        )
        eval_step = multirun.make_multi_eval_step(model, first.task.loss, mesh)
        active = list(range(len(order)))
        pending: list[tuple[int, dict]] = []
        own = None
        for step in range(first.start_step, config.num_train_steps):
            batch = {key: next(stream) for key, stream in streams.items()}
            batches = batch[keys[0]] if shared else [batch[key] for key in keys]
            stacked, train_metrics = train_step_at(step)(stacked, batches, group.per_run)
            started()  # compiled (jit compiles before it dispatches)
            done = step + 1
            pending.append((done, train_metrics))
            own = _OwnStates(group, stacked, mesh)
            if first.is_log(done):
                host = jax.device_get(pending)
                pending = []
                for p in list(active):
                    try:
                        runs[order[p]].log_train(done, [(s, {k: v[p] for k, v in m.items()}) for s, m in host])
                    except NonFiniteLossError as e:  # this run stops; the others go on
                        runs[order[p]].close()
                        results[order[p]] = e
                        active.remove(p)
            if first.is_eval(done) and active:
                by_role = {
                    role: evaluate_runs(
                        eval_step, stacked, ds, first.eval_batch_size, mesh, active, config.calibration_bins
                    )
                    for role, ds in first.eval_sets.items()
                }
                for p in active:
                    evaluations = {role: by_run[p] for role, by_run in by_role.items()}
                    runs[order[p]].record_eval(done, evaluations, functools.partial(own, p))
            for p in list(active):
                run = runs[order[p]]
                run.final_step = done
                if run.is_ckpt(done) or run.stopped:
                    run.checkpoint(done, own(p))
                if run.stopped:  # stopped early: finished now; its slot goes on computing, unread
                    results[order[p]] = _finish(run, own(p))
                    active.remove(p)
            if not active:
                break
        for p in active:
            results[order[p]] = _finish(runs[order[p]], own(p))
    finally:  # an error still finalises the checkpoints already started, of every run
        for run in runs.values():
            run.close()
