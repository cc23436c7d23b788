"""transfusion_jax: does ImageNet transfer help a medical imaging task, and where?

Subpackages (one home per concept):
  models      Flax architectures returning (logits, features) with named blocks.
  surgery     Parameter-tree utilities and the paper's init schemes.
  pretrained  Converters from torchvision/Keras ImageNet weights.
  data        Retina and CheXpert pipelines, generators of their on-disk formats.
  train       Sharded jitted train/eval loop, checkpoints, metrics.
  analysis    Activation collection and CCA/SVCCA/PWCCA/CKA similarity.
"""

__version__ = "0.1.0"
