"""Many training runs as one jitted program: parameters, optimizer states and BatchNorm statistics stacked on a
leading run axis, and the single-run train/eval step `jax.vmap`ped over it, on the same ('data',) mesh.

The paper's protocol is models x inits x seeds. Runs of one model, input size and recipe differ only in values
(initial weights, seed, frozen blocks, learning rate), so N of them can share one compiled program: one compile
instead of N, and kernels N times larger instead of N small ones, which is what small models on a CPU and any
model on an accelerator need to keep busy.

Which runs share a program: two run configs are *compatible* when they are equal in every field except
`PER_RUN_FIELDS` (seed, data_order_seed, init, pretrained, mean_var_bn, freeze, optimizer.learning_rate). So a
group has one architecture with one set of overrides, dtype, data config (hence input size, task and loss), batch
size, optimizer kind and its other hyperparameters, schedule, fine-tuning protocol, number of steps and loop
cadence. `group_runs` partitions configs into compatible groups (at most `max_runs_per_program` runs each, which
bounds memory); `solo_reason` names what must train alone.

The loop (`trainer.train_group`; `experiments.runs.train_many` plans the programs of a list of runs and is what the
sweep CLI (`--max_runs_per_program`) and the quickstart call): every run gets exactly what `train_and_evaluate`
gives it alone, from the same per-run bookkeeping (`trainer.RunRecorder`): its preflight before step 1, its
workdir with config.json, metrics.jsonl and TensorBoard, checkpoints (latest k and best, with checksums), the
exported init and final weights, test_scores.npz, train_subset.json and summary.json; selection on validation,
steps-to-threshold and early stopping per run. A run that stops early is finished at its step while the others
go on (its slot keeps computing, unread); a run whose loss turns non-finite fails alone. One evaluation pass per
evaluation step scores every run on the shared eval batches (`make_multi_eval_step`). Each run reads its own
training stream (its order: `trainer.data_order_seed`, its training subset); runs with equal streams (one
`data_order_seed`: a paired design) share one, read and decoded once, and then one batch (`shared_batch`).
Resume: each run restores its own latest checkpoint; runs are regrouped by the step they resume from, so runs
killed at different steps continue as separate programs and every run's steps stay those of the run alone. Runs
are also regrouped by their resolved configs (e.g. a checkpoint's input normalisation).

What trains alone (`solo_reason`, logged by `train_many`): multi-process jobs (the group loop is single-process),
and LP-FT (its two phases are untested stacked). A config that no other run matches trains alone as well.

How the per-run differences become data that vmaps:
- Freezing. A single run routes frozen leaves to `optax.set_to_zero` with `multi_transform`, whose state has a
  different structure for each frozen set, so it cannot be stacked. Here every run uses one unfrozen optimizer
  and a per-run boolean per parameter leaf ('trainable'): frozen leaves' gradients are zeroed before the
  optimizer and their updates dropped after it. For the optimizers `state.make_optimizer` builds (elementwise
  Adam / SGD with momentum, kernel weight decay, global-norm clipping) the trainable leaves then get exactly the
  single-run update: a zero gradient adds nothing to the clipping norm. The optimizer state of a frozen leaf has
  no single-run counterpart (it may hold decay terms; nothing reads it): `unstack` drops it, `stack` zeroes it.
- Frozen BatchNorm statistics: a per-run boolean per statistic ('keep_stats').
- Learning rate: the shared optimizer runs at learning rate 1 and each run scales its updates by its own (optax's
  adam and sgd end with the learning-rate scaling, so this is the single-run update).
- Randomness: run i's dropout key at step t is `steps.step_rng(seed_i, t)`, as when it trains alone.
- Data: each run its own batch (its own data order, a sequence of N batches), or one batch for all
  (`shared_batch=True`: a paired design).

The run axis is replicated over the mesh and each run's batch is split over 'data', so a group uses the devices
exactly as a single run does (N runs per device instead of 1). Results equal the runs trained alone to float32
rounding (tests/train/test_multirun.py, tests/train/test_group_trainer.py): the stacked program adds in another
order, as any equivalent program does (XLA's own kernels instead of models/cpu_kernels.py, another device count).
Over a long run such rounding differences can grow into visibly different trajectories, as they do between those
equivalent programs (measured in BENCHMARKS.md); a run trained twice the same way gives the same numbers to the
bit. `RunGroup.stack` / `unstack` convert between each run's own TrainState (the one its checkpoints and exported
weights hold) and the stacked one, so a loop resumes runs from their own checkpoints and writes each run's files
exactly as a single run does.
"""

import copy
import dataclasses
import functools
import json
import types
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from transfusion_jax.surgery import freezing
from transfusion_jax.train import partition, steps
from transfusion_jax.train import state as state_lib
from transfusion_jax.train.state import TrainState

# Config fields (dotted paths) that may differ between the runs of one program; everything else must be equal.
PER_RUN_FIELDS = (
    "seed",
    "data_order_seed",
    "init",
    "pretrained",
    "mean_var_bn",
    "freeze",
    "optimizer.learning_rate",
)

