"""Small-data regime: deterministic, seeded subsets of N examples, optionally stratified."""

import logging

import numpy as np


def allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Examples per stratum for a stratified subset of size n: n * share rounded down, then the remaining slots go
    to the largest fractional parts (ties: lower stratum first). Sums to exactly n."""
    exact = n * counts / counts.sum()
    take = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(counts)), -(exact - take)))
    take[order[: n - take.sum()]] += 1
    return take


def select_subset(strata: np.ndarray, n: int, seed: int, stratified: bool) -> np.ndarray:
    """Sorted indices of a subset of `n` examples, a pure function of (strata, n, seed, stratified)."""
    total = len(strata)
    if not 0 < n <= total:
        raise ValueError(f"subset_size must be in 1..{total} (the split has {total} examples), got {n}")
    rng = np.random.default_rng(seed)
    if not stratified:
        return np.sort(rng.choice(total, size=n, replace=False))
    values, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    take = allocate(counts, n)
    chosen = [rng.permutation(np.flatnonzero(inverse == k))[: take[k]] for k in range(len(values))]
    return np.sort(np.concatenate(chosen))


def class_balance(targets: np.ndarray, mask: np.ndarray, label_names: tuple) -> dict:
    """Softmax: count per class. Sigmoid: positives per label among examples whose mask counts."""
    if targets.ndim == 1:
        return {name: int((targets == k).sum()) for k, name in enumerate(label_names)}
    return {
        name: f"{int((targets[:, k] * mask[:, k]).sum())}/{int(mask[:, k].sum())} positive"
        for k, name in enumerate(label_names)
    }


def log_balance(what: str, balance: dict):
    logging.info("%s class balance: %s", what, balance)
