"""The miniature study (docs/study.md): every claim of the paper made testable on generated data. Its design, one
config schema as plain data, is transfusion_jax/experiments/study/design.py (inside the package, so an installed
copy has it too); this file is its launch file.

Launch (arg 'default' | 'scale' | 'mini'; any field is overridable as --config.FIELD=VALUE):
  python -m transfusion_jax.experiments.quickstart --workdir DIR            # default: both models, every claim
  python -m transfusion_jax.experiments.quickstart --workdir DIR --scale    # larger, one GPU (not yet measured)
  python -m transfusion_jax.experiments.quickstart --workdir DIR --mini     # the tests' size, ~3 min on 2 cores
Expected: DIR/report.md with the gates G1-G4 first, then per claim C1-C8 and R, at both model sizes, the effect with
its 95 % interval, its rule and "supported" / "contradicted" / "inconclusive" with the distance to the nearest
decision boundary; the time and memory it took in its header (docs/study.md, round 7: the pre-registration and the
budget measured). What it gave on our machine is in docs/RESULTS.md and docs/study_report/report.md.
"""

from transfusion_jax.experiments.study import design

ARGS = design.VARIANTS


def get_config(arg: str = "default"):
    return design.get_config(arg)
