"""models x inits x seeds of one configs/*.py file, run one after another in this process, resumable."""

import os
from collections.abc import Callable, Sequence

from transfusion_jax.experiments import runs
from transfusion_jax.train import config_lib


def build_config(
    module, spec: runs.RunSpec, *, local: bool, pretrained: Callable[[str], str], overrides: Sequence[str]
):
    """The config of one run: the file's get_config('model,init[,local]'), its seed, checkpoint and overrides."""
    config = module.get_config(f"{spec.model},{spec.init}" + (",local" if local else ""))
    config.seed = spec.seed
    path = pretrained(config.model.name)
    if path:
        config.pretrained = path
    return config_lib.apply_overrides(config, overrides)


def sweep(
    config_path: str,
    models: list[str],
    inits: list[str],
    seeds: list[int],
    root: str,
    *,
    local: bool = False,
    pretrained: str = "",
    overrides: Sequence[str] = (),
    train_fn: Callable | None = None,
    keep_going: bool = True,
) -> list[dict]:
    """Runs every (model, init, seed) not finished yet under ROOT/<config stem>/...; prints a line per run.

    Configs are all built (and so validated) before the first run starts, so a typo fails in seconds, not hours.
    Returns one record per run: spec fields, workdir, status ('done' | 'skipped' | 'failed') and the summary.
    """
    module = runs.load_config_module(config_path)
    group = os.path.splitext(os.path.basename(config_path))[0]
    specs = runs.plan(group, models, inits, seeds)
    lookup = runs.parse_pretrained(pretrained)
    configs = [build_config(module, s, local=local, pretrained=lookup, overrides=overrides) for s in specs]
    records = []
    for n, (spec, config) in enumerate(zip(specs, configs), 1):
        workdir = spec.workdir(root)
        prefix = f"[{n}/{len(specs)}] {spec.label()}"
        print(
            f"{prefix}: {'finished before, skipping' if runs.is_finished(workdir) else 'training'} ({workdir})",
            flush=True,
        )
        try:
            summary = runs.run(config, workdir, train_fn)
        except Exception as e:  # one bad run must not stop a night-long sweep
            print(f"{prefix}: FAILED: {type(e).__name__}: {e}", flush=True)
            records.append({**spec.__dict__, "workdir": workdir, "status": "failed", "error": str(e)})
            if not keep_going:
                raise
            continue
        print(f"{prefix}: {runs.describe(summary)}", flush=True)
        status = "skipped" if summary["skipped"] else "done"
        records.append({**spec.__dict__, "workdir": workdir, "status": status, "summary": summary})
    return records
