"""Parameter-tree surgery and the paper's init schemes (transfusion, Mean-Var, Slim, synthetic Gabor), freezing."""

from transfusion_jax.surgery.freezing import all_blocks_except, freeze, frozen_labels
from transfusion_jax.surgery.gabor_filters import bank_layout, gabor_bank
from transfusion_jax.surgery.schemes import (
    MEAN_VAR_BN,
    SCHEMES,
    InitSpec,
    first_conv_key,
    gabor,
    initialize,
    initialize_from_config,
    mean_var,
    parse_init,
    slim,
    transfer,
    transfusion,
    transfusion_mean_var,
)
from transfusion_jax.surgery.tree import (
    TreeMismatchError,
    block_of,
    flatten,
    matcher,
    merge,
    mismatch_report,
    select,
    summary,
    unflatten,
)
