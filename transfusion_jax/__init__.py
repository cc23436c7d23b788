"""transfusion_jax: does ImageNet transfer help a medical imaging task, and where?

Subpackages, bottom to top; each imports only those below it (tests/test_layers.py):
  models       Flax architectures returning (logits, features) with named blocks.
  data         Retina and CheXpert pipelines, generators of their on-disk formats, generated local stand-ins.
  surgery      Parameter-tree names and selections (surgery.tree), the paper's init schemes, freezing.
  pretrained   Converters from torchvision/Keras ImageNet weights; the checkpoint file format.
  train        Configs, sharded jitted train/eval loop, checkpoints, metrics (main.py is its command line).
  analysis     Activation collection and CCA/SVCCA/PWCCA/CKA similarity: pure functions of arrays and models.
  experiments  Everything run-level: sweeps, the paper's figures and tables, the quickstart.
"""

__version__ = "0.1.0"
