"""A real multi-process job through the CLI: 2 processes x 2 CPU devices on 127.0.0.1 (JAX's distributed runtime,
gloo collectives), checked against 1 process x 4 devices, and killed with SIGKILL after a checkpoint and restarted.

Process 0 gets its settings from flags, process 1 from JAX_* environment variables. Checkpoints and evaluations
every 5 steps make the first evaluation (always a new best) coincide with a periodic checkpoint, and leave
evaluations that are not a new best after the restart point: the two situations that used to hang a multi-process
job (shared orbax barrier names; a best-so-far only process 0 knew). Every wait is bounded and every process is
killed by PID at teardown.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import CACHE_DIR
from tb_events import scalars

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, BATCH = 20, 8  # the local config's: 20 steps of global batch 8, 64 train, validation and test examples
ARGS = [
    "--config=configs/retina.py:cbr_small,random,local",
    "--config.progress_bar=False",
    "--config.checkpoint_every_steps=5",
    "--config.eval_every_steps=5",
    "--config.keep_checkpoints=10",
    # No augmentation: the per-example device augmentation (a jitted warp per process) rounds differently under 1 and
    # 2 processes, and 20 Adam steps amplify that to ~1e-4 (measured: 7.7e-5 with it, 2e-6 without), hiding what this
    # test compares (sharding, the gradient all-reduce, data shares). Resume with augmentation is exact and tested in
    # test_trainer.py and tests/data.
    "--config.data.augment.enabled=False",
]
CLI = [sys.executable, "-m", "transfusion_jax.main"]
RECORDING_CLI = [sys.executable, os.path.join(REPO, "tests", "train", "cli_recording_loads.py")]
TIMEOUT_S = 300


def _free_port() -> int:
    """A port the kernel just found free (bound then released); each job gets its own."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
        "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


class _Jobs:
    """Processes a test starts, with their logs; any still running at teardown is killed by PID with SIGKILL
    (JAX catches SIGTERM)."""

    def __init__(self, log_dir):
        self.log_dir, self.procs = log_dir, {}

    def start(self, name, cmd, env):
        with open(self.log_dir / f"{name}.log", "w") as log:
            self.procs[name] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self.procs[name]

    def log(self, name) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def wait(self, *names):
        deadline = time.time() + TIMEOUT_S
        for name in names:
            try:
                code = self.procs[name].wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after {TIMEOUT_S}s (a hang?):\n{self.log(name)[-3000:]}")
            assert code == 0, f"{name} exited with {code}:\n{self.log(name)[-3000:]}"

    def start_pair(self, name, workdir, cmd=CLI, record_loads=False):
        """A 2-process x 2-device job: process 0 configured by flags, process 1 by environment variables."""
        address = f"127.0.0.1:{_free_port()}"
        flags = [f"--coordinator_address={address}", "--num_processes=2", "--process_id=0"]
        env1 = {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
        loads = lambda i: {"LOAD_LOG": str(self.log_dir / f"{name}.{i}.loads")} if record_loads else {}  # noqa: E731
        self.start(f"{name}.0", cmd + ARGS + [f"--workdir={workdir}"] + flags, _env(2, **loads(0)))
        self.start(f"{name}.1", cmd + ARGS + [f"--workdir={workdir}"], _env(2, **env1, **loads(1)))
        return f"{name}.0", f"{name}.1"

    def kill_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def jobs(tmp_path):
    (tmp_path / "logs").mkdir()
    started = _Jobs(tmp_path / "logs")
    yield started
    started.kill_all()


def _restore_on_one_device(workdir, step=STEPS):
    path = os.path.join(workdir, "checkpoints", "latest", str(step), "default")
    checkpointer = ocp.StandardCheckpointer()
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
        checkpointer.metadata(path).item_metadata.tree,
    )
    state = checkpointer.restore(path, target)
    assert {leaf.sharding for leaf in jax.tree_util.tree_leaves(state)} == {one_device}
    return state


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _without_timing(records):
    return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]


def _loads(path):
    """{source seed: [example index, ...] in decoding order} from a LOAD_LOG file, without each source's first load:
    before step 1 every process decodes one example of every split it will use (the preflight check)."""
    by_source = {}
    with open(path) as f:
        for seed, index in map(json.loads, f):
            by_source.setdefault(seed, []).append(index)
    return {seed: order[1:] for seed, order in by_source.items()}


