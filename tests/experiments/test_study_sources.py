"""The shipped source checkpoints (study.sources): made by the documented command, installed into a study's DIR only
after their sha256 and the pretraining settings they were made with are checked, and refused otherwise before any
work, naming what is wrong. Built here at the tests' size (--mini) into a folder of the test's own."""

import json
import os
import re

import chex
import pytest

from transfusion_jax import pretrained
from transfusion_jax.experiments.study import design, sources
from transfusion_jax.experiments.study import workdir as workdir_lib


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    out = root / "checkpoints"
    manifest = sources.main(["--workdir", str(root / "work"), "--variant", "mini", "--out", str(out)])
    assert manifest == 0
    return root, out


def test_the_command_writes_each_models_checkpoint_with_its_checksum_and_settings(built):
    root, out = built
    manifest = json.loads((out / sources.MANIFEST).read_text())
    c = design.load_config("mini")
    assert set(manifest) == {"small", "large"}
    for model, entry in manifest.items():
        path = out / f"{model}.npz"
        assert entry["sha256"] == sources.sha256(str(path))
        assert entry["design"] == sources.pretraining_fields(c, model) and entry["command"].endswith("--variant mini")
        summary = json.loads((root / "work" / "runs" / "pretrain" / model / "summary.json").read_text())
        assert entry["source_accuracy"] == summary["val"]["final"]["accuracy"]  # what G1 reads, as trained
        trained = workdir_lib.checkpoint_of(str(root / "work"), model)
        variables, metadata = pretrained.load(str(path))
        trained_variables, trained_metadata = pretrained.load(trained)
        chex.assert_trees_all_equal(variables, trained_variables)  # the pretraining's own final weights, to the bit
        assert variables["params"]["layer1"]["conv"]["kernel"].shape[-1] == c.widths[model][0]
        assert trained_metadata["source"] == f"trained:{os.path.dirname(trained)}"
        assert metadata == {**trained_metadata, "source": f"trained: {entry['command']} ({model} model)"}
        assert str(root) not in (out / f"{model}.npz").read_bytes().decode("latin-1")  # no machine path shipped


def test_the_shipped_files_name_no_machine_path():
    """What the package ships names the command that made it, not the directory it was made in."""
    for model, entry in sources.read_manifest().items():
        metadata = pretrained.read_metadata(os.path.join(sources.SHIPPED, entry["file"]))
        assert metadata["source"] == f"trained: {entry['command']} ({model} model)"
        assert not re.findall(r"(?<![\w.])/(?:tmp|home|root|work|Users|var|private)/", json.dumps(metadata))


def test_install_checks_then_copies_and_gives_the_source_accuracy(built, tmp_path):
    _, out = built
    c = design.load_config("mini", ["sources=shipped"])
    got = sources.install(str(tmp_path), c, c.models_run, str(out))
    manifest = sources.read_manifest(str(out))
    for model in c.models_run:
        target = workdir_lib.checkpoint_of(str(tmp_path), model)
        assert sources.sha256(target) == manifest[model]["sha256"]
        assert got[model]["val"]["final"]["accuracy"] == manifest[model]["source_accuracy"]
        assert got[model]["skipped"] and got[model]["shipped"]


def test_a_damaged_file_or_another_design_is_refused_naming_it(built, tmp_path):
    _, out = built
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in os.listdir(out):
        (damaged / name).write_bytes((out / name).read_bytes())
    with open(damaged / "large.npz", "ab") as f:
        f.write(b"\0")
    c = design.load_config("mini", ["sources=shipped"])
    with pytest.raises(sources.SourceCheckpointError, match=r"large\.npz does not match its sha256"):
        sources.check_shipped(c, c.models_run, str(damaged))
    other = design.load_config("mini", ["sources=shipped", "pretrain.steps=5", "widths.small=(4, 8, 8, 16)"])
    with pytest.raises(sources.SourceCheckpointError) as e:
        sources.check_shipped(other, other.models_run, str(out))
    assert "the small checkpoint was pretrained with other settings (pretrain, widths)" in str(e.value)
    assert "the large checkpoint was pretrained with other settings (pretrain)" in str(e.value)
    assert "--rebuild_sources" in str(e.value)
    with pytest.raises(sources.SourceCheckpointError, match="no shipped checkpoint for the small model"):
        sources.check_shipped(c, c.models_run, str(tmp_path / "nowhere"))
