#!/usr/bin/env bash
# Table 1 (and Table 3 with SMALL=1): every model x {random, transfer} on Retina, one run after another on the TPU
# VM created by launch/tpu.sh. ImageNet checkpoints are expected at $GCS_BUCKET/pretrained/<model>.npz
# (ResNet-50 / Inception-v3 converted with `python -m transfusion_jax.pretrained convert`, CBRs exported by
# configs/imagenet.py) and are copied to the workers first. SEEDS (default "0 1 2": the paper's three repetitions).
set -euo pipefail

: "${GCS_BUCKET:?export GCS_BUCKET=gs://your-bucket/transfusion}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG="configs/retina.py"
if [[ "${SMALL:-0}" == "1" ]]; then
  CONFIG="configs/retina_small.py"
fi
SEEDS="${SEEDS:-0 1 2}"
"${HERE}/tpu.sh" pull_pretrained

for model in resnet50 inception_v3 cbr_larget cbr_largew cbr_small cbr_tiny; do
  for init in random transfer; do
    for seed in ${SEEDS}; do
      name="$(basename "${CONFIG}" .py)/${model}_${init}_seed${seed}"
      extra=(--config.seed="${seed}")
      if [[ "${init}" == "transfer" ]]; then
        extra+=(--config.pretrained="../pretrained/${model}.npz")  # runs start in ~/transfusion_jax
      fi
      "${HERE}/tpu.sh" run "${CONFIG}:${model},${init}" "${name}" --config.data.name=retina_tfds "${extra[@]}"
    done
  done
done
