"""The study's work directory DIR: where each thing lives, the record of the design DIR was started with, and the
JSON caches of the analyses (plain, strict JSON on disk; typed records in memory).

  DIR/study_config.json                       the design (every field but those that may change between invocations)
  DIR/data/{source,retina}, DIR/data/READY    the generated source and target sets
  DIR/runs/pretrain/<model>                   source pretraining; its pretrained.npz is the model's checkpoint
  DIR/runs/<model>/<data>/<init>/seed_<k>     fine-tuning runs (design.RunKey.workdir), each a train/rundir.py run
  DIR/analysis/{diagnostics,similarity}_<model>.json   the analyses' caches
  DIR/report.md, DIR/figures/                 the report (study.report)
  DIR/jax_cache                               the persistent compilation cache (the quickstart's)
"""

import json
import os
from collections.abc import Callable

from transfusion_jax.experiments.study.design import StudyConfigError
from transfusion_jax.train import rundir, writer

DESIGN_RECORD = "study_config.json"
REPORT = "report.md"
FIGURES = "figures"
COMPILE_CACHE = "jax_cache"
# Fields that may change between invocations on one DIR: which models run (the cut or the whole design), and how
# many runs share a program or processes write the data (execution, not design).
MAY_CHANGE = ("models_run", "variant", "max_runs_per_program", "programs_at_once", "data_workers")
# Design fields added after studies were recorded, with the value those studies had: a DIR recorded without one was
# made with it.
ADDED_FIELDS = {"data_block": 0}
# Fields studies were recorded with that no longer exist and never changed a run (filters_seed: unused).
REMOVED_FIELDS = ("filters_seed",)


def data_paths(workdir: str) -> dict[str, str]:
    return {"source": os.path.join(workdir, "data", "source"), "target": os.path.join(workdir, "data", "retina")}


def data_ready(workdir: str) -> str:
    return os.path.join(workdir, "data", "READY")


def pretrain_dir(workdir: str, model: str) -> str:
    return os.path.join(workdir, "runs", "pretrain", model)


def checkpoint_of(workdir: str, model: str) -> str:
    """The model's "ImageNet" checkpoint: its source pretraining's final weights."""
    return os.path.join(pretrain_dir(workdir, model), rundir.FINAL)


def analysis_path(workdir: str, analysis: str, model: str) -> str:
    return os.path.join(workdir, "analysis", f"{analysis}_{model}.json")


def check_workdir(workdir: str, c) -> None:
    """DIR/study_config.json records the design DIR was started with (`check_design_record`)."""
    design = {k: v for k, v in json.loads(c.to_json()).items() if k not in MAY_CHANGE}

    def as_now(recorded: dict) -> dict:  # a record written before fields were added or removed
        return {k: v for k, v in {**ADDED_FIELDS, **recorded}.items() if k not in REMOVED_FIELDS}

    check_design_record(workdir, DESIGN_RECORD, design, "a study", as_now)


def check_design_record(
    workdir: str, record: str, design: dict, what: str, upgrade: Callable[[dict], dict] = lambda d: d
) -> None:
    """DIR/`record` holds the design DIR was started with; another design in the same DIR would mix runs of two
    designs, so it is refused naming the fields that differ (dotted within nested fields). A new DIR records
    `design`. `upgrade` reads an older record as today's fields (the study's and the SSL study's records share this)."""
    path = os.path.join(workdir, record)
    if os.path.exists(path):
        with open(path) as f:
            recorded = upgrade(json.load(f))
        differ = sorted(_differences(design, recorded))
        if differ:
            raise StudyConfigError(
                f"{workdir} holds {what} with other settings ({', '.join(differ)}); use a new --workdir, or delete "
                f"{workdir} to start over."
            )
        return
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        f.write(writer.dumps(design, indent=1))


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(prefix + key)
    return out


def cached_json(path: str, compute: Callable[[], dict]) -> dict:
    """The JSON at `path`, or `compute()` written there (whole or not at all) and returned."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    value = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(writer.dumps(value, indent=1))
    os.replace(path + ".tmp", path)
    return value
