"""One process of a 2-process job that drives the Checkpointer directly (no training), for test_multiprocess.py.

Usage: checkpoint_worker.py COORDINATOR_ADDRESS PROCESS_ID WORKDIR. Saves a new best and a periodic checkpoint at
each of 8 steps (the coincidence that hung jobs when both orbax managers shared barrier names), closes, lets
process 0 damage the newest step, reopens, restores, and prints one JSON line of what this process saw.
"""

import json
import sys

import jax

jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))

import jax.numpy as jnp  # noqa: E402  (after jax.distributed.initialize, which must come first)
from etils import epath  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from transfusion_jax.train import partition  # noqa: E402
from transfusion_jax.train.checkpoint import Checkpointer, same_on_all_processes  # noqa: E402

STEPS = 8
workdir = epath.Path(sys.argv[3])
mesh = partition.make_data_mesh()
state = jax.device_put({"w": jnp.arange(1000.0)}, partition.replicated(mesh))
add_one = jax.jit(lambda tree: jax.tree_util.tree_map(lambda x: x + 1, tree))
checkpointer = Checkpointer(workdir, keep=3, keep_best=1)
for step in range(1, STEPS + 1):  # state at step s: w = arange + s - 1
    checkpointer.save_best(step, state, auc=step / 10)
    checkpointer.save(step, state, {"best_auc": step / 10})
    state = add_one(state)
checkpointer.close()
decision = bool(same_on_all_processes(jax.process_index() == 0))

multihost_utils.sync_global_devices("saved")
if jax.process_index() == 0:
    (workdir / "checkpoints" / "latest" / str(STEPS) / "default" / "_METADATA").unlink()
multihost_utils.sync_global_devices("damaged")
reopened = Checkpointer(workdir, keep=3, keep_best=1)
restored, loop = reopened.restore(reopened.start_step, like=state)
reopened.close()
print(
    "RESULT "
    + json.dumps(
        {"decision": decision, "start_step": reopened.start_step, "loop": loop, "w0": float(restored["w"][0])}
    ),
    flush=True,
)
