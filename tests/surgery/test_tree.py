"""Strict merge, selection and the summary table on tiny CBR variables."""

import re

import numpy as np
import pytest
from surgery_helpers import TINY_BLOCKS, flat, random_like, tiny_init, tiny_random

from transfusion_jax.surgery import tree


def test_flatten_keys_carry_collection_and_block():
    keys = set(tree.flatten(tiny_init()))
    assert "params/layer1/conv/kernel" in keys and "batch_stats/layer4/bn/var" in keys and "params/head/bias" in keys
    assert {tree.block_of(tree.name_of(k)) for k in keys} == set(TINY_BLOCKS) | {"head"}
    assert (
        tree.name_of("batch_stats/layer4/bn/var") == "layer4/bn/var" and tree.module_of("layer4/bn/var") == "layer4/bn"
    )


def test_select_by_block_and_by_regex():
    f = tree.flatten(tiny_init())
    by_block = tree.select(f, ["layer2"])
    assert set(by_block) == {k for k in f if k.split("/")[1] == "layer2"}
    assert len(by_block) == 5  # conv kernel, bn scale/bias, bn mean/var
    by_regex = tree.select(f, tree.matcher(regex=r"layer[34]/bn/.*"))
    assert set(by_regex) == {
        f"{c}/layer{i}/bn/{n}"
        for i in (3, 4)
        for c, n in [("params", "scale"), ("params", "bias"), ("batch_stats", "mean"), ("batch_stats", "var")]
    }


def test_merge_copies_exactly_the_selection_and_keeps_the_rest():
    init, source = tiny_init(0), random_like(tiny_init(0), seed=1)
    merged, provenance = tree.merge(source, init, ["layer1", "head"])
    for key, value in flat(merged).items():
        expected = flat(source)[key] if key.split("/")[1] in ("layer1", "head") else flat(init)[key]
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected), err_msg=key)
        assert provenance[key] == ("checkpoint" if key.split("/")[1] in ("layer1", "head") else "init")


def test_merge_casts_to_the_target_dtype():
    init = tiny_init(0)
    source = tree.unflatten({k: np.asarray(v, np.float64) for k, v in flat(random_like(init, 1)).items()})
    merged, _ = tree.merge(source, init, ["layer1"])
    assert flat(merged)["params/layer1/conv/kernel"].dtype == np.float32


def test_shape_mismatch_raises_with_a_diff():
    init, other = tiny_init(0), tiny_random(1, widths=(4, 8, 16, 8))
    with pytest.raises(tree.TreeMismatchError) as e:
        tree.merge(other, init, TINY_BLOCKS)
    msg = str(e.value)
    assert "shape mismatch [6]" in msg
    assert "params/layer3/conv/kernel: source (7, 7, 8, 16) vs target (7, 7, 8, 8)" in msg
    assert "batch_stats/layer3/bn/var: source (16,) vs target (8,)" in msg
    # The mismatching blocks are fine when not selected.
    tree.merge(other, init, ["layer1", "layer2"])


def test_missing_and_unexpected_keys_are_listed():
    init = tiny_init(0)
    shallow, deep = tiny_random(1, widths=(4, 8, 8)), tiny_random(1, widths=(4, 8, 8, 8, 8))

    def body(name):
        return tree.block_of(name) != "head"

    missing = r"(?s)missing from the source.*\[5\].*- params/layer4/conv/kernel"
    with pytest.raises(tree.TreeMismatchError, match=missing):
        tree.merge(shallow, init, body)
    unexpected = r"(?s)unexpected in the source.*\[5\].*\+ batch_stats/layer5/bn/mean"
    with pytest.raises(tree.TreeMismatchError, match=unexpected):
        tree.merge(deep, init, body)


def test_long_diffs_are_capped_with_a_count():
    init, other = tiny_init(0), tiny_random(1, widths=(5, 9, 9, 9), num_classes=3)
    report = tree.mismatch_report(tree.flatten(other), tree.flatten(init), lambda name: True)
    n = len(tree.flatten(init))  # every key differs in shape
    assert f"shape mismatch [{n}]" in report
    assert f"... and {n - tree.MAX_LISTED} more" in report
    assert len(re.findall(r"^\s+~ ", report, flags=re.M)) == tree.MAX_LISTED


def test_a_selection_that_matches_nothing_raises():
    init = tiny_init(0)
    with pytest.raises(tree.TreeMismatchError, match="matches no key"):
        tree.merge(init, init, ["layer9"])


def test_summary_counts_per_block_and_origins():
    init, source = tiny_init(0), random_like(tiny_init(0), seed=1)
    merged, provenance = tree.merge(source, init, ["layer1", "layer2"])
    text = tree.summary(merged, provenance, blocks=TINY_BLOCKS)
    assert [line.split()[0] for line in text.splitlines()] == ["block", *TINY_BLOCKS, "head", "total"]
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    # Conv (7x7, no bias) + BN gamma/beta per layer, by hand; head 8 -> 2 with bias.
    widths, expected = (3, 4, 8, 8, 8), {}
    for i in range(4):
        expected[f"layer{i + 1}"] = 49 * widths[i] * widths[i + 1] + 2 * widths[i + 1]
    expected["head"] = 8 * 2 + 2
    for block, n in expected.items():
        assert f"{n:,}" in rows[block].split()
    assert rows["total"].split()[1] == f"{sum(expected.values()):,}"
    assert "checkpoint (5)" in rows["layer1"] and "init (5)" in rows["layer3"] and "init (2)" in rows["head"]
    assert rows["layer1"].split()[2] == "2" and rows["head"].split()[2] == "0"  # batch_stats leaves


def test_mask_keeps_the_structure_and_selects_by_name():
    params = {"layer1": {"conv": {"kernel": np.ones(2)}, "bn": {"scale": np.ones(2)}}, "empty": {}, "head": {"bias": 0}}
    mask = tree.mask(params, tree.matcher(blocks=["head"], regex=r".*/kernel"))
    assert mask == {"layer1": {"conv": {"kernel": True}, "bn": {"scale": False}}, "empty": {}, "head": {"bias": True}}


def test_patterns_are_block_names_or_full_regexes_and_must_match():
    names = list(tree.flatten(tiny_init()["params"]))
    select = tree.from_patterns(["layer1", r"layer2/bn/.*"], names)
    assert {n for n in names if select(n)} == {
        "layer1/conv/kernel",
        "layer1/bn/scale",
        "layer1/bn/bias",
        "layer2/bn/scale",
        "layer2/bn/bias",
    }
    assert not tree.from_patterns([r"layer2/bn"], ["layer2/bn/scale", "layer2/bn"])("layer2/bn/scale")  # full match
    with pytest.raises(ValueError, match="'layer2/conv' matches no leaf. Blocks: .*layer1"):
        tree.from_patterns(["layer2/conv"], names)
    with pytest.raises(ValueError, match="neither a block name nor a valid regex"):
        tree.from_patterns(["layer[2"], names)