# Seeds go through jax.random.key inside the program as int32.
_MAX_SEED = 2**31 - 1


def _as_dict(config) -> dict:
    """A plain nested dict of a ConfigDict, a mapping or a SimpleNamespace config."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if isinstance(config, types.SimpleNamespace):
        config = vars(config)
    if isinstance(config, Mapping):
        return {k: _as_dict(v) for k, v in config.items()}
    return config


def program_key(config) -> str:
    """The part of a run config that shapes its compiled program: equal keys <=> compatible runs."""
    fields = _as_dict(config)
    for dotted in PER_RUN_FIELDS:
        *parents, leaf = dotted.split(".")
        node = fields
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return json.dumps(fields, sort_keys=True, default=repr)


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} vs {b!r}"]


def solo_reason(config) -> str | None:
    """Why `config` must train alone (`trainer.train_and_evaluate`) rather than stacked with other runs, in words;
    None when it may share a program. What the group loop does not do (yet) is refused here, never run wrongly."""
    if jax.process_count() > 1:
        return "multi-process jobs train one run at a time (the group loop is single-process)"
    if _as_dict(config).get("finetune", {}).get("protocol") == "lp_ft":
        return "LP-FT switches its optimizer and frozen blocks at probe_steps (stacked LP-FT is not tested yet)"
    return None


def group_runs(configs: Sequence, max_runs_per_program: int = 0) -> list[list[int]]:
    """Indices of `configs` in compatible groups (in order of first appearance, each group's runs in input
    order), each split into chunks of at most `max_runs_per_program` runs (0: no limit)."""
    if max_runs_per_program < 0:
        raise ValueError(f"max_runs_per_program must be >= 0 (0: no limit), got {max_runs_per_program}.")
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(program_key(config), []).append(i)
    size = max_runs_per_program or max(len(configs), 1)
    return [members[k : k + size] for members in groups.values() for k in range(0, len(members), size)]


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part] if isinstance(config, Mapping) else getattr(config, part)
    return config


def _shared_optimizer_config(config):
    """The run's config with nothing frozen and learning rate 1: what every run of the group optimizes with."""
    shared = copy.deepcopy(config)
    shared.freeze = ()
    shared.optimizer.learning_rate = 1.0
    return shared


def _frozen_statistics(config, params, batch_stats):
    """batch_stats-shaped bools: the statistics the single-run step keeps fixed (those `config.freeze` fixes)."""
    fixed = state_lib.frozen_statistics(config, params, batch_stats)
    return jax.tree.map(lambda _: False, batch_stats) if fixed is None else fixed


def _trainable(config, params):
    if not config.freeze:
        return jax.tree.map(lambda _: True, params)
    labels = freezing.frozen_labels(params, list(config.freeze))
    return jax.tree.map(lambda label: label == freezing.TRAINABLE, labels)


# The single-run optimizer state of a run with frozen leaves is surgery.freeze's multi_transform state; the
# trainable part's leaves sit under this path, with the same sub-paths as in the shared (unfrozen) optimizer.
_TRAINABLE_PREFIX = f".inner_states[{freezing.TRAINABLE!r}].inner_state"


def _paths(tree) -> dict[str, object]:
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _strip(path: str) -> str:
    if not path.startswith(_TRAINABLE_PREFIX):
        raise ValueError(f"Unexpected optimizer state leaf {path!r} of a run with frozen parameters.")
    return path[len(_TRAINABLE_PREFIX) :]


