"""torchvision -> ours, proven on random-weight torchvision models (with random BN statistics, gamma and beta):
each block's activations and the logits agree in eval mode, at the native and at a non-square input size."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from pretrained_testlib import TOL, normalise, our_forward, pixels, rel_err  # noqa: E402

from transfusion_jax import pretrained  # noqa: E402
from transfusion_jax.models import inception  # noqa: E402
from transfusion_jax.models.layers import ConvBN  # noqa: E402
from transfusion_jax.pretrained.__main__ import main  # noqa: E402


def randomise_bn(model: "torch.nn.Module", seed: int) -> None:
    """Random BN gamma, beta, running mean and variance, so a swapped or dropped statistic cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    model.eval()


def convert_via_cli(tmp_path, reference, arch):
    src, out = tmp_path / f"{arch}.pth", tmp_path / f"{arch}.npz"
    torch.save(reference.state_dict(), src)
    assert main(["convert", "--source", "torchvision", "--arch", arch, str(src), str(out)]) == 0
    variables, metadata = pretrained.load(str(out))
    return src, out, variables, metadata


def torch_features(model, x_nhwc, modules):
    """Logits and the outputs of the named modules (forward hooks), as NHWC / (N, C) NumPy arrays."""
    out = {}
    hooks = [getattr(model, m).register_forward_hook(lambda _, __, y, m=m: out.__setitem__(m, y)) for m in modules]
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous())
    finally:
        for h in hooks:
            h.remove()
    feats = {
        k: (v.flatten(1) if tuple(v.shape[2:]) == (1, 1) else v.permute(0, 2, 3, 1)).numpy() for k, v in out.items()
    }
    return logits.numpy(), feats


# ---------------------------------------------------------------- ResNet-50


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None)
    randomise_bn(ref, seed=1)
    src, out, variables, metadata = convert_via_cli(tmp_path_factory.mktemp("tv_resnet"), ref, "resnet50")
    return ref, src, out, variables, metadata, pretrained.model_from_metadata(metadata)


RESNET_HOOKS = {
    "conv1": "maxpool",
    "block1": "layer1",
    "block2": "layer2",
    "block3": "layer3",
    "block4": "layer4",
    "pre_logits": "avgpool",
}


@pytest.mark.parametrize("size", [(224, 224), (200, 248)])
def test_resnet50_matches_torchvision(resnet, size):
    ref, _, _, variables, metadata, model = resnet
    x = normalise(pixels(2, *size), metadata["preprocessing"]["name"])
    ref_logits, ref_feats = torch_features(ref, x, RESNET_HOOKS.values())
    logits, feats = our_forward(model, variables, x)
    for ours_name, torch_name in RESNET_HOOKS.items():
        assert rel_err(feats[ours_name], ref_feats[torch_name]) < TOL, ours_name
    assert rel_err(logits, ref_logits) < TOL


def test_resnet50_metadata_and_inspect(resnet, capsys):
    ref, src, out, variables, metadata, _ = resnet
    assert metadata["architecture"] == "resnet50" and metadata["variant"] == "torchvision"
    assert metadata["num_classes"] == 1000 and metadata["head_names"] == ["head"]
    assert metadata["preprocessing"]["name"] == "torchvision"
    assert metadata["original_file"]["name"] == src.name and len(metadata["original_file"]["sha256"]) == 64
    assert main(["inspect", str(out)]) == 0
    printed = capsys.readouterr().out
    n_params = sum(p.numel() for p in ref.parameters())
    n_stats = sum(b.numel() for name, b in ref.named_buffers() if "running_" in name)
    assert f"{'total':<14}{n_params:>14,}{n_stats:>12,}" in printed
    assert "params/block4/unit3/conv3/conv/kernel (1, 1, 512, 2048)" in printed


def test_wrapped_state_dict_with_module_prefix(resnet, tmp_path):
    ref, _, _, variables, _, _ = resnet
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, wrapped)
    got, _ = pretrained.convert("torchvision", "resnet50", str(wrapped))
    np.testing.assert_array_equal(
        got["params"]["block3"]["unit2"]["conv2"]["conv"]["kernel"],
        variables["params"]["block3"]["unit2"]["conv2"]["conv"]["kernel"],
    )
    np.testing.assert_array_equal(
        got["batch_stats"]["conv1"]["bn"]["var"], variables["batch_stats"]["conv1"]["bn"]["var"]
    )


# ---------------------------------------------------------------- bad input


