"""MetricWriter: a run that starts at step S leaves metrics.jsonl and TensorBoard holding each (step, split) once,
up to S from the killed run and after S from the new one, in every case including S = 0."""

import json
import math

import pytest
from tb_events import scalars

from transfusion_jax.train.writer import MetricWriter, read_records


def _write_run(workdir, start_step, steps, value):
    writer = MetricWriter(workdir, start_step=start_step)
    for step in steps:
        writer.write(step, "train", {"loss": value + step, "grade >= 2": float("nan")})
        if step % 10 == 0:
            writer.write(step, "val", {"auc": value})
    writer.close()


@pytest.mark.parametrize("restart_at", [0, 10, 20])
def test_restart_keeps_records_up_to_the_restored_step_and_tensorboard_once_each(tmp_path, restart_at):
    _write_run(tmp_path, 0, range(5, 35, 5), value=100.0)  # the killed run got to step 30
    # Event files are named by the second they were opened; the killed run's is from an earlier one.
    (killed_events,) = (tmp_path / "tensorboard").iterdir()
    killed_events.rename(killed_events.with_name("events.out.tfevents.1000000000.killed"))
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 35, "split": "tr')  # and was killed mid-line
    _write_run(tmp_path, restart_at, range(restart_at + 5, 45, 5), value=200.0)  # resumed from `restart_at`

    records = read_records(tmp_path / "metrics.jsonl")
    keys = [(r["step"], r["split"]) for r in records]
    assert len(keys) == len(set(keys))
    expected_steps = list(range(5, 45, 5))
    assert [r["step"] for r in records if r["split"] == "train"] == expected_steps
    for r in records:
        assert r["loss" if r["split"] == "train" else "auc"] >= (100.0 if r["step"] <= restart_at else 200.0)
        assert r["loss" if r["split"] == "train" else "auc"] < (200.0 if r["step"] <= restart_at else math.inf)

    events = scalars(tmp_path / "tensorboard")
    assert len({name for name, *_ in events}) == 1, "one fresh event file after a restart"
    points = [(tag, step) for _, tag, step, _ in events]
    assert len(points) == len(set(points)), "a (tag, step) pair appears twice"
    by_point = {(tag, step): value for _, tag, step, value in events}
    for r in records:
        if r["split"] == "train":
            assert by_point[("train/loss", r["step"])] == pytest.approx(r["loss"])
            assert math.isnan(by_point[("train/grade_2", r["step"])])  # tag sanitised, NaN kept (also on rebuild)
            assert r["grade >= 2"] is None  # standard JSON has no NaN: an undefined metric is null
        else:
            assert by_point[("val/auc", r["step"])] == pytest.approx(r["auc"])
    expected_points = {(f"{r['split']}/{k}", r["step"]) for r in records for k in r if k not in ("step", "split")}
    assert set(by_point) == {(tag.replace("grade >= 2", "grade_2"), step) for tag, step in expected_points}


def test_only_the_enabled_writer_touches_files(tmp_path):
    writer = MetricWriter(tmp_path, start_step=0, enabled=False)
    writer.write(5, "train", {"loss": 1.0})
    writer.close()
    assert list(tmp_path.iterdir()) == []
    assert writer.records() == []


def test_records_round_trip_as_json(tmp_path):
    writer = MetricWriter(tmp_path, start_step=0)
    writer.write(3, "val", {"auc": 0.75, "loss": float("inf")})
    writer.close()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 3, "split": "val", "auc": 0.75, "loss": None}
    ]