@dataclasses.dataclass
class RunGroup:
    """Compatible runs trained as one program: the shared optimizer `tx`, each run's values `per_run` (an argument
    of the step, stacked on the run axis) and conversions between each run's own TrainState and the stacked one.

    `params` and `batch_stats` are any run's (only their structure and shapes are read).
    """

    configs: Sequence
    params: Mapping
    batch_stats: Mapping

    def __post_init__(self):
        if not self.configs:
            raise ValueError("A RunGroup needs at least one run config.")
        for i, config in enumerate(self.configs[1:], 1):
            if program_key(config) != program_key(self.configs[0]):
                other = json.loads(program_key(config))
                diff = _differences(json.loads(program_key(self.configs[0])), other)
                raise ValueError(
                    f"Run {i} cannot share a program with run 0; only {', '.join(PER_RUN_FIELDS)} may differ. "
                    f"Differences: {'; '.join(diff)}."
                )
        for config in self.configs:
            if not 0 <= int(config.seed) <= _MAX_SEED:
                raise ValueError(f"Seeds of stacked runs must be in [0, {_MAX_SEED}], got {config.seed}.")
        self.tx, _ = state_lib.make_optimizer(_shared_optimizer_config(self.configs[0]), self.params)
        per_run = [
            {
                "seed": np.int32(config.seed),
                "learning_rate": np.float32(_get(config, "optimizer.learning_rate")),
                "trainable": _trainable(config, self.params),
                "keep_stats": _frozen_statistics(config, self.params, self.batch_stats),
            }
            for config in self.configs
        ]
        self.per_run = jax.tree.map(lambda *xs: np.stack(xs), *per_run)

    def __len__(self) -> int:
        return len(self.configs)

    def _single_optimizer(self, i: int):
        return state_lib.make_optimizer(self.configs[i], self.params)[0]

    def _to_shared_opt_state(self, i: int, opt_state):
        if not self.configs[i].freeze:
            return opt_state
        template = jax.tree.map(np.asarray, self.tx.init(self.params))
        values = {_strip(path): leaf for path, leaf in _paths(opt_state).items()}
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        missing = set(values) - {jax.tree_util.keystr(p) for p, _ in leaves}
        if missing:
            raise ValueError(f"Optimizer state of run {i} has leaves the shared optimizer lacks: {sorted(missing)}")
        return jax.tree_util.tree_unflatten(treedef, [values.get(jax.tree_util.keystr(p), x) for p, x in leaves])

    def _to_single_opt_state(self, i: int, opt_state):
        if not self.configs[i].freeze:
            return opt_state
        template = jax.eval_shape(self._single_optimizer(i).init, self.params)
        values = _paths(opt_state)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        return jax.tree_util.tree_unflatten(treedef, [values[_strip(jax.tree_util.keystr(p))] for p, _ in leaves])

    def stack(self, states: Sequence[TrainState]) -> TrainState:
        """The runs' own states (as `state.create_train_state` or a run's checkpoint gives them, in `configs`
        order) as one state with a leading run axis, on the host."""
        if len(states) != len(self):
            raise ValueError(f"Expected {len(self)} states, one per run config, got {len(states)}.")
        shared = [
            dataclasses.replace(s, opt_state=self._to_shared_opt_state(i, s.opt_state)) for i, s in enumerate(states)
        ]
        return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *shared)

    def unstack(self, stacked: TrainState, i: int) -> TrainState:
        """Run i's own state, structured exactly as when it trains alone (for its checkpoint, export, eval)."""
        state = jax.tree.map(lambda x: x[i], stacked)
        return dataclasses.replace(state, opt_state=self._to_single_opt_state(i, state.opt_state))


def _run_train_step(model, tx, loss_kind, aux_loss_weight, eval_blocks, state: TrainState, batch, run):
    """One run's step, written for vmap: `run` holds this run's entries of RunGroup.per_run."""
    rng = steps.step_rng(run["seed"], state.step)
    loss, new_stats, grads = steps.loss_and_grads(model, loss_kind, aux_loss_weight, eval_blocks, state, batch, rng)
    new_stats = jax.tree.map(jnp.where, run["keep_stats"], state.batch_stats, new_stats)
    grad_norm = steps.global_norm(grads)
    grads = jax.tree.map(lambda trainable, g: jnp.where(trainable, g, jnp.zeros_like(g)), run["trainable"], grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(
        lambda trainable, p, u: jnp.where(trainable, p + run["learning_rate"] * u, p),
        run["trainable"],
        state.params,
        updates,
    )
    new_state = TrainState(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state)
    return new_state, {"loss": loss, "grad_norm": grad_norm}


def _stack_batches(batches):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)


def make_multi_train_step(
    model, tx, loss_kind: str, mesh, *, shared_batch: bool = False, aux_loss_weight: float = 0.0, eval_blocks=()
):
    """jit(stacked_state, batches, per_run) -> (stacked_state, {'loss': [N], 'grad_norm': [N]}).

    `tx` and `per_run` come from a RunGroup. `batches`: a sequence of N batches (run i trains on batches[i]),
    or with `shared_batch` one batch all runs train on; batches are split over 'data' as in the single-run step.
    `eval_blocks`: as in `steps.make_train_step` (the group's fine-tuning protocol, the same for every run). The
    stacked state is replicated and donated.
    """
    body = jax.vmap(
        functools.partial(_run_train_step, model, tx, loss_kind, aux_loss_weight, tuple(eval_blocks)),
        in_axes=(0, None if shared_batch else 0, 0),
    )

    def step(state, batches, per_run):
        return body(state, batches if shared_batch else _stack_batches(batches), per_run)

    rep, data = partition.replicated(mesh), partition.data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=0)


def make_multi_eval_step(model, loss_kind: str, mesh):
    """jit(stacked_state, batch) -> {'logits': [N, B, ...] split over 'data' on B, 'loss_sum': [N],
    'loss_count': [N]}: every run evaluated on the same batch."""
    rep, data = partition.replicated(mesh), partition.data_sharded(mesh)
    run_then_data = NamedSharding(mesh, P(None, partition.DATA_AXIS))
    return jax.jit(
        jax.vmap(functools.partial(steps.eval_outputs, model, loss_kind), in_axes=(0, None)),
        in_shardings=(rep, data),
        out_shardings={"logits": run_then_data, "loss_sum": rep, "loss_count": rep},
    )
