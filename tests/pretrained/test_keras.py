"""Keras -> ours, proven on random-weight keras.applications models (random BN beta/gamma/statistics and conv
biases) saved in every layout Keras reads: each block's activations and the logits agree in eval mode at the native
and at a non-square input size."""

import os
import re

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

from pretrained_testlib import TOL, normalise, our_forward, pixels, rel_err  # noqa: E402

from transfusion_jax import pretrained  # noqa: E402
from transfusion_jax.pretrained.__main__ import main  # noqa: E402
from transfusion_jax.surgery import tree  # noqa: E402


def randomise(model, seed: int) -> None:
    """Random BN gamma/beta/moving stats, conv and dense biases: every converted array must be the right one."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        new = []
        for w in layer.weights:
            shape, name = tuple(w.shape), w.name
            if name in ("gamma", "moving_variance"):
                new.append(rng.uniform(0.5, 1.5, shape))
            elif name in ("beta", "moving_mean", "bias"):
                new.append(rng.normal(0.0, 0.2, shape))
            else:
                new.append(np.asarray(w))
        layer.set_weights([a.astype(np.float32) for a in new])


def save_layouts(model, directory, layouts):
    """Writes `model` in each of `layouts`: 'weights.h5' (Keras 3 save_weights), 'keras' (.keras archive),
    'legacy' (legacy .h5 weights, as keras.applications downloads, by Keras' own legacy writer), 'legacy_model'
    (legacy full-model .h5), 'keras2' (the legacy file renamed as Keras 2 wrote it)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    paths = {}
    for layout in layouts:
        paths[layout] = path = (
            directory
            / {
                "weights.h5": "m.weights.h5",
                "keras": "m.keras",
                "legacy": "m.h5",
                "legacy_model": "full.h5",
                "keras2": "keras2.h5",
            }[layout]
        )
        if layout == "weights.h5":
            model.save_weights(path)
        elif layout in ("keras", "legacy_model"):
            model.save(path)
        elif layout == "legacy":
            with h5py.File(path, "w") as f:
                legacy_h5_format.save_weights_to_hdf5_group(f, model)
        else:
            keras2_copy(paths["legacy"], path)
    return paths


def keras2_copy(src, dst):
    """The real ImageNet files were written by Keras 2: auto-named layers counted from 1 ('conv2d_1') and weight
    names ending in ':0'. Rewrite a legacy file that way, in the same layer order."""
    import h5py

    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        names = [n.decode() if isinstance(n, bytes) else n for n in fin.attrs["layer_names"]]
        auto = [n for n in names if re.fullmatch(r"(conv2d|batch_normalization)(_\d+)?", n)]
        rank = {}
        for prefix in ("conv2d", "batch_normalization"):
            mine = sorted((n for n in auto if re.fullmatch(prefix + r"(_\d+)?", n)), key=_serial)
            rank.update({n: f"{prefix}_{i + 1}" for i, n in enumerate(mine)})
        fout.attrs["layer_names"] = [rank.get(n, n).encode() for n in names]
        for n in names:
            new = rank.get(n, n)
            group = fout.create_group(new)
            old_weights = [w.decode() if isinstance(w, bytes) else w for w in fin[n].attrs["weight_names"]]
            new_weights = [f"{new}/{w.split('/')[-1]}:0" for w in old_weights]
            group.attrs["weight_names"] = [w.encode() for w in new_weights]
            for old, w in zip(old_weights, new_weights):
                group.create_dataset(w, data=fin[n][old][()])


def keras_outputs(model, layer_names, x):
    sub = keras.Model(model.inputs, [model.get_layer(n).output for n in layer_names])
    return {n: np.asarray(y) for n, y in zip(layer_names, sub(x, training=False))}


def _serial(name):
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def check_sizes(build, weights, names, variables, model, sizes, preset, seed):
    """For each input size: a Keras model of that size with `weights`, compared block by block with ours."""
    for size in sizes:
        ref = build(size)
        ref.set_weights(weights)
        x = normalise(pixels(2, *size, seed=seed), preset)
        ref_out = keras_outputs(ref, list(names(ref).values()), x)
        logits, feats = our_forward(model, variables, x)
        for ours_name, keras_name in names(ref).items():
            got = logits if ours_name == "logits" else feats[ours_name]
            assert rel_err(got, ref_out[keras_name]) < TOL, (size, ours_name)


LAYOUT_READ = {
    "weights.h5": "Keras 3 .weights.h5",
    "keras": ".keras archive (Keras 3 weights layout)",
    "legacy": "legacy Keras .h5 weights",
    "legacy_model": "legacy Keras .h5 full model",
    "keras2": "legacy Keras .h5 weights",
}


def convert_layouts(paths, arch, out_dir):
    """Every layout through the CLI; all must give the same arrays. Returns the .weights.h5 conversion."""
    results = {}
    for layout, path in paths.items():
        out = out_dir / f"{arch}_{layout}.npz"
        assert main(["convert", "--source", "keras", "--arch", arch, str(path), str(out)]) == 0
        results[layout] = pretrained.load(str(out))
    first = results["weights.h5"]
    for layout, (variables, metadata) in results.items():
        assert metadata["original_file"]["layout"] == LAYOUT_READ[layout]  # each reader path was taken
        for c in ("params", "batch_stats"):
            a, b = (tree.flatten(v[c]) for v in (variables, first[0]))
            assert a.keys() == b.keys(), layout
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{layout}: {k}")
    return first


# ---------------------------------------------------------------- ResNet50 (v1)

RESNET_NAMES = {
    "conv1": "pool1_pool",
    "block1": "conv2_block3_out",
    "block2": "conv3_block4_out",
    "block3": "conv4_block6_out",
    "block4": "conv5_block3_out",
    "pre_logits": "avg_pool",
    "logits": "predictions",
}


def build_resnet(size):
    return keras.applications.ResNet50(weights=None, input_shape=(*size, 3), classifier_activation=None)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    keras.utils.set_random_seed(0)
    ref = build_resnet((224, 224))
    randomise(ref, seed=1)
    directory = tmp_path_factory.mktemp("keras_resnet")
    paths = save_layouts(ref, directory, ["weights.h5", "keras", "legacy", "legacy_model"])
    variables, metadata = convert_layouts(paths, "resnet50", directory)
    return ref, directory, variables, metadata


def test_resnet50_matches_keras(resnet):
    ref, _, variables, metadata = resnet
    assert metadata["variant"] == "keras" and metadata["preprocessing"]["name"] == "keras_resnet50"
    assert metadata["preprocessing"]["channel_order"] == "BGR"
    model = pretrained.model_from_metadata(metadata)
    check_sizes(
        build_resnet,
        ref.get_weights(),
        lambda _: RESNET_NAMES,
        variables,
        model,
        [(224, 224), (200, 248)],
        "keras_resnet50",
        seed=0,
    )


def test_resnet50_parameter_count_matches_keras(resnet):
    ref, _, variables, _ = resnet
    n = sum(int(np.prod(w.shape)) for w in ref.weights)  # trainable + BN moving statistics
    ours = sum(int(np.size(a)) for c in ("params", "batch_stats") for a in tree.flatten(variables[c]).values())
    assert ours == n


def test_inception_file_given_as_resnet_is_rejected(inception, tmp_path):
    """Legacy files name their layers, so the diff shows Inception's names; a Keras 3 file keys layers by class
    count, so the diff shows which ResNet50 layer each slot would have been and what it held instead."""
    paths = inception[1]
    unexpected = {
        "legacy": r"conv2d(_\d+)?/kernel \(3, 3, 3, 32\)",
        "weights.h5": r"batch_normalization \(as conv1_bn\)/var0 \(32,\)",
    }
    for layout, pattern in unexpected.items():
        with pytest.raises(pretrained.ConversionError) as e:
            pretrained.convert("keras", "resnet50", str(paths[layout]))
        msg = str(e.value)
        assert "missing from the file" in msg and "... and" in msg, layout
        assert re.search(pattern, msg), (layout, msg)


def test_missing_layer_is_named(resnet, tmp_path):
    import h5py

    legacy = resnet[1] / "m.h5"  # the layout keras.applications downloads
    cut = tmp_path / "missing.h5"
    cut.write_bytes(legacy.read_bytes())
    with h5py.File(cut, "a") as f:
        f.attrs["layer_names"] = [
            n for n in f.attrs["layer_names"] if n not in (b"conv3_block2_2_bn", "conv3_block2_2_bn")
        ]
    with pytest.raises(pretrained.ConversionError) as e:
        pretrained.convert("keras", "resnet50", str(cut))
    msg = str(e.value)
    assert "missing from the file (4):" in msg
    for leaf in ("params/block2/unit2/conv2/bn/scale (128,)", "batch_stats/block2/unit2/conv2/bn/var (128,)"):
        assert leaf in msg


def test_truncated_keras_file_is_rejected(resnet, tmp_path):
    src = resnet[1] / "m.weights.h5"
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(pretrained.ConversionError, match="Cannot read .*complete"):
        pretrained.convert("keras", "resnet50", str(cut))


# ---------------------------------------------------------------- InceptionV3


def inception_names(model):
    """Ours -> Keras layer names. The stem ends at the second max-pool Keras constructs (auto-named)."""
    pools = sorted((layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)), key=_serial)
    return {
        "stem": pools[1],
        "mixed_5": "mixed2",
        "mixed_6": "mixed7",
        "mixed_7": "mixed10",
        "pre_logits": "avg_pool",
        "logits": "predictions",
    }


