"""Checkpoints with orbax: `latest/` (every N steps, keep K; what a restart resumes from) and `best/` (best eval
AUC, keep 1). Orbax writes into a temporary directory and renames it when complete, so a SIGKILL at any moment leaves
either a whole checkpoint or none."""

import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
    def __init__(self, workdir, keep: int, keep_best: int):
        root = epath.Path(workdir) / "checkpoints"
        self.latest = ocp.CheckpointManager(
            root / "latest",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True),
        )
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep_best,
                best_fn=lambda metrics: metrics["auc"],
                best_mode="max",
                keep_checkpoints_without_metrics=False,
                create=True,
                cleanup_tmp_directories=True,
            ),
        )

    def latest_step(self):
        return self.latest.latest_step()

    def restore(self, step: int, like):
        """The checkpoint at `step`, with the shapes, dtypes and shardings of the state `like`."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self.latest.restore(step, args=ocp.args.StandardRestore(abstract))

    def forget_best_after(self, step: int) -> None:
        """Drops best-AUC checkpoints written after `step` by a run that was then killed before its next periodic
        checkpoint: the resumed run recomputes them, exactly."""
        for s in self.best.all_steps():
            if s > step:
                self.best.delete(s)

    def save(self, step: int, state) -> None:
        self.latest.save(step, args=ocp.args.StandardSave(state))

    def save_best(self, step: int, state, auc: float) -> None:
        self.best.save(step, args=ocp.args.StandardSave(state), metrics={"auc": float(auc)})

    def close(self) -> None:
        for manager in (self.latest, self.best):
            manager.wait_until_finished()
            manager.close()
