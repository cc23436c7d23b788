"""bench_conv's shape capture: the convolutions it times are the model's, with the right input-gradient flags.

Reference: torchvision's resnet50, whose Conv2d modules are the convolutions our ResNet-50 must contain.
"""

import collections
import importlib.util
import os

import torchvision

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "bench_conv.py")
_SPEC = importlib.util.spec_from_file_location("bench_conv", _PATH)
bench_conv = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_conv)


def test_resnet50_shapes_match_torchvision():
    shapes, pools, _ = bench_conv.model_layers("resnet50", 32, 2)
    ours = collections.Counter()
    for shape, count in shapes.items():
        ours[(shape.rhs, shape.strides, shape.padding)] += count
    reference = collections.Counter()
    for m in torchvision.models.resnet50(weights=None).modules():
        if m.__class__.__name__ == "Conv2d":
            o, i, kh, kw = m.weight.shape
            reference[((kh, kw, i, o), m.stride, tuple((p, p) for p in m.padding))] += 1
    assert ours == reference  # 53 convolutions: kernels, strides and paddings as torchvision's
    stem = [s for s in shapes if s.lhs == (2, 32, 32, 3)]
    assert len(stem) == 1 and shapes[stem[0]] == 1
    assert [s.input_grad for s in shapes] == [s != stem[0] for s in shapes]  # only the image needs no gradient
    assert list(pools.items()) == [(bench_conv.PoolShape((2, 16, 16, 64), (3, 3), (2, 2), ((1, 1), (1, 1))), 1)]


def test_cbr_input_gradients_follow_the_parameters():
    convs, pools, _ = bench_conv.model_layers("cbr_small", 32, 2)
    shapes = list(convs.elements())
    assert [s.lhs[-1] for s in shapes] == [3, 32, 64, 128]
    assert [s.out[1] for s in shapes] == [32, 15, 7, 3]  # SAME convs, 3x3/2 VALID pools in between
    assert [s.input_grad for s in shapes] == [False, True, True, True]
    assert [(p.lhs[1], p.window, p.strides, p.padding) for p in pools.elements()] == [
        (h, (3, 3), (2, 2), ((0, 0), (0, 0))) for h in (32, 15, 7, 3)
    ]
