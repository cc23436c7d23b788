#!/usr/bin/env bash
# One transfusion_jax run as a multi-process job under SLURM: one process per node (with that node's GPUs),
# started by srun. jax.distributed reads the coordinator, the process count and each process's id from SLURM's
# environment (transfusion_jax.main --distributed=auto detects SLURM_NTASKS > 1).
#
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm.sh configs/retina.py:resnet50,transfer /shared/runs/r50 \
#       --config.data.root=/shared/kaggle_dr --config.pretrained=/shared/pretrained/resnet50.npz
#
# WORKDIR must be on a file system every node sees. Resubmitting the same command resumes from the latest intact
# checkpoint. --config.batch_size (the global batch) must be a multiple of the total number of devices.
#SBATCH --job-name=transfusion
#SBATCH --ntasks-per-node=1
#SBATCH --output=%x-%j.out
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: sbatch [--nodes=N ...] launch/slurm.sh CONFIG_FILE:ARG WORKDIR [--config.field=value ...]" >&2
  exit 1
fi
config="$1"
workdir="$2"
shift 2
# sbatch runs a copy of this script, so the repository is the submission directory.
cd "${SLURM_SUBMIT_DIR:-.}"
srun python -m transfusion_jax.main --config="${config}" --workdir="${workdir}" "$@"
