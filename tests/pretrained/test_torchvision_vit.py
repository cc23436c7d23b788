"""torchvision VisionTransformer -> our ViT, proven on random weights: LayerNorm affines, biases, the class token and
the (by torchvision zero-initialised) head all randomised, so a swapped, transposed or dropped tensor shows. Tiny
VisionTransformers check every block's tokens and the logits; the full vit_b_16 goes through the CLI once."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from pretrained_testlib import TOL, normalise, our_forward, pixels, rel_err  # noqa: E402

from transfusion_jax import pretrained  # noqa: E402
from transfusion_jax.pretrained.__main__ import main  # noqa: E402
from transfusion_jax.surgery import tree  # noqa: E402

TINY = dict(patch_size=8, width=16, depth=2, num_heads=2, mlp_dim=32)


def tiny_reference(image_size=32, num_classes=7, **kw):
    spec = {**TINY, **kw}
    return torchvision.models.vision_transformer.VisionTransformer(
        image_size=image_size,
        patch_size=spec["patch_size"],
        num_layers=spec["depth"],
        num_heads=spec["num_heads"],
        hidden_dim=spec["width"],
        mlp_dim=spec["mlp_dim"],
        num_classes=num_classes,
    )


def randomise(model: "torch.nn.Module", seed: int) -> "torch.nn.Module":
    """What torchvision initialises to constants redrawn: LayerNorm weights 1 + N(0, 0.2) and biases, every other
    bias, the class token and the head (zero-initialised by torchvision) N(0, 0.2); the weight matrices keep
    torchvision's random init (larger random matrices make a 12-block ViT chaotic, where float rounding alone moves
    the logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            if "ln" in name and name.endswith("weight"):
                p.copy_(1.0 + noise)
            elif name.endswith("bias") or name.startswith("heads.") or name == "class_token":
                p.copy_(noise)
    return model.eval()


def torch_tokens(model, x_nhwc):
    """Logits and each block's tokens: the embedding (hooked after the dropout that follows the position
    embedding), every encoder layer, the final LayerNorm; pre_logits is the normalised class token."""
    out = {}
    modules = {"embedding": model.encoder.dropout, "encoder_norm": model.encoder.ln}
    modules.update({f"encoderblock_{i}": layer for i, layer in enumerate(model.encoder.layers)})
    hooks = [m.register_forward_hook(lambda _, __, y, k=k: out.__setitem__(k, y)) for k, m in modules.items()]
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous())
    finally:
        for h in hooks:
            h.remove()
    feats = {k: v.numpy() for k, v in out.items()}
    feats["pre_logits"] = feats["encoder_norm"][:, 0]
    return logits.numpy(), feats


def convert(tmp_path, reference, **overrides):
    src = tmp_path / "vit.pth"
    torch.save(reference.state_dict(), src)
    return pretrained.convert("torchvision", "vit_b16", str(src), str(tmp_path / "vit.npz"), model_overrides=overrides)


@pytest.mark.parametrize("image_size", [32, 48])
def test_tiny_vit_matches_torchvision_block_by_block(tmp_path, image_size):
    torch.manual_seed(0)
    ref = randomise(tiny_reference(image_size), seed=1)
    variables, metadata = convert(tmp_path, ref, **TINY)
    assert metadata["image_size"] == image_size  # read from the position embeddings: 1 + (size / 8)^2 tokens
    assert metadata["model_overrides"] == TINY and metadata["preprocessing"]["name"] == "torchvision"
    model = pretrained.model_from_metadata(metadata)
    x = normalise(pixels(3, image_size, image_size, seed=2), "torchvision")
    ref_logits, ref_feats = torch_tokens(ref, x)
    logits, feats = our_forward(model, variables, x)
    assert list(feats) == ["embedding", "encoderblock_0", "encoderblock_1", "encoder_norm", "pre_logits"]
    for name, want in ref_feats.items():
        assert rel_err(feats[name], want) < TOL, name
    assert rel_err(logits, ref_logits) < TOL


def test_every_tensor_is_mapped_and_nothing_is_invented(tmp_path):
    ref = randomise(tiny_reference(), seed=3)
    variables, _ = convert(tmp_path, ref, **TINY)
    n_ours = sum(np.size(v) for v in tree.flatten(variables).values())
    assert n_ours == sum(p.numel() for p in ref.parameters())
    attention = variables["params"]["encoderblock_1"]["MultiHeadDotProductAttention_0"]
    w = ref.encoder.layers[1].self_attention.in_proj_weight.detach().numpy()
    np.testing.assert_array_equal(attention["value"]["kernel"].reshape(16, 16), w[32:].T)  # rows [2D:3D] = value


def test_wrong_depth_and_heads_are_named(tmp_path):
    ref = randomise(tiny_reference(), seed=4)
    with pytest.raises(pretrained.ConversionError) as e:
        convert(tmp_path, ref, **{**TINY, "depth": 3})
    assert "missing from the file" in str(e.value) and "encoderblock_2" in str(e.value)
    with pytest.raises(pretrained.ConversionError, match="16 is not a multiple of num_heads 3"):
        convert(tmp_path, ref, **{**TINY, "num_heads": 3})
    with pytest.raises(pretrained.ConversionError) as e:  # a 32-wide model: every tensor of the file mis-shaped
        convert(tmp_path, ref, **{**TINY, "width": 32})
    assert "shape mismatch" in str(e.value) and "in_proj_weight" in str(e.value)
    with pytest.raises(pretrained.ConversionError, match="keras.applications has no ViT"):
        pretrained.convert("keras", "vit_b16", str(tmp_path / "vit.pth"))


def test_full_vit_b16_through_the_cli(tmp_path):
    """torchvision's own vit_b_16 (86.6M parameters), random weights, one 224 px forward on each side."""
    torch.manual_seed(0)
    ref = randomise(torchvision.models.vit_b_16(weights=None), seed=5)
    src, out = tmp_path / "vit_b_16.pth", tmp_path / "vit_b16.npz"
    torch.save(ref.state_dict(), src)
    assert main(["convert", "--source", "torchvision", "--arch", "vit_b16", str(src), str(out)]) == 0
    variables, metadata = pretrained.load(str(out))
    assert (metadata["architecture"], metadata["num_classes"], metadata["image_size"]) == ("vit_b16", 1000, 224)
    assert metadata["model_overrides"] == {} and metadata["preprocessing"]["name"] == "torchvision"
    x = normalise(pixels(2, 224, 224, seed=6), "torchvision")
    with torch.no_grad():
        ref_logits = ref(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    logits, _ = our_forward(pretrained.model_from_metadata(metadata), variables, x)
    assert rel_err(logits, ref_logits) < TOL
