"""The quickstart: the miniature study (docs/study.md) end to end on generated data, offline, on a CPU.

  python -m transfusion_jax.experiments.quickstart --workdir DIR                # configs/study.py:default (the CPU cut)
  python -m transfusion_jax.experiments.quickstart --workdir DIR --full         # the whole design on a CPU
  python -m transfusion_jax.experiments.quickstart --workdir DIR --scale        # the larger version, one GPU
  python -m transfusion_jax.experiments.quickstart --workdir DIR --mini         # the tests' size
  ... --config.seeds='(0, 1, 2)'                                                 # any field of configs/study.py

Writes DIR/report.md: the gates' diagnostics, then per claim of the paper the effect with its 95 % interval and
"supported" / "contradicted" / "inconclusive" (experiments.study). Rerunning with the same DIR skips what is done.
"""

import argparse
import os
import sys

from transfusion_jax.experiments import study
from transfusion_jax.train import compile_cache


def enable_compile_cache(workdir: str) -> None:
    """Every run compiles the same programs; a persistent cache (train/compile_cache.py) makes that once per
    workdir: DIR/jax_cache, unless JAX_COMPILATION_CACHE_DIR is set (e.g. one cache shared by several workdirs)."""
    compile_cache.enable(os.path.join(os.path.abspath(workdir), "jax_cache"), min_compile_seconds=0.0)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a[len("--config.") :] for a in argv if a.startswith("--config.")]
    parser = argparse.ArgumentParser(
        prog="python -m transfusion_jax.experiments.quickstart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", required=True)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="both models: the whole design (~20 min on 2 idle CPU cores)")
    size.add_argument("--scale", action="store_true", help="the larger version for one GPU (~15 min, estimated)")
    size.add_argument("--mini", action="store_true", help="tiny models and data: the tests' size, seconds")
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    variant = "full" if args.full else "scale" if args.scale else "mini" if args.mini else "default"
    try:
        c = study.load_config(variant, overrides)
        study.check_config(c)
    except ValueError as e:
        parser.error(str(e))
    enable_compile_cache(args.workdir)
    study.run_study(args.workdir, c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