def test_two_processes_match_one_and_survive_sigkill(tmp_path, jobs):
    single, pair, killed = tmp_path / "single", tmp_path / "pair", tmp_path / "killed"
    jobs.start(
        "single", RECORDING_CLI + ARGS + [f"--workdir={single}"], _env(4, LOAD_LOG=str(jobs.log_dir / "single.loads"))
    )
    pair_names = jobs.start_pair("pair", pair, cmd=RECORDING_CLI, record_loads=True)
    victims = jobs.start_pair("victim", killed)

    # SIGKILL both victim processes once the step-10 checkpoint has finished (its checksum is written), before the
    # end: the first evaluation after the restart point is then not a new best.
    deadline = time.time() + TIMEOUT_S
    finished = os.path.join(killed, "checkpoints", "latest", "10", "checksums.json")
    while (
        not os.path.exists(finished) and time.time() < deadline and all(jobs.procs[v].poll() is None for v in victims)
    ):
        time.sleep(0.02)
    assert os.path.exists(finished), "no finished checkpoint:\n" + jobs.log(victims[0])[-3000:]
    assert all(jobs.procs[v].poll() is None for v in victims), "the victim ended before it could be killed"
    for v in victims:
        jobs.procs[v].kill()
    for v in victims:
        jobs.procs[v].wait()
    resumed = jobs.start_pair("resumed", killed)
    jobs.wait("single", *pair_names, *resumed)

    # 2 processes x 2 devices = 1 process x 4 devices, up to reduction order; evaluation identical.
    for a, b in zip(
        jax.tree_util.tree_leaves(_restore_on_one_device(pair)),
        jax.tree_util.tree_leaves(_restore_on_one_device(single)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    pair_evals = [r for r in _records(pair) if r["split"] in ("val", "test")]
    single_evals = [r for r in _records(single) if r["split"] in ("val", "test")]
    assert [(r["step"], r["split"], r["num_examples"], r["auc"]) for r in pair_evals] == [
        (r["step"], r["split"], r["num_examples"], r["auc"]) for r in single_evals
    ]
    assert [r["num_examples"] for r in pair_evals] == [64.0] * 8
    assert os.listdir(pair / "checkpoints" / "best") == os.listdir(single / "checkpoints" / "best")

    # Each process decodes exactly its half of every global batch, train and eval: together, what one process does.
    single_loads = _loads(jobs.log_dir / "single.loads")
    share0, share1 = _loads(jobs.log_dir / "pair.0.loads"), _loads(jobs.log_dir / "pair.1.loads")
    assert len(single_loads) == 3  # the train, validation and test sources
    for seed, order in single_loads.items():
        batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
        halves = lambda share: [share[seed][i : i + BATCH // 2] for i in range(0, len(share[seed]), BATCH // 2)]  # noqa: E731
        assert len(batches) >= STEPS
        assert [h0 + h1 for h0, h1 in zip(halves(share0), halves(share1), strict=True)] == batches

    # One writer: each (step, split) once in metrics.jsonl, each (tag, step) once in one TensorBoard event file.
    keys = [(r["step"], r["split"]) for r in _records(pair)]
    assert len(keys) == len(set(keys)) == 3 * STEPS // 5  # train, val and test records every 5 steps
    events = scalars(pair / "tensorboard")
    assert len({name for name, *_ in events}) == 1
    assert len(events) == len({(tag, step) for _, tag, step, _ in events})

    # Killed after a checkpoint and restarted: the same run as the unbroken one, bit for bit.
    restart = re.search(r"Resuming from the checkpoint at step (\d+)", jobs.log(resumed[0]))
    assert restart, jobs.log(resumed[0])[-3000:]
    resume_step = int(restart.group(1))
    # What used to hang: after a restart only process 0 knew the best so far, so at the next evaluation that was
    # not a new best, process 1 alone started the collective best save.
    pair_val = [r for r in pair_evals if r["split"] == "val"]
    best_before = max(r["auc"] for r in pair_val if r["step"] <= resume_step)
    assert next(r["auc"] for r in pair_val if r["step"] > resume_step) <= best_before
    for a, b in zip(
        jax.tree_util.tree_leaves(_restore_on_one_device(pair)),
        jax.tree_util.tree_leaves(_restore_on_one_device(killed)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert _without_timing(_records(pair)) == _without_timing(_records(killed))
    assert os.listdir(pair / "checkpoints" / "best") == os.listdir(killed / "checkpoints" / "best")
    with open(pair / "summary.json") as f1, open(killed / "summary.json") as f2:
        assert json.load(f1) == json.load(f2)

    def points(workdir):
        return sorted((t, s, v) for _, t, s, v in scalars(workdir / "tensorboard") if "per_second" not in t)

    assert points(pair) == points(killed)


def test_best_and_periodic_saves_at_the_same_step_in_two_processes(tmp_path, jobs):
    """8 steps that are each a new best and a periodic checkpoint, then the newest damaged and the checkpoints
    reopened: no hang (distinct orbax barrier names), the checksums cover both processes' files (written after the
    whole save), and both processes fall back to the same step with the same loop state."""
    address = f"127.0.0.1:{_free_port()}"
    worker = os.path.join(REPO, "tests", "train", "checkpoint_worker.py")
    names = [f"worker.{i}" for i in range(2)]
    for i, name in enumerate(names):
        jobs.start(name, [sys.executable, worker, address, str(i), str(tmp_path / "run")], _env(2))
    jobs.wait(*names)
    results = [json.loads(jobs.log(name).split("RESULT ", 1)[1].splitlines()[0]) for name in names]
    assert results[0] == results[1] == {"decision": True, "start_step": 7, "loop": {"best_auc": 0.7}, "w0": 6.0}
    latest = tmp_path / "run" / "checkpoints" / "latest"
    assert sorted(os.listdir(latest)) == ["6", "7"]  # 8 moved to damaged/
    assert os.listdir(tmp_path / "run" / "checkpoints" / "best") == []  # best 8 is past the resume step: dropped
    with open(latest / "7" / "checksums.json") as f:
        files = json.load(f)["files"]
    assert any("process_1" in name for name in files) and any("process_0" in name for name in files)
