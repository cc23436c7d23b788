"""The sweep runner: plan, overrides, per-model checkpoints, skipping finished runs, failures; one real tiny run."""

import json
import os

import pytest

from transfusion_jax.experiments import __main__ as cli
from transfusion_jax.experiments import sweep
from transfusion_jax.train import config_lib, rundir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RETINA = os.path.join(REPO, "configs", "retina.py")


class FakeTrainer:
    """Records the configs it is given and writes the summary a real run would."""

    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on

    def __call__(self, config, workdir):
        self.calls.append((config, workdir))
        if self.fail_on and self.fail_on in workdir:
            raise RuntimeError("boom")
        summary = {
            "selected_step": 5,
            "auc_threshold": 0.91,
            "test": {"final": {"auc": 0.9}, "selected": {"auc": 0.9}, "steps_to_threshold": None},
        }
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, rundir.SUMMARY), "w") as f:
            json.dump(summary, f)
        return summary


def test_sweep_runs_each_once_and_skips_finished(tmp_path):
    fake = FakeTrainer()
    kwargs = dict(
        pretrained="cbr_small=/ckpt/small.npz,cbr_tiny=/ckpt/tiny.npz",
        overrides=["batch_size=64", "data.root=/data/dr", "optimizer.learning_rate=3e-4"],
        train_fn=fake,
    )
    records = sweep.sweep(RETINA, ["cbr_small", "cbr_tiny"], ["random", "transfer"], [0, 1], str(tmp_path), **kwargs)
    assert [r["status"] for r in records] == ["done"] * 8
    assert len(fake.calls) == 8
    config, workdir = fake.calls[0]
    assert workdir == os.path.join(str(tmp_path), "retina", "cbr_small", "random", "seed_0")
    assert config.batch_size == 64 and config.data.root == "/data/dr"
    assert config.optimizer.learning_rate == pytest.approx(3e-4)
    by_dir = {w: c for c, w in fake.calls}
    assert (
        by_dir[os.path.join(str(tmp_path), "retina", "cbr_tiny", "transfer", "seed_1")].pretrained == "/ckpt/tiny.npz"
    )
    assert by_dir[os.path.join(str(tmp_path), "retina", "cbr_tiny", "transfer", "seed_1")].seed == 1

    os.remove(os.path.join(str(tmp_path), "retina", "cbr_tiny", "random", "seed_1", rundir.SUMMARY))
    again = FakeTrainer()
    records = sweep.sweep(
        RETINA,
        ["cbr_small", "cbr_tiny"],
        ["random", "transfer"],
        [0, 1],
        str(tmp_path),
        **{**kwargs, "train_fn": again},
    )
    assert [w for _, w in again.calls] == [os.path.join(str(tmp_path), "retina", "cbr_tiny", "random", "seed_1")]
    assert sum(r["status"] == "skipped" for r in records) == 7


def test_failed_run_is_marked_and_the_sweep_goes_on(tmp_path):
    fake = FakeTrainer(fail_on=os.path.join("transfer", "seed_0"))
    records = sweep.sweep(
        RETINA, ["cbr_small"], ["random", "transfer"], [0], str(tmp_path), train_fn=fake, pretrained="/ckpt.npz"
    )
    assert [r["status"] for r in records] == ["done", "failed"]
    marker = os.path.join(str(tmp_path), "retina", "cbr_small", "transfer", "seed_0", rundir.FAILED)
    assert "RuntimeError: boom" in open(marker).read()


def test_bad_inputs_fail_before_any_run(tmp_path):
    fake = FakeTrainer()
    with pytest.raises(ValueError, match="Unknown config field 'optimizer.lr'"):
        sweep.sweep(RETINA, ["cbr_small"], ["random"], [0], str(tmp_path), overrides=["optimizer.lr=1"], train_fn=fake)
    with pytest.raises(ValueError, match="Unknown init 'imagenet'"):
        sweep.sweep(RETINA, ["cbr_small"], ["random", "imagenet"], [0], str(tmp_path), train_fn=fake)
    with pytest.raises(FileNotFoundError, match="configs/retina.py"):
        sweep.sweep("nope.py", ["cbr_small"], ["random"], [0], str(tmp_path), train_fn=fake)
    assert fake.calls == []


