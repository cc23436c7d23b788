"""The miniature study's generators: what the target's label depends on, no leakage between splits, determinism."""

import csv
import functools
import hashlib
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data_helpers import make_config
from PIL import Image
from scipy.signal import fftconvolve
from sklearn.metrics import roc_auc_score

from transfusion_jax.analysis import probes
from transfusion_jax.data import __main__ as data_cli
from transfusion_jax.data import build_dataset, generate, synthetic
from transfusion_jax.data.preprocess import PRESETS
from transfusion_jax.models import get_model

PROBE_CEILING = 0.8  # docs/study.md: frozen random features must stay below the 0.9 threshold minus 0.1


def _bright_count_auc_by_enumeration(grade_probs, ranges, threshold=2):
    """AUC of the bright-spot count for grade >= threshold, by summing over every (positive, negative) pair of
    (grade, count) outcomes: an independent route to polarity_bayes_auc's closed form."""
    outcomes = [
        (grade, count, p / (hi - lo + 1))
        for grade, (p, (lo, hi)) in enumerate(zip(grade_probs, ranges))
        for count in range(lo, hi + 1)
    ]
    pos = [(c, p) for g, c, p in outcomes if g >= threshold]
    neg = [(c, p) for g, c, p in outcomes if g < threshold]
    total = sum(p for _, p in pos) * sum(p for _, p in neg)
    wins = sum(
        pp * pn * (1.0 if cp > cn else 0.5 if cp == cn else 0.0) for (cp, pp), (cn, pn) in itertools.product(pos, neg)
    )
    return wins / total


def test_polarity_bayes_auc_closed_form_and_sampling():
    want = _bright_count_auc_by_enumeration(synthetic.RETINA_GRADE_PROBS, synthetic.POLARITY_BRIGHT_PER_GRADE)
    assert synthetic.polarity_bayes_auc() == pytest.approx(want, abs=1e-12)
    assert 0.95 < want < 0.99  # graders disagree a little: the best possible AUC is below 1
    rng = np.random.default_rng(0)
    grades = synthetic.sample_retina_grades(rng, 20000)
    bright = np.array([(synthetic.sample_polarity_spots(rng, int(g)) > 0).sum() for g in grades])
    assert roc_auc_score(grades >= 2, bright) == pytest.approx(want, abs=0.005)  # ~5 standard errors


def test_spot_profile_integrates_to_zero():
    """G(s) - G(2 s) / 4 has integral 2 pi s^2 - 2 pi (2 s)^2 / 4 = 0, so a spot changes no mean brightness."""
    size = 600
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    profile = synthetic.polarity_spot(yy, xx, 0.5, 0.5, 0.04)
    assert abs(profile.sum()) < 1e-4 * np.abs(profile).sum()
    assert profile.max() == pytest.approx(0.75, abs=1e-3)


def _render(renderer, n, seed, size=32):
    rng = np.random.default_rng(seed)
    grades = synthetic.sample_retina_grades(rng, n)
    return np.stack([renderer(rng, int(g), size) for g in grades]), (grades >= 2).astype(int)


def _random_cbr_probe(train, eval_):
    """Probe AUC per block of a randomly initialised CBR (widths 8-16-32-32, the study's small model)."""
    (x_train, y_train), (x_eval, y_eval) = train, eval_
    model = get_model("cbr_small", 2, widths=(8, 16, 32, 32))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    apply = functools.partial(model.apply, train=False)
    norm = PRESETS["torchvision"]

    def pooled(x):
        return probes.pooled_features(apply, variables, (norm(x[i : i + 200]) for i in range(0, len(x), 200)))

    return probes.linear_probe_auc_per_layer(pooled(x_train), y_train, pooled(x_eval), y_eval)


def _matched_filter_features(images):
    """ReLU of the luminance response to bright-core spot filters of three widths, averaged over the image: the
    feature a network has to learn (one conv filter, ReLU, global average pool)."""
    luminance = images.astype(np.float32).mean(-1)
    yy, xx = np.mgrid[-4:5, -4:5].astype(np.float32)
    features = []
    for sigma in (1.1, 1.4, 1.8):  # pixels, the spots' range at 32 px
        kernel = synthetic.polarity_spot(yy, xx, 0.0, 0.0, sigma)
        z = np.stack([fftconvolve(image, (kernel - kernel.mean())[::-1, ::-1], mode="same") for image in luminance])
        features += [
            np.maximum(z, 0).mean((1, 2)),
            np.maximum(-z, 0).mean((1, 2)),
            (np.maximum(z, 0) ** 2).mean((1, 2)),
        ]
    return np.stack(features, 1)