def build_inception(size):
    return keras.applications.InceptionV3(weights=None, input_shape=(*size, 3), classifier_activation=None)


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    keras.utils.set_random_seed(0)
    ref = build_inception((299, 299))
    randomise(ref, seed=2)
    directory = tmp_path_factory.mktemp("keras_inception")
    # (the .keras archive and the full-model .h5 are tested on ResNet50: they hold the layouts tested here)
    paths = save_layouts(ref, directory, ["weights.h5", "legacy", "keras2"])
    variables, metadata = convert_layouts(paths, "inception_v3", directory)
    return ref, paths, variables, metadata


def test_inception_v3_matches_keras(inception):
    ref, _, variables, metadata = inception
    assert metadata["model_overrides"] == {"variant": "keras"} and metadata["preprocessing"]["name"] == "inception"
    model = pretrained.model_from_metadata(metadata)
    check_sizes(
        build_inception,
        ref.get_weights(),
        inception_names,
        variables,
        model,
        [(299, 299), (320, 299)],
        "inception",
        seed=3,
    )


def test_missing_inception_layer_is_named(inception, tmp_path):
    """Inception's layers are matched by construction number, so a gap must be named, not shift later layers.
    Keras' inception_v3.py builds the stem's 5 convs, then Mixed_5b's branch1x1, branch5x5_1, branch5x5_2,
    branch3x3dbl_1, _2, _3: the 11th conv (#10 counted from 0) is branch3x3dbl_3."""
    import h5py

    cut = tmp_path / "gap.h5"
    keras2_copy(inception[1]["legacy"], cut)  # conv2d_1 .. conv2d_94
    with h5py.File(cut, "a") as f:
        f.attrs["layer_names"] = [n for n in f.attrs["layer_names"] if n not in (b"conv2d_11", "conv2d_11")]
    with pytest.raises(pretrained.ConversionError) as e:
        pretrained.convert("keras", "inception_v3", str(cut))
    assert "missing #11 -> mixed_5/Mixed_5b/branch3x3dbl_3/conv" in str(e.value)
