"""The study's generated data (study.execute.make_data): the same bytes whatever the number of worker processes, in both
stream layouts (one stream per split, as the published runs used; a stream per block of images, as --scale uses)."""

import hashlib
import json
import os

import pytest

from transfusion_jax.experiments.study import design, execute, workdir


def _files(root) -> dict[str, str]:
    """relative path -> sha256 of every file under root/data but READY (which records the time taken)."""
    out = {}
    for folder, _, names in os.walk(root / "data"):
        for name in names:
            path = os.path.join(folder, name)
            if name != "READY":
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.mark.parametrize("block", [0, 8])
def test_make_data_writes_the_same_bytes_with_one_or_two_workers(tmp_path, block):
    written = {}
    for workers in (1, 2):
        c = design.load_config("mini", [f"data_block={block}", f"data_workers={workers}"])
        lines = []
        execute.make_data(str(tmp_path / f"w{workers}"), c, log=lines.append)
        assert f"{workers} process(es)" in lines[0]
        written[workers] = _files(tmp_path / f"w{workers}")
    s, t = c.source, c.target
    images = [p for p in written[1] if p.endswith(".jpeg")]
    assert len(images) == s.classes * (s.train_per_class + s.test_per_class) + t.train + t.validation + t.test + 10
    assert {"data/retina/trainLabels.csv", "data/retina/retinopathy_solution.csv"} <= set(written[1])
    assert written[1] == written[2]  # images, ids and labels (the CSVs) byte for byte
    # Every class of the fractal source is balanced in each split, in either layout.
    for split, per_class in (("train", s.train_per_class), ("test", s.test_per_class)):
        counts = [len(os.listdir(tmp_path / "w1" / "data" / "source" / split / d))
                  for d in sorted(os.listdir(tmp_path / "w1" / "data" / "source" / split))]  # fmt: skip
        assert counts == [per_class] * s.classes


def test_block_streams_are_a_different_layout_of_the_same_design(tmp_path):
    """data_block changes which stream draws each image (so the files differ), and is part of the design a workdir
    records; data_workers is not."""
    one = design.load_config("mini", ["data_workers=1"])
    blocks = design.load_config("mini", ["data_workers=1", "data_block=8"])
    for name, c in (("one", one), ("blocks", blocks)):
        execute.make_data(str(tmp_path / name), c, log=lambda _: None)
    one_files, block_files = _files(tmp_path / "one"), _files(tmp_path / "blocks")
    assert len(one_files) == len(block_files)  # the same images and eye ids; other pixels and labels
    assert {p for p in one_files if "retina" in p} == {p for p in block_files if "retina" in p}
    assert not set(one_files.values()) & set(block_files.values())  # no image or label file in common
    workdir.check_workdir(str(tmp_path / "one"), one)
    workdir.check_workdir(str(tmp_path / "one"), design.load_config("mini", ["data_workers=2"]))
    with pytest.raises(design.StudyConfigError, match=r"other settings \(data_block\)"):
        workdir.check_workdir(str(tmp_path / "one"), blocks)


def test_a_damaged_test_split_stops_the_study_before_fine_tuning(tmp_path):
    """The runs evaluate validation only; the test split still gets their preflight before any of them trains: a
    missing test image is named (not found after every run has trained), a whole target passes."""
    c = design.load_config("mini", ["data_workers=1"])
    paths = execute.make_data(str(tmp_path), c, log=lambda _: None)
    execute.check_target_splits(str(tmp_path), c, paths)
    with open(os.path.join(paths["target"], "retinopathy_solution.csv")) as f:
        rows = f.read().splitlines()
    private = next(row.split(",")[0] for row in rows[1:] if row.endswith("Private"))
    os.remove(os.path.join(paths["target"], "test", f"{private}.jpeg"))
    with pytest.raises(Exception, match=private):
        execute.check_target_splits(str(tmp_path), c, paths)


def test_a_workdir_recorded_with_a_removed_field_is_still_accepted(tmp_path):
    """Studies recorded before `filters_seed` (never read) left the design carry it in study_config.json: the same
    design today is accepted there, another is still refused."""
    c = design.load_config("mini")
    workdir.check_workdir(str(tmp_path), c)
    path = tmp_path / workdir.DESIGN_RECORD
    path.write_text(json.dumps({**json.loads(path.read_text()), "filters_seed": 0}))
    workdir.check_workdir(str(tmp_path), c)
    with pytest.raises(design.StudyConfigError, match=r"other settings \(seeds\)"):
        workdir.check_workdir(str(tmp_path), design.load_config("mini", ["seeds=(0, 1, 2)"]))