def test_override_types():
    c = config_lib.apply_overrides(
        config_lib.base_config(),
        ["progress_bar=false", "freeze=('layer1', 'layer2')", "num_train_steps=7", "data.subset_size=5000"],
    )
    assert c.progress_bar is False and c.freeze == ("layer1", "layer2") and c.num_train_steps == 7
    assert c.data.subset_size == 5000
    assert config_lib.apply_overrides(c, ["freeze=conv1"]).freeze == ("conv1",)  # one bare value is a 1-tuple
    with pytest.raises(ValueError, match="Bad value in override 'num_train_steps=many'"):
        config_lib.apply_overrides(c, ["num_train_steps=many"])


def test_cli_real_tiny_run_then_skip_then_report(tmp_path, capsys):
    """One real (runlocal-sized) training run through the command line, then a rerun that skips it."""
    argv = [
        "sweep",
        "--config",
        RETINA,
        "--models",
        "cbr_small",
        "--inits",
        "random",
        "--seeds",
        "0",
        "--workdir",
        str(tmp_path),
        "--local",
        "--config.num_train_steps=10",
        "--config.progress_bar=false",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "[1/1] retina cbr_small random seed 0: training" in out and "test AUC final" in out
    summary = json.load(open(os.path.join(str(tmp_path), "retina", "cbr_small", "random", "seed_0", rundir.SUMMARY)))
    assert summary["test"]["final"]["step"] == 10
    assert cli.main(argv) == 0
    assert "finished before, skipping" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path)]) == 0
    assert "| cbr_small | random | 1 |" in capsys.readouterr().out


def test_cli_passes_max_runs_per_program_and_programs_at_once(monkeypatch, tmp_path):
    seen = {}

    def fake_sweep(*args, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr(sweep, "sweep", fake_sweep)
    base = ["sweep", "--config", RETINA, "--models", "cbr_small", "--inits", "random", "--workdir", str(tmp_path)]
    assert cli.main(base) == 0 and seen["max_runs_per_program"] == 0  # default: every compatible run stacked
    assert cli.main([*base, "--max_runs_per_program", "1"]) == 0 and seen["max_runs_per_program"] == 1
    assert seen["programs_at_once"] == 1  # default: one program at a time
    assert cli.main([*base, "--programs_at_once", "2"]) == 0 and seen["programs_at_once"] == 2


def test_sweep_hands_programs_at_once_to_train_many(monkeypatch, tmp_path):
    from transfusion_jax.experiments import runs

    seen = {}
    monkeypatch.setattr(runs, "train_many", lambda *args, **kwargs: seen.update(kwargs))
    sweep.sweep(RETINA, ["cbr_small"], ["random"], [0], str(tmp_path), programs_at_once=2)
    assert seen["programs_at_once"] == 2


def test_cli_hands_config_flags_to_ml_collections_as_typed(monkeypatch, tmp_path):
    """`--config.*` arguments reach ml_collections' parser as the user typed them (a space-separated value too), not
    split by hand; a field the config lacks, a stray argument, or a flag on a command that takes none is an error."""
    seen = {}
    monkeypatch.setattr(sweep, "sweep", lambda *args, **kwargs: seen.update(kwargs) or [])
    base = ["sweep", "--config", RETINA, "--models", "cbr_small", "--inits", "random", "--workdir", str(tmp_path)]
    flags = ["--config.batch_size", "64", "--config.freeze=('layer1', 'layer2')"]
    assert cli.main([*base, *flags]) == 0 and seen["config_flags"] == flags
    c = config_lib.apply_flags(config_lib.base_config(), seen["config_flags"])
    assert c.batch_size == 64 and c.freeze == ("layer1", "layer2")
    with pytest.raises(ValueError, match="Unknown config field 'optimizer.lr'"):
        config_lib.apply_flags(config_lib.base_config(), ["--config.optimizer.lr=1"])
    with pytest.raises(ValueError, match="Not a config override.*stray"):
        config_lib.apply_flags(config_lib.base_config(), ["--config.batch_size=8", "stray"])
    with pytest.raises(SystemExit):
        cli.main(["report", str(tmp_path), "--config.batch_size=3"])
