"""The record of the design a work directory was started with (transfusion_jax/experiments/study/workdir.py)."""

import json

import pytest

from transfusion_jax.experiments.study import design, workdir


def test_a_design_record_names_each_nested_field_that_differs(tmp_path):
    """The first call records the design; the same design passes; another is refused naming its dotted fields; an
    older record is read through `upgrade`. Fails if a nested change goes unnamed or a difference passes."""
    record, first = "record.json", {"seeds": [0, 1], "target": {"train": 2000, "test": 2200}}
    workdir.check_design_record(str(tmp_path), record, first, "a thing")
    assert json.loads((tmp_path / record).read_text()) == first
    workdir.check_design_record(str(tmp_path), record, first, "a thing")
    changed = {"seeds": [0, 1], "target": {"train": 1000, "test": 2200}, "new": 1}
    with pytest.raises(design.StudyConfigError, match=r"holds a thing with other settings \(new, target\.train\)"):
        workdir.check_design_record(str(tmp_path), record, changed, "a thing")
    workdir.check_design_record(str(tmp_path), record, {**first, "new": 1}, "a thing", lambda d: {**d, "new": 1})
