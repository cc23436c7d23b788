"""Where a multi-process job's settings come from: flags, then JAX_* environment variables, then a detected launcher;
and the clear errors for what is missing or inconsistent (the CLI's, before anything starts)."""

import os
import subprocess
import sys

import pytest

from transfusion_jax.train import partition

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FULL_ENV = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
SLURM_ENV = {
    "SLURM_JOB_ID": "7",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}


def test_single_process_by_default():
    assert partition.distributed_settings("auto", env={}) is None
    assert partition.distributed_settings("false", env={}) is None
    assert partition.distributed_settings("auto", env={**SLURM_ENV, "SLURM_NTASKS": "1"}) is None  # one task


def test_settings_from_the_environment_and_flags_override_it():
    assert partition.distributed_settings("auto", env=FULL_ENV) == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 3,
    }
    assert partition.distributed_settings(
        "auto", coordinator_address="127.0.0.1:99", num_processes=2, process_id=0, env=FULL_ENV
    ) == {"coordinator_address": "127.0.0.1:99", "num_processes": 2, "process_id": 0}


@pytest.mark.parametrize(
    "env",
    [SLURM_ENV, {"TPU_WORKER_HOSTNAMES": "t1,t2"}, {"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"}],
    ids=["slurm", "tpu_slice", "open_mpi"],
)
def test_a_detected_launcher_leaves_the_rest_to_jax(env):
    assert partition.distributed_settings("auto", env=env) == {
        "coordinator_address": None,
        "num_processes": None,
        "process_id": None,
    }
    assert partition.distributed_settings("auto", process_id=0, env=env)["process_id"] == 0


def test_true_always_starts_and_false_refuses_settings():
    assert partition.distributed_settings("true", env={}) == dict.fromkeys(
        ("coordinator_address", "num_processes", "process_id")
    )
    with pytest.raises(ValueError, match="--distributed=false, but num_processes given"):
        partition.distributed_settings("false", num_processes=2, env={})


@pytest.mark.parametrize(
    "kwargs, env, message",
    [
        ({}, {"JAX_COORDINATOR_ADDRESS": "h:1"}, "num_processes, process_id missing: pass --num_processes, "),
        ({"num_processes": 2, "process_id": 0}, {}, r"coordinator_address missing: .*JAX_COORDINATOR_ADDRESS"),
        ({"process_id": 2}, {**FULL_ENV, "JAX_NUM_PROCESSES": "2"}, r"must be in \[0, 2\)"),
        ({"num_processes": 0, "process_id": 0}, {"JAX_COORDINATOR_ADDRESS": "h:1"}, "at least 1"),
        ({}, {**FULL_ENV, "JAX_COORDINATOR_ADDRESS": "10.0.0.1"}, "must be host:port"),
        ({}, {**FULL_ENV, "JAX_PROCESS_ID": "one"}, "JAX_PROCESS_ID='one' is not an integer"),
        ({}, {}, "must be auto, true or false"),
    ],
    ids=["only_coordinator", "no_coordinator", "id_out_of_range", "zero_processes", "no_port", "not_int", "mode"],
)
def test_missing_or_inconsistent_settings_are_named(kwargs, env, message):
    mode = "maybe" if message.startswith("must be auto") else "auto"
    with pytest.raises(ValueError, match=message):
        partition.distributed_settings(mode, env=env, **kwargs)


def test_cli_names_what_is_missing_instead_of_a_jax_traceback(tmp_path):
    """The start the old docs suggested (a coordinator address and nothing else) fails in one clear line."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}
    args = ["--config=configs/retina.py:cbr_small,random,local", f"--workdir={tmp_path}"]
    out = subprocess.run(
        [sys.executable, "-m", "transfusion_jax.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "num_processes, process_id missing: pass --num_processes, --process_id" in out.stderr
    assert "Traceback" not in out.stderr
    assert not os.listdir(tmp_path)  # nothing started