def test_resnet18_is_rejected_naming_shapes(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(pretrained.ConversionError) as e:
        pretrained.convert("torchvision", "resnet50", str(path))
    msg = str(e.value)
    assert (
        "layer1.0.conv1.weight -> params/block1/unit1/conv1/conv/kernel: file (3, 3, 64, 64), model (1, 1, 64, 64)"
        in msg
    )
    assert "missing from the file" in msg and "params/block1/unit1/conv3/conv/kernel (1, 1, 64, 256)" in msg
    assert "... and" in msg  # resnet18 lacks far more than 20 entries: the listing is capped with a count


def test_inception_given_as_resnet_is_rejected(tmp_path):
    path = tmp_path / "inception.pth"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    with pytest.raises(pretrained.ConversionError) as e:
        pretrained.convert("torchvision", "resnet50", str(path))
    msg = str(e.value)
    assert "unexpected in the file (" in msg and "Conv2d_1a_3x3.conv.weight (32, 3, 3, 3)" in msg
    assert "missing from the file (" in msg


def test_missing_key_is_named(resnet, tmp_path):
    ref = resnet[0]
    state = ref.state_dict()
    del state["layer3.2.bn2.running_var"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(pretrained.ConversionError) as e:
        pretrained.convert("torchvision", "resnet50", str(path))
    msg = str(e.value)
    assert "missing from the file (1):\n    batch_stats/block3/unit3/conv2/bn/var (256,)" in msg
    assert "unexpected" not in msg and "shape mismatch" not in msg


def test_truncated_file_is_rejected(resnet, tmp_path, capsys):
    src = resnet[1]
    cut = tmp_path / "truncated.pth"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert main(["convert", "--source", "torchvision", "--arch", "resnet50", str(cut), str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "Cannot read" in err and "truncated.pth" in err and "complete" in err
    assert not (tmp_path / "x.npz").exists()


class _NotATensor:
    pass


def test_pickled_objects_are_not_executed(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"conv1.weight": _NotATensor()}, path)
    with pytest.raises(pretrained.ConversionError, match="Cannot read"):
        pretrained.convert("torchvision", "resnet50", str(path))


def test_truncated_converted_checkpoint_is_rejected(resnet, tmp_path):
    out = resnet[2]
    cut = tmp_path / "cut.npz"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 3])
    with pytest.raises(pretrained.ConversionError, match="complete"):
        pretrained.load(str(cut))


# ---------------------------------------------------------------- Inception-v3


@pytest.fixture(scope="module")
def inception_ref(tmp_path_factory):
    torch.manual_seed(0)
    ref = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    randomise_bn(ref, seed=2)
    src, out, variables, metadata = convert_via_cli(tmp_path_factory.mktemp("tv_inception"), ref, "inception_v3")
    return ref, variables, metadata, pretrained.model_from_metadata(metadata)


INCEPTION_HOOKS = {
    "stem": "maxpool2",
    "mixed_5": "Mixed_5d",
    "mixed_6": "Mixed_6e",
    "mixed_7": "Mixed_7c",
    "pre_logits": "avgpool",
}


@pytest.mark.parametrize("size", [(299, 299), (320, 299)])
def test_inception_v3_matches_torchvision(inception_ref, size):
    ref, variables, metadata, model = inception_ref
    assert metadata["model_overrides"] == {"variant": "torchvision", "aux_logits": True}
    ref.transform_input = False  # this test feeds both the same tensor; transform_input is tested below
    x = normalise(pixels(2, *size, seed=3), "inception")
    ref_logits, ref_feats = torch_features(ref, x, INCEPTION_HOOKS.values())
    logits, feats = our_forward(model, variables, x)
    for ours_name, torch_name in INCEPTION_HOOKS.items():
        assert rel_err(feats[ours_name], ref_feats[torch_name]) < TOL, ours_name
    assert rel_err(logits, ref_logits) < TOL


def test_inception_transform_input_is_the_inception_preprocessing(inception_ref):
    """Pretrained torchvision Inception (transform_input=True) fed torchvision-normalised images == ours fed the
    same images with the preprocessing recorded in the checkpoint (pixels / 127.5 - 1)."""
    ref, variables, metadata, model = inception_ref
    assert metadata["preprocessing"]["name"] == "inception"
    px = pixels(2, 299, 299, seed=4)
    ref.transform_input = True
    try:
        ref_logits, _ = torch_features(ref, normalise(px, "torchvision"), [])
    finally:
        ref.transform_input = False
    p = metadata["preprocessing"]
    x = ((px / 255 * p["scale"] - np.asarray(p["mean"])) / np.asarray(p["std"])).astype(np.float32)
    np.testing.assert_allclose(x, px / 127.5 - 1, atol=1e-6)
    logits, _ = our_forward(model, variables, x)
    assert rel_err(logits, ref_logits) < TOL


def test_inception_aux_head_matches_torchvision(inception_ref):
    """torchvision only runs AuxLogits in training, so compare the head itself, eval mode, on a Mixed_6e-sized map."""
    ref, variables, _, _ = inception_ref
    x = np.random.default_rng(5).standard_normal((2, 17, 17, 768)).astype(np.float32)
    with torch.no_grad():
        expected = ref.AuxLogits(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    conv = lambda *a, **k: ConvBN(*a, bn_epsilon=1e-3, **k)  # noqa: E731  (torchvision BasicConv2d)
    head = inception.AuxHead(1000, conv)
    aux_vars = {c: variables[c]["aux_logits"] for c in ("params", "batch_stats")}
    assert rel_err(head.apply(aux_vars, x, train=False), expected) < TOL
