"""Command line: `python -m transfusion_jax.main --config=configs/retina.py:resnet50,random --workdir=DIR`.

Any config field can be overridden, e.g. `--config.batch_size=64 --config.optimizer.learning_rate=3e-4`. Rerunning
the same command with the same workdir resumes from its latest checkpoint. On a multi-host TPU slice
`jax.distributed` starts automatically (`--distributed=auto`).
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints, metrics and config.json.")
flags.DEFINE_enum("distributed", "auto", ["auto", "true", "false"], "Call jax.distributed.initialize().")
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
    from transfusion_jax.train import NonFiniteLossError, compile_cache, partition, train_and_evaluate

    compile_cache.enable()
    partition.maybe_initialize_distributed(FLAGS.distributed)
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLibraries())
    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except NonFiniteLossError as e:
        logging.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
