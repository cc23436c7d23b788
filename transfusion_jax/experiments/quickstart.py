"""The quickstart: the miniature study (docs/study.md) end to end on generated data, offline, on a CPU.

  python -m transfusion_jax.experiments.quickstart --workdir DIR                # the design's default (the CPU cut)
  python -m transfusion_jax.experiments.quickstart --workdir DIR --full         # the whole design on a CPU
  python -m transfusion_jax.experiments.quickstart --workdir DIR --scale        # the larger version, one GPU
  python -m transfusion_jax.experiments.quickstart --workdir DIR --mini         # the tests' size
  ... --config.seeds='(0, 1, 2)'                                                 # any field of the design

Writes DIR/report.md: the gates' diagnostics, then per claim of the paper the effect with its 95 % interval and
"supported" / "contradicted" / "inconclusive" (transfusion_jax.experiments.study; the design's fields:
study/design.py). Rerunning with the same DIR skips what is done.
"""

import argparse
import sys

from transfusion_jax.experiments.study import run
from transfusion_jax.experiments.study.run import enable_compile_cache

__all__ = ["enable_compile_cache", "main"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transfusion_jax.experiments.quickstart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_arguments(parser)
    return run.main(parser, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
