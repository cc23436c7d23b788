"""The source ("ImageNet") checkpoints shipped in the package, so that the default study does not pretrain: where
they are, the manifest that says how each was made, and installing one into DIR after checking it.

  transfusion_jax/experiments/study/checkpoints/<model>.npz    each model's pretrained weights (pretrained.checkpoint)
  transfusion_jax/experiments/study/checkpoints/MANIFEST.json  per model: the file's sha256, the pretraining's
                                                               held-out source accuracy (G1 reads it), the design fields
                                                               that fix the pretraining, the command that made it

Made by the documented command (docs/study.md, round 7 §3), which pretrains with the design's own recipe in DIR and
copies the results here:

  python -m transfusion_jax.experiments.study.sources --workdir DIR [--variant default]

`--rebuild_sources` on the quickstart (design field `sources='build'`) pretrains in DIR instead of using them. A
shipped file whose sha256 differs from the manifest's, or a manifest made for other pretraining settings than the
design's, is refused before any work, naming what differs.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence

from transfusion_jax import pretrained
from transfusion_jax.experiments.study import execute
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.design import StudyConfigError, load_config
from transfusion_jax.train import writer

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")
MANIFEST = "MANIFEST.json"
COMMAND = "python -m transfusion_jax.experiments.study.sources --workdir DIR --variant {variant}"


class SourceCheckpointError(StudyConfigError):
    """A shipped source checkpoint is missing, damaged, or was made for another design."""


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pretraining_fields(c, model: str) -> dict:
    """Every design field the model's pretraining depends on (its data, model and recipe): a shipped checkpoint is
    the design's only if these equal the manifest's."""
    return json.loads(
        writer.dumps(
            {
                "family": c.family,
                "image_size": c.image_size,
                "widths": list(c.widths[model]),
                "source": c.source.to_dict(),
                "pretrain": c.pretrain.to_dict(),
                "batch_size": c.batch_size,
                "data_block": c.data_block,
            }
        )
    )


def read_manifest(directory: str | None = None) -> dict:
    path = os.path.join(directory or SHIPPED, MANIFEST)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def check_shipped(c, models: Sequence[str], directory: str | None = None) -> dict[str, dict]:
    """{model: its manifest entry} after checking each file's sha256 and pretraining fields; raises naming every
    problem otherwise (before any work: the study calls it with the config checks). `directory`: SHIPPED."""
    directory = directory or SHIPPED
    manifest, errors = read_manifest(directory), []
    for model in models:
        entry = manifest.get(model)
        path = os.path.join(directory, f"{model}.npz")
        if entry is None or not os.path.exists(path):
            errors.append(f"no shipped checkpoint for the {model} model in {directory}")
            continue
        if sha256(path) != entry["sha256"]:
            errors.append(f"{model}.npz does not match its sha256 in {MANIFEST} (damaged or replaced)")
        want, made = pretraining_fields(c, model), entry["design"]
        differ = sorted(k for k in want.keys() | made.keys() if want.get(k) != made.get(k))
        if differ:
            errors.append(f"the {model} checkpoint was pretrained with other settings ({', '.join(differ)})")
    if errors:
        remake = COMMAND.format(variant=c.variant)
        raise SourceCheckpointError(
            "The shipped source checkpoints cannot be used:\n  - " + "\n  - ".join(errors) + "\nPretrain in DIR "
            f"instead with --rebuild_sources (--config.sources=build), or remake them: {remake}"
        )
    return {model: manifest[model] for model in models}


def installed_or_pretrained(workdir: str, c, paths: dict[str, str], log=print) -> dict[str, dict]:
    """Each model's source checkpoint as the design says: the shipped one, checked and installed, or pretrained here
    (`execute.pretrain_all`); per model the summary the study reads."""
    if c.sources == "build":
        return execute.pretrain_all(workdir, c, paths, log)
    installed = install(workdir, c, c.models_run)
    for model, summary in installed.items():
        log(f"source checkpoint of the {model} model: shipped (sha256 checked), held-out source accuracy "
            f"{summary['val']['final']['accuracy']:.3f}")  # fmt: skip
    return installed


def install(workdir: str, c, models: Sequence[str], directory: str | None = None) -> dict[str, dict]:
    """Copies each model's checked shipped checkpoint to where the study reads its checkpoint
    (`workdir.checkpoint_of`), and returns per model the summary a pretraining run would have given as far as the
    study reads it (the held-out source accuracy), marked as shipped and not trained here."""
    entries = check_shipped(c, models, directory)
    directory = directory or SHIPPED
    out = {}
    for model, entry in entries.items():
        target = workdir_lib.checkpoint_of(workdir, model)
        if not os.path.exists(target) or sha256(target) != entry["sha256"]:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(directory, f"{model}.npz"), target + ".tmp")
            os.replace(target + ".tmp", target)
        out[model] = {"skipped": True, "shipped": True, "val": {"final": {"accuracy": entry["source_accuracy"]}}}
    return out


def ship(trained: str, path: str, command: str, model: str) -> None:
    """Writes the pretraining's final weights `trained` to `path` unchanged, with their metadata's `source` naming
    the command that made them instead of the machine path of its work directory (a shipped file names no path)."""
    variables, metadata = pretrained.load(trained)
    metadata = {k: v for k, v in metadata.items() if k not in ("format", "format_version")}
    pretrained.save(path, variables, {**metadata, "source": f"trained: {command} ({model} model)"})


def build(workdir: str, variant: str = "default", out: str | None = None, log=print) -> dict:
    """Pretrains every model of the design `variant` in DIR with the study's own recipe (sources='build') and writes
    the checkpoints and their manifest to `out`; returns the manifest."""
    out = out or SHIPPED
    c = load_config(variant, ["sources=build"])
    paths = execute.make_data(workdir, c, log)
    summaries = execute.pretrain_all(workdir, c, paths, log)
    os.makedirs(out, exist_ok=True)
    manifest = read_manifest(out)
    for model in c.models_run:
        path = os.path.join(out, f"{model}.npz")
        ship(workdir_lib.checkpoint_of(workdir, model), path, COMMAND.format(variant=variant), model)
        accuracy = summaries[model]["val"]["final"]["accuracy"]
        manifest[model] = {
            "sha256": sha256(path),
            "source_accuracy": float(accuracy),
            "design": pretraining_fields(c, model),
            "command": COMMAND.format(variant=variant),
            "file": os.path.relpath(path, out),
        }
        log(f"{model}: source accuracy {accuracy:.3f}, sha256 {manifest[model]['sha256'][:12]}...")
    with open(os.path.join(out, MANIFEST), "w") as f:
        f.write(writer.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transfusion_jax.experiments.study.sources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--workdir", required=True, help="where the source data and pretraining runs go")
    parser.add_argument("--variant", default="default")
    parser.add_argument(
        "--out", default=None, help="where the checkpoints and MANIFEST.json go (default: the package's)"
    )
    args = parser.parse_args(argv)
    build(os.path.abspath(args.workdir), args.variant, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
