"""Re-initialisation resilience: which blocks of a trained model matter (Zhang, Bengio & Singer 2019; used for
transfer by Matsoukas et al., CVPR 2022).

Reset one block of a fine-tuned model to a reference value and evaluate again: a block whose reset costs little
(small drop in AUC, small rise in loss) is "robust", one whose reset breaks the model is "critical". The reference is
the block's value at initialisation (re-initialisation: for a transfer run, its pretrained weights; for a random run,
its random init) or a fresh random draw (re-randomisation: another `model.init`). A block is reset whole: its
parameters and its BatchNorm running statistics (the statistics describe the features of the weights they were
computed with; keeping fine-tuned statistics for reset weights would measure a mismatch, not the block).

Pure orchestration over an evaluation callable, so it works for any model family and any metric set:
`evaluate(variables) -> {'auc': ..., 'loss': ..., ...}`, e.g. the metrics of `transfusion_jax.train.trainer.evaluate`
over an eval split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from transfusion_jax.surgery import tree


def reset_block(variables: Mapping, reference: Mapping, block: str) -> dict:
    """`variables` with every leaf of `block` (params and batch_stats) taken from `reference`, strictly."""
    present = {tree.block_of(tree.name_of(k)) for k in tree.flatten(variables)}
    if block not in present:
        raise ValueError(f"Unknown block {block!r}; the variables hold blocks {sorted(present)}.")
    out, _ = tree.merge(reference, variables, [block], origin="reference")
    return out


def reinit_resilience(
    variables: Mapping,
    reference: Mapping,
    evaluate: Callable[[Mapping], Mapping[str, float]],
    blocks: Sequence[str],
    *,
    reference_name: str = "init",
) -> dict[str, Any]:
    """Per block: the metrics after resetting it to `reference`, and its criticality against the unreset model.

    Returns a JSON-ready dict: {'reference', 'blocks', 'baseline': metrics, 'per_block': {block: {**metrics,
    'auc_drop': baseline auc - auc, 'loss_rise': loss - baseline loss}}} (a criticality curve in block order; the
    two criticality keys appear when `evaluate` returns 'auc' / 'loss').
    """
    if not blocks:
        raise ValueError("blocks is empty: name the blocks to reset, e.g. block_names(model)")
    baseline = {k: float(v) for k, v in evaluate(variables).items()}
    per_block = {}
    for block in blocks:
        metrics = {k: float(v) for k, v in evaluate(reset_block(variables, reference, block)).items()}
        if "auc" in metrics and "auc" in baseline:
            metrics["auc_drop"] = baseline["auc"] - metrics["auc"]
        if "loss" in metrics and "loss" in baseline:
            metrics["loss_rise"] = metrics["loss"] - baseline["loss"]
        per_block[block] = metrics
    return {"reference": reference_name, "blocks": list(blocks), "baseline": baseline, "per_block": per_block}