def test_polarity_needs_learned_features_while_blobs_do_not():
    """Frozen random conv features stay below the probe ceiling on every block of the polarity target, while the
    right single conv feature (a bright-core spot detector) solves it, and the same random features solve the old
    blob lesions (the flaw the polarity target removes)."""
    train, eval_ = _render(synthetic.render_retina_polarity, 800, 0), _render(synthetic.render_retina_polarity, 400, 1)
    random_probe = _random_cbr_probe(train, eval_)
    assert max(random_probe.values()) < PROBE_CEILING, random_probe
    matched = _matched_filter_features(train[0]), _matched_filter_features(eval_[0])
    assert probes.linear_probe_auc(matched[0], train[1], matched[1], eval_[1]) > 0.88
    blobs = _random_cbr_probe(_render(synthetic.render_retina, 800, 0), _render(synthetic.render_retina, 400, 1))
    assert max(blobs.values()) > 0.9, blobs


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _csv_names(path):
    with open(path, newline="") as f:
        return [row["image"] for row in csv.DictReader(f)]


def test_polarity_dr_layout_has_no_leakage_and_is_deterministic(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        generate.write_tfds_dr_manual(out, 40, seed=seed, size=32, num_test=30, lesions="polarity")
    names = {split: sorted(f[:-5] for f in os.listdir(os.path.join(a, split))) for split in ("train", "test", "sample")}
    assert sorted(_csv_names(os.path.join(a, "trainLabels.csv"))) == names["train"] and len(names["train"]) == 40
    assert sorted(_csv_names(os.path.join(a, "retinopathy_solution.csv"))) == names["test"]
    for x, y in itertools.combinations(names.values(), 2):
        assert not set(x) & set(y)  # no id in two splits
    pixels = [np.asarray(Image.open(os.path.join(a, f))).tobytes() for f in _files(a) if f.endswith(".jpeg")]
    assert len({hashlib.sha256(p).hexdigest() for p in pixels}) == len(pixels) == 40 + 30 + 10  # no duplicate image
    with open(os.path.join(a, "retinopathy_solution.csv"), newline="") as f:
        usage = [row["Usage"] for row in csv.DictReader(f)]
    assert usage.count("Public") == 9 and usage.count("Private") == 21
    for split, count in (("train", 40), ("validation", 9), ("test", 21)):
        assert len(build_dataset(make_config("retina_folder", root=a), split, train=False)) == count
    same = [open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read() for f in _files(a)]
    assert _files(a) == _files(b) and all(same)  # same seed, same bytes
    differ = [open(os.path.join(a, f), "rb").read() != open(os.path.join(c, f), "rb").read() for f in _files(a)]
    assert all(differ[i] for i, f in enumerate(_files(a)) if f.endswith(".jpeg"))  # another seed, other images


def test_ifs_classes_are_contractive_within_the_sigma_factor_range_and_filled():
    systems = synthetic.sample_ifs_classes(np.random.default_rng(0), 12)
    assert len(systems) == 12
    for maps in systems:
        n = len(maps)
        assert 2 <= n <= 4 and maps.shape == (n, 2, 3)
        singular = np.linalg.svd(maps[:, :, :2], compute_uv=False)  # (n, 2), descending
        assert singular.max() < 0.98
        sigma_factor = np.sum(singular[:, 0] + 2 * singular[:, 1])
        assert (5 + n) / 2 - 0.5 <= sigma_factor <= (5 + n) / 2 + 0.5
        points = synthetic.chaos_game(np.random.default_rng(1), maps, 4000)
        assert points.shape == (4000, 2) and np.all(np.isfinite(points))
        assert synthetic._filling_rate(points) >= 0.1


def test_fractal_source_is_balanced_and_deterministic(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for out in (a, b):
        generate.write_source(out, 20, seed=5, size=32, num_classes=5, num_test=10, kind="fractals")
    for split, per_class in (("train", 4), ("test", 2)):
        classes = sorted(os.listdir(os.path.join(a, split)))
        assert classes == [f"class_{i:02d}" for i in range(5)]
        assert all(len(os.listdir(os.path.join(a, split, c))) == per_class for c in classes)
    assert _files(a) == _files(b)
    assert all(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read() for f in _files(a))
    ds = build_dataset(make_config("image_folder", root=a), "train", train=False)
    assert len(ds) == 20 and ds.task.num_outputs == 5


def test_cli_variants(tmp_path, capsys):
    assert data_cli.main(["generate", "source", str(tmp_path / "s"), "--num", "6", "--num_classes", "3",
                          "--size", "16", "--kind", "fractals"]) == 0  # fmt: skip
    assert len(_files(str(tmp_path / "s"))) == 6 + 3
    assert data_cli.main(["generate", "kaggle_dr", str(tmp_path / "k"), "--num", "4", "--size", "16",
                          "--lesions", "polarity"]) == 0  # fmt: skip
    assert len(_csv_names(str(tmp_path / "k" / "trainLabels.csv"))) == 4
    with pytest.raises(SystemExit):
        data_cli.main(["generate", "source", str(tmp_path / "x"), "--num", "2", "--lesions", "polarity"])
    assert "--lesions does not apply to source" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Unknown lesions 'dots'"):
        generate.write_kaggle_dr(str(tmp_path / "y"), 2, lesions="dots")
