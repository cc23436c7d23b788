#!/usr/bin/env bash
# A multi-process job on this machine: N processes on 127.0.0.1, each with DEVICES (default 2) CPU devices and gloo
# collectives, process 0 hosting the coordinator. The same code path as N hosts of a cluster, on a laptop.
#
#   launch/local_processes.sh 2 configs/retina.py:cbr_small,random,local /tmp/run2x2
#
# Logs go to WORKDIR/process_<i>.log; the exit status is the first failing process's. Ctrl-C stops every process
# with SIGKILL (JAX handles SIGTERM itself and would keep running).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: launch/local_processes.sh NUM_PROCESSES CONFIG_FILE:ARG WORKDIR [--config.field=value ...]" >&2
  exit 1
fi
num_processes="$1"
config="$2"
workdir="$3"
shift 3
cd "$(dirname "${BASH_SOURCE[0]}")/.."
port="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "${workdir}"

pids=()
stop_all() {
  kill -KILL "${pids[@]}" 2>/dev/null || true
}
trap stop_all INT TERM
for ((i = 0; i < num_processes; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES:-2}" JAX_PLATFORMS=cpu \
    python -m transfusion_jax.main --config="${config}" --workdir="${workdir}" \
    --coordinator_address="127.0.0.1:${port}" --num_processes="${num_processes}" --process_id="${i}" "$@" \
    >"${workdir}/process_${i}.log" 2>&1 &
  pids+=("$!")
done
status=0
for _ in "${pids[@]}"; do
  wait -n || { status=$?; stop_all; break; }  # the others would wait for a failed one in their next collective
done
wait
exit "${status}"
