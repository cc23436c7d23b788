"""The miniature study (docs/study.md): every claim of the paper made testable on generated data. Its design, one
config schema as plain data, is transfusion_jax/experiments/study/design.py (inside the package, so an installed
copy has it too); this file is its launch file.

Launch (arg 'default' | 'full' | 'scale' | 'mini'; any field is overridable as --config.FIELD=VALUE):
  python -m transfusion_jax.experiments.quickstart --workdir DIR            # default: the CPU cut, <= 10 min on 2 cores
  python -m transfusion_jax.experiments.quickstart --workdir DIR --full     # the whole design on a CPU (~22 min)
  python -m transfusion_jax.experiments.quickstart --workdir DIR --scale    # larger, one GPU (~15 min, estimated)
  python -m transfusion_jax.experiments.quickstart --workdir DIR --mini     # the tests' size (the cut), ~1 min
Expected: DIR/report.md with the gates G1-G4 first, then per claim C1-C8 and R the effect with its 95 % interval and
"supported" / "contradicted" / "inconclusive" (or "not run on the CPU: --scale" for what the cut leaves out). What it
gave on our machine is in docs/RESULTS.md and docs/study_report/report.md.
"""

from transfusion_jax.experiments.study import design

ARGS = design.VARIANTS


def get_config(arg: str = "default"):
    return design.get_config(arg)
