"""Representation analysis: streaming CCA / SVCCA / PWCCA / CKA over collected activations, and weight change.

Typical use:
    acc = moments.from_arrays(x, y)          # streamed in ~16 MB batches; or collect_pair_moments(...) over models
    result = similarity.measure(moments.finalize(acc), "svcca", keep=0.99)
"""

from transfusion_jax.analysis import activations, moments, paper, similarity, weights
from transfusion_jax.analysis.activations import Reduction, collect_pair_moments, compare_models
from transfusion_jax.analysis.similarity import METHODS, Similarity, measure
from transfusion_jax.analysis.weights import relative_weight_change

__all__ = [
    "activations",
    "moments",
    "paper",
    "similarity",
    "weights",
    "Reduction",
    "collect_pair_moments",
    "compare_models",
    "METHODS",
    "Similarity",
    "measure",
    "relative_weight_change",
]
