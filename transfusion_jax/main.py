"""Command line: `python -m transfusion_jax.main --config=configs/retina.py:resnet50,random --workdir=DIR`.
A config with an `ssl` section (configs/ssl.py) runs self-supervised pretraining (transfusion_jax.ssl) instead.

Any config field can be overridden, e.g. `--config.batch_size=64 --config.optimizer.learning_rate=3e-4`. Rerunning
the same command with the same workdir resumes from its latest intact checkpoint.

Multi-process (one process per host, or several on one machine): run the same command in every process.
`jax.distributed` starts by itself on a multi-host Cloud TPU slice, under SLURM (srun) and Open MPI (mpirun);
elsewhere give each process the coordinator (process 0's host:port), the process count and its id:

  python -m transfusion_jax.main --config=... --workdir=SHARED_DIR \
      --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0   # and --process_id=1 on the other

or the same through JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID. The workdir must be one
folder every process sees (a shared file system or gs://).
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints, metrics and config.json.")
flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "true", "false"],
    "Start jax.distributed: auto = when the flags below, their environment variables or a known launcher (TPU "
    "slice, SLURM, Open MPI) say this is a multi-process job; true = always (JAX detects the cluster).",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Processes in the job (default: $JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1 (default: $JAX_PROCESS_ID).")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file and its argument, 'path.py:arg'.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


class _QuietLibraries(logging.Filter):
    """Drops orbax's INFO chatter (dozens of lines per checkpoint) so the run's own progress stays readable."""

    def filter(self, record):
        return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from transfusion_jax.train import CheckpointError, NonFiniteLossError, compile_cache, partition, train_and_evaluate

    compile_cache.enable()
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLibraries())
    try:
        partition.maybe_initialize_distributed(
            FLAGS.distributed,
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    try:
        if "ssl" in FLAGS.config:  # configs/ssl.py: self-supervised pretraining (transfusion_jax.ssl)
            from transfusion_jax import ssl

            ssl.pretrain(FLAGS.config, FLAGS.workdir)
        else:
            train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (NonFiniteLossError, CheckpointError) as e:
        logging.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
