"""`python -m transfusion_jax.data generate / prepare` end to end, and prepare's errors."""

import csv
import importlib.util
import os
import subprocess
import sys

import pytest

from transfusion_jax.data import __main__ as cli
from transfusion_jax.data import prepare


def test_generate_every_format(tmp_path):
    cli.main(["generate", "chexpert", str(tmp_path / "cx"), "--num", "5", "--num_eval", "3", "--size", "24"])
    with open(tmp_path / "cx" / "CheXpert-v1.0-small" / "valid.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    cli.main(["generate", "kaggle_dr", str(tmp_path / "dr"), "--num", "4", "--size", "24"])
    assert sorted(os.listdir(tmp_path / "dr" / "train")) == [
        "10_left.jpeg",
        "10_right.jpeg",
        "11_left.jpeg",
        "11_right.jpeg",
    ]
    cli.main(["generate", "tfds_dr_manual", str(tmp_path / "m"), "--num", "4", "--num_eval", "5", "--size", "24"])
    assert len(os.listdir(tmp_path / "m" / "test")) == 5
    cli.main(["generate", "source", str(tmp_path / "s"), "--num", "6", "--num_classes", "2", "--size", "16"])
    assert sorted(os.listdir(tmp_path / "s" / "train")) <= ["class_00", "class_01"]
    with pytest.raises(SystemExit):
        cli.main(["generate", "kaggle_dr", str(tmp_path / "x"), "--num", "4", "--num_eval", "2"])


def test_prepare_command_without_tensorflow(tmp_path):
    cli.main(["generate", "chexpert", str(tmp_path / "cx"), "--num", "4", "--num_eval", "2", "--size", "24"])
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfusion_jax.data",
            "prepare",
            "chexpert",
            "--manual_dir",
            str(tmp_path / "cx"),
            "--data_dir",
            str(tmp_path / "tfds"),
            "--tensorflow",
            "no",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert out.stdout.strip().endswith(os.path.join("chexpert", "3.1.0"))
    assert any(
        f.startswith("chexpert-train.array_record") for f in os.listdir(tmp_path / "tfds" / "chexpert" / "3.1.0")
    )


def test_prepare_errors(tmp_path):
    lacks = r"lacks \['trainLabels.csv', 'train', 'test', 'retinopathy_solution.csv', 'sample'\]"
    with pytest.raises(FileNotFoundError, match=lacks):
        prepare.prepare("diabetic_retinopathy_detection/original", str(tmp_path), str(tmp_path / "d"))
    with pytest.raises(ValueError, match="give a config"):
        prepare.prepare("diabetic_retinopathy_detection", str(tmp_path), str(tmp_path / "d"))
    with pytest.raises(ValueError, match="cannot prepare"):
        prepare.prepare("imagenet2012", str(tmp_path), str(tmp_path / "d"))
    with pytest.raises(FileNotFoundError, match="CheXpert-v1.0-small/train.csv"):
        prepare.prepare("chexpert", str(tmp_path), str(tmp_path / "d"))
    if not prepare.have_tensorflow():
        cli.main(["generate", "chexpert", str(tmp_path / "cx"), "--num", "2", "--num_eval", "1", "--size", "16"])
        with pytest.raises(ImportError, match=r"transfusion_jax\[prepare\]"):
            prepare.prepare("chexpert", str(tmp_path / "cx"), str(tmp_path / "d"), use_tensorflow=True)


def test_resized_dr_configs_need_opencv(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cv2" else real_find_spec(name, *a)
    )
    cli.main(["generate", "tfds_dr_manual", str(tmp_path), "--num", "2", "--num_eval", "2", "--size", "16"])
    with pytest.raises(ImportError, match="opencv-python-headless"):
        prepare.prepare("diabetic_retinopathy_detection/btgraham-300", str(tmp_path), str(tmp_path / "d"))


def test_resized_dr_config_prepared_without_tf(tmp_path):
    """btgraham-300 runs the builder's own OpenCV processing: radius scaled to 300 px, cropped to 90 % -> 540."""
    import io

    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    cli.main(["generate", "tfds_dr_manual", str(tmp_path / "m"), "--num", "4", "--num_eval", "2", "--size", "40"])
    prepare.prepare("diabetic_retinopathy_detection/btgraham-300", str(tmp_path / "m"), str(tmp_path / "d"))
    ds = tfds.data_source(
        "diabetic_retinopathy_detection/btgraham-300",
        split="train",
        data_dir=str(tmp_path / "d"),
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    with open(tmp_path / "m" / "trainLabels.csv") as f:
        levels = {r["image"]: int(r["level"]) for r in csv.DictReader(f)}
    assert {r["name"].decode(): int(r["label"]) for r in ds} == levels
    for r in ds:
        image = np.asarray(Image.open(io.BytesIO(r["image"])))
        assert image.shape == (540, 540, 3)
        assert abs(int(image[0, 0, 0]) - 128) <= 3  # outside the 90 % radius: the builder's gray 128
