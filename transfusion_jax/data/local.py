"""Generated stand-ins that `,local` configs read: made by the data layer on first use and cached, never by a config.

`chexpert_root()` is a miniature CheXpert-v1.0-small download (64 train and 24 valid grayscale images, 48 px wide,
seed 0; `generate.write_chexpert`) under `<tempdir>/transfusion_jax_local/chexpert`. Generation is deterministic and
lands by an atomic rename, so concurrent local runs on one machine share one copy. The config names it as
`data.name='local_chexpert'`; the Retina and source stand-ins (`synthetic_retina`, `synthetic_source`) are rendered
in memory and need no files.
"""

import os
import shutil
import tempfile

from transfusion_jax.data import generate

CACHE = os.path.join(tempfile.gettempdir(), "transfusion_jax_local")  # also holds pretrained.stand_in's files


def chexpert_root() -> str:
    """The folder holding the generated CheXpert-v1.0-small/ (generated on the first call on this machine)."""
    root = os.path.join(CACHE, "chexpert")
    if not os.path.exists(os.path.join(root, "CheXpert-v1.0-small", "valid.csv")):
        os.makedirs(CACHE, exist_ok=True)
        staging = tempfile.mkdtemp(dir=CACHE)
        generate.write_chexpert(staging, num=64, seed=0, size=48, num_valid=24)
        try:
            os.rename(staging, root)
        except OSError:  # another process generated it first
            shutil.rmtree(staging, ignore_errors=True)
    return root
