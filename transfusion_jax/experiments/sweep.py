"""models x inits x seeds of one configs/*.py file, trained in this process, resumable; compatible runs (one
model and recipe, different inits and seeds) are stacked into one program (`runs.train_many`)."""

import os
from collections.abc import Callable, Sequence

from transfusion_jax.experiments import runs
from transfusion_jax.train import config_lib


def build_config(
    module,
    spec: runs.RunSpec,
    *,
    local: bool,
    pretrained: Callable[[str], str],
    overrides: Sequence[str],
    config_flags: Sequence[str] = (),
):
    """The config of one run: the file's get_config('model,init[,local]'), its seed, checkpoint, 'FIELD=VALUE'
    overrides and command-line `--config.FIELD=VALUE` flags (both parsed by ml_collections, `config_lib`)."""
    config = module.get_config(f"{spec.model},{spec.init}" + (",local" if local else ""))
    config.seed = spec.seed
    path = pretrained(config.model.name)
    if path:
        config.pretrained = path
    return config_lib.apply_flags(config_lib.apply_overrides(config, overrides), config_flags)


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
    config_flags: Sequence[str] = (),
    train_fn: Callable | None = None,
    keep_going: bool = True,
    max_runs_per_program: int = 0,
    programs_at_once: int = 1,
) -> list[dict]:
    """Runs every (model, init, seed) not finished yet under ROOT/<config stem>/...; prints a line per run.

    Configs are all built (and so validated) before the first run starts, so a typo fails in seconds, not hours.
    Compatible runs train stacked, at most `max_runs_per_program` per program (0: no limit; 1: one at a time), and
    `programs_at_once` programs train side by side (each in its own thread; the numbers do not depend on it).
    Returns one record per run: spec fields, workdir, status ('done' | 'skipped' | 'failed') and the summary.
    A failed run does not stop the others; with `keep_going=False` the sweep raises once they are done.
    """
    module = runs.load_config_module(config_path)
    group = os.path.splitext(os.path.basename(config_path))[0]
    specs = runs.plan(group, models, inits, seeds)
    lookup = runs.parse_pretrained(pretrained)
    configs = [
        build_config(module, s, local=local, pretrained=lookup, overrides=overrides, config_flags=config_flags)
        for s in specs
    ]
    workdirs = [spec.workdir(root) for spec in specs]
    prefix = [f"[{n}/{len(specs)}] {spec.label()}" for n, spec in enumerate(specs, 1)]
    for n, workdir in enumerate(workdirs):
        print(f"{prefix[n]}: {'finished before, skipping' if runs.is_finished(workdir) else 'training'} ({workdir})")
    records: list = [None] * len(specs)

    def done(n: int, outcome) -> None:
        spec = specs[n].__dict__
        if isinstance(outcome, Exception):
            print(f"{prefix[n]}: FAILED: {type(outcome).__name__}: {outcome}", flush=True)
            records[n] = {**spec, "workdir": workdirs[n], "status": "failed", "error": str(outcome)}
        else:
            print(f"{prefix[n]}: {runs.describe(outcome)}", flush=True)
            status = "skipped" if outcome["skipped"] else "done"
            records[n] = {**spec, "workdir": workdirs[n], "status": status, "summary": outcome}

    runs.train_many(
        configs,
        workdirs,
        max_runs_per_program=max_runs_per_program,
        programs_at_once=programs_at_once,
        train_fn=train_fn,
        keep_going=keep_going,
        on_done=done,
    )
    return records
