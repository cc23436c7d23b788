"""`python -m transfusion_jax.main`, unchanged, with one observer: every example this process decodes is appended
to the file named by $LOAD_LOG as a JSON line [source seed, example index]. The multi-process test reads these logs
to check that each process decodes exactly its share of every global batch. Only synthetic sources are observed
(the local configs' data)."""

import json
import os

from absl import app

from transfusion_jax import main as cli
from transfusion_jax.data import readers


def _observe_loads(path: str) -> None:
    load = readers.SyntheticSource.load

    def logged_load(self, index, target_size):
        with open(path, "a") as f:
            f.write(json.dumps([int(self.seed), int(index)]) + "\n")
        return load(self, index, target_size)

    readers.SyntheticSource.load = logged_load


if __name__ == "__main__":
    _observe_loads(os.environ["LOAD_LOG"])
    app.run(cli.main)
