#!/usr/bin/env bash
# The accelerator checks of BENCHMARKS.md as one command, for a GPU machine lent for a few minutes (a bare image with
# JAX, PyTorch and torchvision but not every package of requirements.txt).
#
# On a machine with internet (here), once: fetch the pure-Python and manylinux wheels that image lacks into .whl/
# (git-ignored; ~5 MB):
#   bash benchmarks/device_checks.sh --wheels
# On the GPU machine, from the repository root (results under $OUT, default /tmp/device_checks):
#   bash benchmarks/device_checks.sh                       # multirun + train_step (~8 min on one H100-class GPU)
#   bash benchmarks/device_checks.sh multirun input        # any of: multirun train_step vit input scale
#   bash benchmarks/device_checks.sh vit                   # the ViT row: ViT-Ti/16 and ViT-B/16 at 224, batch 32 and
#                                                          # 256, bf16, ours vs PyTorch eager and compiled (~6 min)
# Each check has its own time limit, so one slow check cannot eat the others' time; every output goes to its own
# file and to the terminal. `scale` (the miniature study at --scale, ~15 min estimated) resumes where it stopped
# when run again on the same machine (finished runs are kept in /tmp/study_scale).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ "${1:-}" = "--wheels" ]; then
  # Python 3.12 manylinux wheels of what the accelerator image lacks; their own needs are in that image.
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 tensorboardX==2.6.5
  exit $?
fi

OUT=${OUT:-/tmp/device_checks}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi || true
  "$PYTHON" -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__)"
} 2>&1 | tee "$OUT/card.txt"

check() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee "$OUT/$name.txt"
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/$name.txt"
}

for name in "${@:-multirun train_step}"; do
  for one in $name; do
    case $one in
      multirun) check multirun 240 "$PYTHON" benchmarks/bench_multirun.py --gpu ;;
      train_step) check train_step 330 "$PYTHON" benchmarks/bench_train_step.py --gpu --steps 10 ;;
      vit) check vit 420 "$PYTHON" benchmarks/bench_train_step.py --gpu --models=vit_ti16,vit_b16 --batch=32,256 --steps 10 ;;
      input) check input 240 "$PYTHON" benchmarks/bench_input.py --gpu ;;
      scale) check scale 560 "$PYTHON" -m transfusion_jax.experiments.quickstart --workdir /tmp/study_scale --scale ;;
      *) echo "unknown check '$one' (multirun, train_step, vit, input, scale)" >&2 && exit 2 ;;
    esac
  done
done
