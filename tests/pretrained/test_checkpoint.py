"""The converted-checkpoint file and the conventions it records (no reference framework needed; fast)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from transfusion_jax import pretrained
from transfusion_jax.data import preprocess
from transfusion_jax.pretrained import checkpoint
from transfusion_jax.pretrained.common import DEFAULT_PREPROCESSING, ConversionError, check_tree, preprocessing_record
from transfusion_jax.surgery import tree

REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny_variables():
    rng = np.random.default_rng(0)
    return {
        "params": {
            "conv1": {
                "conv": {"kernel": rng.standard_normal((3, 3, 3, 4)).astype(np.float32)},
                "bn": {"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)},
            },
            "head": {"kernel": rng.standard_normal((4, 2)).astype(np.float32), "bias": np.zeros(2, np.float32)},
        },
        "batch_stats": {
            "conv1": {
                "bn": {
                    "mean": rng.standard_normal(4).astype(np.float32),
                    "var": rng.uniform(0.5, 1, 4).astype(np.float32),
                }
            }
        },
    }


def test_save_load_round_trip(tmp_path):
    variables, meta = tiny_variables(), {"architecture": "resnet50", "num_classes": 2, "note": "ünïcode"}
    path = tmp_path / "c.npz"
    pretrained.save(str(path), variables, meta)
    got, got_meta = pretrained.load(str(path))
    assert got_meta["note"] == "ünïcode" and got_meta["format"] == checkpoint.FORMAT
    flat, got_flat = (tree.flatten(v) for v in (variables, got))
    assert flat.keys() == got_flat.keys()
    for k in flat:
        np.testing.assert_array_equal(flat[k], got_flat[k])
    # plain NumPy, no pickle, can read it: the format is open
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(str(raw[checkpoint.METADATA_KEY]))["num_classes"] == 2
        assert raw["params/conv1/conv/kernel"].shape == (3, 3, 3, 4)


def test_block_counts_and_describe():
    variables = tiny_variables()
    assert checkpoint.block_counts(variables) == {"conv1": (3 * 3 * 3 * 4 + 8, 8), "head": (10, 0)}
    text = pretrained.describe(variables, {"architecture": "x"})
    assert "params/head/kernel (4, 2)" in text and "batch_stats/conv1/bn/var (4,)" in text


def test_load_rejects_foreign_npz(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, w=np.zeros(3))
    with pytest.raises(ConversionError, match="not a checkpoint written by transfusion_jax.pretrained"):
        pretrained.load(str(path))


def test_load_rejects_newer_format(tmp_path):
    path = tmp_path / "future.npz"
    np.savez(
        path, **{checkpoint.METADATA_KEY: np.array(json.dumps({"format": checkpoint.FORMAT, "format_version": 99}))}
    )
    with pytest.raises(ConversionError, match="version 99"):
        pretrained.load(str(path))


def test_save_refuses_other_collections(tmp_path):
    with pytest.raises(ValueError, match="intermediates"):
        pretrained.save(str(tmp_path / "x.npz"), {**tiny_variables(), "intermediates": {"a": np.zeros(1)}}, {})


def test_check_tree_lists_every_kind_of_difference_and_caps_the_listing():
    expected = {f"params/b{i}/kernel": (2, 2) for i in range(30)}
    converted = {f"params/b{i}/kernel": np.zeros((2, 2)) for i in range(5)}  # 25 missing
    converted["params/b0/kernel"] = np.zeros((3, 2))
    converted["params/extra/kernel"] = np.zeros(1)
    with pytest.raises(ConversionError) as e:
        check_tree(converted, expected, {"params/b0/kernel": "layer.0.weight"}, {"foo.weight": (7,)}, "X", "hint")
    msg = str(e.value)
    assert "missing from the file (25):" in msg and "... and 5 more" in msg
    assert "unexpected in the file (2):\n    foo.weight (7,)\n    params/extra/kernel (1,)" in msg
    assert "shape mismatch (1):\n    layer.0.weight -> params/b0/kernel: file (3, 2), model (2, 2)" in msg
    check_tree({"params/a": np.zeros(2)}, {"params/a": (2,)}, {}, {}, "X", "hint")  # a match raises nothing


def test_preprocessing_record_states_the_pipeline_preset():
    """A checkpoint's metadata holds the numbers the data pipeline applies under the same name, in JSON types."""
    for name, n in preprocess.PRESETS.items():
        record = json.loads(json.dumps(preprocessing_record(name)))
        assert record["name"] == name and "formula" in record
        assert (record["mean"], record["std"], record["scale"], record["channel_order"]) == (
            list(n.mean),
            list(n.std),
            n.scale,
            n.channel_order,
        ), name
    assert set(DEFAULT_PREPROCESSING.values()) <= set(preprocess.PRESETS)
    with pytest.raises(ConversionError, match="Unknown preprocessing 'caffe'"):
        preprocessing_record("caffe")


def test_unknown_arch_source_and_file_are_rejected(tmp_path):
    with pytest.raises(ConversionError, match="resnet18"):
        pretrained.convert("torchvision", "resnet18", str(tmp_path))
    with pytest.raises(ConversionError, match="caffe"):
        pretrained.convert("caffe", "resnet50", str(tmp_path))
    with pytest.raises(ConversionError, match="No such file"):
        pretrained.convert("keras", "resnet50", str(tmp_path / "absent.h5"))


def test_inspect_command_line(tmp_path):
    """`python -m transfusion_jax.pretrained inspect` as a user runs it, in a fresh interpreter."""
    path = tmp_path / "c.npz"
    pretrained.save(str(path), tiny_variables(), {"architecture": "resnet50"})
    run = dict(capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    done = subprocess.run([sys.executable, "-m", "transfusion_jax.pretrained", "inspect", str(path)], **run)
    assert done.returncode == 0, done.stderr
    assert '"architecture": "resnet50"' in done.stdout and "params/head/kernel (4, 2)" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "transfusion_jax.pretrained", "inspect", str(tmp_path / "no.npz")], **run
    )
    assert bad.returncode == 2 and "No such file" in bad.stderr
