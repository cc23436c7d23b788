"""One experiment = many training runs, one workdir each: ROOT/<group>/<model>/<init>/seed_<k>.

A run is finished when the trainer has written its `summary.json` (it does so only after the last step), so rerunning
a sweep skips finished runs and resumes unfinished ones from their latest checkpoint (the trainer's own resume).
"""

import dataclasses
import importlib.util
import json
import os
import time
from collections.abc import Callable

SUMMARY = "summary.json"
FAILED = "FAILED"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Where a run lives and what it is; `group` is the config file's stem (retina, retina_small, hybrid, ...)."""

    group: str
    model: str
    init: str
    seed: int

    def workdir(self, root: str) -> str:
        return os.path.join(root, self.group, self.model, init_dirname(self.init), f"seed_{self.seed}")

    def label(self) -> str:
        return f"{self.group} {self.model} {self.init} seed {self.seed}"


def init_dirname(init: str) -> str:
    """'transfusion:block2' -> 'transfusion-block2' (':' is awkward in paths and not allowed on some filesystems)."""
    return init.replace(":", "-")


def init_from_dirname(name: str) -> str:
    return name.replace("-", ":", 1) if name.startswith("transfusion-") else name


def is_finished(workdir: str) -> bool:
    return os.path.exists(os.path.join(workdir, SUMMARY))


def load_config_module(path: str):
    """A configs/*.py file as a module (configs/ is a folder of files, not a package)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} not found; pass e.g. --config configs/retina.py.")
    name = "transfusion_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {path!r} has no get_config(arg) function.")
    return module


def parse_pretrained(value: str) -> Callable[[str], str]:
    """'path.npz' (every model) or 'cbr_small=a.npz,resnet50=b.npz' (per model) -> model -> path ('' if none)."""
    if not value:
        return lambda model: ""
    if "=" not in value:
        return lambda model: value
    mapping = dict(item.split("=", 1) for item in value.split(",") if item)
    return lambda model: mapping.get(model, mapping.get("resnet50", "") if model == "resnet50_slim" else "")


def plan(group: str, models: list[str], inits: list[str], seeds: list[int]) -> list[RunSpec]:
    return [RunSpec(group, m, i, s) for m in models for i in inits for s in seeds]


def run(config, workdir: str, train_fn: Callable | None = None) -> dict:
    """Trains `config` in `workdir` unless already finished; returns the summary plus 'skipped' and 'seconds'.

    A run that raises leaves a FAILED marker with the error and re-raises; a later call retries it (resuming).
    """
    if is_finished(workdir):
        with open(os.path.join(workdir, SUMMARY)) as f:
            return {**json.load(f), "skipped": True, "seconds": 0.0}
    if train_fn is None:
        from transfusion_jax.train import train_and_evaluate as train_fn
    start = time.perf_counter()
    try:
        summary = train_fn(config, workdir)
    except Exception as e:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, FAILED), "w") as f:
            f.write(f"{type(e).__name__}: {e}\n")
        raise
    failed = os.path.join(workdir, FAILED)
    if os.path.exists(failed):
        os.remove(failed)
    return {**summary, "skipped": False, "seconds": time.perf_counter() - start}


def _test_auc(summary: dict, when: str) -> float | None:
    value = ((summary.get("test") or {}).get(when) or {}).get("auc")
    return value if isinstance(value, float) else None


def final_test_auc(summary: dict) -> float | None:
    """The test AUC at the run's last step (None when undefined or the run has no test split)."""
    return _test_auc(summary, "final")


def selected_test_auc(summary: dict) -> float | None:
    """The test AUC at the step selected on validation (never the best test AUC: that would select on test)."""
    return _test_auc(summary, "selected")


def test_steps_to_threshold(summary: dict) -> int | None:
    """The paper's convergence measure: first eval step with test AUC > the threshold (None if never)."""
    return (summary.get("test") or {}).get("steps_to_threshold")


def describe(summary: dict) -> str:
    """One progress line's worth of a run summary."""
    final, selected = final_test_auc(summary), selected_test_auc(summary)
    text = lambda v: f"{v:.4f}" if v is not None else "n/a"  # noqa: E731
    reached = test_steps_to_threshold(summary)
    threshold = summary.get("auc_threshold")
    when = f"step {reached}" if reached is not None else "not reached"
    took = "skipped (finished before)" if summary.get("skipped") else f"{summary.get('seconds', 0.0):.1f}s"
    return (
        f"test AUC final {text(final)}, at step {summary.get('selected_step')} (selected on validation) "
        f"{text(selected)}, test AUC > {threshold}: {when}, {took}"
    )
