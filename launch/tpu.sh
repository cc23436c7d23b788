#!/usr/bin/env bash
# Cloud TPU VM lifecycle for transfusion_jax runs: create, install on every worker, run on every worker, copy
# results, delete. Data and workdirs live on GCS so every host of a multi-host slice sees the same paths.
#
#   launch/tpu.sh create                      # TPU VM (all workers)
#   launch/tpu.sh install                     # copy this repo to every worker and pip install it
#   launch/tpu.sh pull_pretrained             # $GCS_BUCKET/pretrained/*.npz -> ~/pretrained/ on every worker
#   launch/tpu.sh run configs/retina.py:resnet50,transfer retina/resnet50_transfer [--config.x=...]
#   launch/tpu.sh fetch retina/resnet50_transfer   # metrics.jsonl, summary.json, config.json -> ./results/
#   launch/tpu.sh delete
#
# Settings come from the environment (defaults in brackets); see launch/README.md.
#   TPU_NAME [transfusion], ZONE [us-central2-b], ACCELERATOR [v4-8], RUNTIME [tpu-ubuntu2204-base],
#   PROJECT [gcloud's default], GCS_BUCKET (required for run/fetch: gs://bucket/prefix), SPOT [0]
set -euo pipefail

TPU_NAME="${TPU_NAME:-transfusion}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR="${ACCELERATOR:-v4-8}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
SPOT="${SPOT:-0}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_DIR="transfusion_jax"   # relative to the remote user's home

project_flag=()
if [[ -n "${PROJECT:-}" ]]; then
  project_flag=(--project="${PROJECT}")
fi

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 1
}

need_bucket() {
  if [[ -z "${GCS_BUCKET:-}" ]]; then
    echo "GCS_BUCKET is not set: export GCS_BUCKET=gs://your-bucket/transfusion (holds data/ and runs/)." >&2
    exit 1
  fi
}

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" "${project_flag[@]}" --worker=all \
    --command="$1"
}

create() {
  local spot_flag=()
  if [[ "${SPOT}" == "1" ]]; then
    spot_flag=(--spot)
  fi
  gcloud compute tpus tpu-vm create "${TPU_NAME}" --zone="${ZONE}" "${project_flag[@]}" \
    --accelerator-type="${ACCELERATOR}" --version="${RUNTIME}" "${spot_flag[@]}"
}

install() {
  local archive
  archive="$(mktemp -d)/transfusion_jax.tar.gz"
  tar -C "${REPO_DIR}" --exclude=.git --exclude='__pycache__' -czf "${archive}" .
  gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:~/transfusion_jax.tar.gz" --zone="${ZONE}" \
    "${project_flag[@]}" --worker=all
  on_all_workers "set -e; rm -rf ~/${REMOTE_DIR}; mkdir -p ~/${REMOTE_DIR}; \
    tar -C ~/${REMOTE_DIR} -xzf ~/transfusion_jax.tar.gz; \
    python3 -m pip install -q -U pip; \
    python3 -m pip install -q 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html; \
    python3 -m pip install -q -e ~/${REMOTE_DIR} gcsfs google-cloud-storage"
}

run() {
  need_bucket
  if [[ $# -lt 2 ]]; then
    echo "usage: launch/tpu.sh run CONFIG_FILE:ARG RUN_NAME [--config.field=value ...]" >&2
    exit 1
  fi
  local config="$1" name="$2"
  shift 2
  local workdir="${GCS_BUCKET}/runs/${name}"
  local extra=""
  local arg
  for arg in "$@"; do
    extra+=" $(printf '%q' "${arg}")"
  done
  # Every worker runs the same command as one jax.distributed job: --distributed=true lets JAX find the slice's
  # hosts from the TPU VM metadata (a single-host VM is a job of one process). Rerunning the same command resumes
  # from the latest intact checkpoint in the workdir.
  on_all_workers "cd ~/${REMOTE_DIR} && python3 -m transfusion_jax.main --distributed=true \
    --config=$(printf '%q' "${config}") --workdir=$(printf '%q' "${workdir}") \
    --config.data.data_dir=$(printf '%q' "${GCS_BUCKET}/data/tensorflow_datasets") ${extra} \
    2>&1 | tee -a ~/run_$(printf '%q' "${name//\//_}").log"
}

pull_pretrained() {
  # Checkpoints are read with NumPy, so they are copied to each worker's disk rather than read from GCS.
  need_bucket
  on_all_workers "mkdir -p ~/pretrained && gcloud storage cp '${GCS_BUCKET}/pretrained/*.npz' ~/pretrained/"
}

fetch() {
  need_bucket
  if [[ $# -lt 1 ]]; then
    echo "usage: launch/tpu.sh fetch RUN_NAME" >&2
    exit 1
  fi
  local name="$1"
  mkdir -p "results/${name}"
  gcloud storage cp "${GCS_BUCKET}/runs/${name}/metrics.jsonl" "${GCS_BUCKET}/runs/${name}/summary.json" \
    "${GCS_BUCKET}/runs/${name}/config.json" "results/${name}/"
  gcloud storage cp -r "${GCS_BUCKET}/runs/${name}/tensorboard" "results/${name}/"
}

delete() {
  gcloud compute tpus tpu-vm delete "${TPU_NAME}" --zone="${ZONE}" "${project_flag[@]}" --quiet
}

command="${1:-}"
if [[ $# -gt 0 ]]; then
  shift
fi
case "${command}" in
  create) create ;;
  install) install ;;
  pull_pretrained) pull_pretrained ;;
  run) run "$@" ;;
  fetch) fetch "$@" ;;
  delete) delete ;;
  *) usage ;;
esac
