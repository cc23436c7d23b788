"""`python -m transfusion_jax.experiments.ssl_study --workdir DIR [--mini]` (run.py; docs/ssl_study.md)."""

import sys

from transfusion_jax.experiments.ssl_study.run import main

if __name__ == "__main__":
    sys.exit(main())
