"""How far a one-channel model folded from an RGB one (surgery/fit.py) is from the RGB model on the grey image
replicated, where the first layer's zero padding enters: docs/VIT.md's border-effect table.

For each model, random init (the architecture's own initialisers) with BatchNorm statistics and affines redrawn, a
torchvision-normalised RGB checkpoint is folded into the one-channel model by `surgery.initialize('transfer', ...)`
(the head copied), and both run in eval mode on the same grey images (uniform noise and a smooth gradient image).
Printed per model: the first layer's output error inside (where no padded tap enters) and on the border, relative
to the largest output, and the logits' error relative to the largest logit.

  python benchmarks/grey_border_effect.py                     # resnet50 and cbr_small at 224, batch 4, CPU
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

# (model, the ConvBN unit that reads the image, its kernel, stride and padding)
CASES = {"resnet50": ("conv1", 7, 2, 3), "cbr_small": ("layer1", 7, 1, 3)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet50,cbr_small")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    return p.parse_args(argv)


def interior(n, k, stride, pad):
    return slice(-(-pad // stride), (n - 1 + pad - (k - 1)) // stride + 1)


def images(batch, size):
    """Uniform grey noise, and smooth left-to-right gradients: the border of a noise image is as bright as its
    middle on average; a gradient's is not."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (batch // 2, size, size, 1)).astype(np.float32)
    ramp = np.broadcast_to(np.linspace(0, 255, size, dtype=np.float32)[None, None, :, None], (1, size, size, 1))
    ramps = np.concatenate([ramp * f for f in np.linspace(0.3, 1.0, batch - batch // 2)])
    return np.concatenate([noise, ramps])


def measure(name, size, batch):
    import jax
    import jax.numpy as jnp

    from transfusion_jax.data import preprocess
    from transfusion_jax.models import get_model
    from transfusion_jax.surgery import flatten, initialize, unflatten

    unit, k, stride, pad = CASES[name]
    model = get_model(name, 2)
    rgb = jax.jit(lambda r: model.init(r, jnp.zeros((1, size, size, 3)), train=False))(jax.random.key(0))
    rng = np.random.default_rng(1)
    flat = {key: np.asarray(v) for key, v in flatten(rgb).items()}
    for key, value in flat.items():
        if key.endswith(("/mean", "bn/bias")):
            flat[key] = rng.normal(0, 0.2, value.shape).astype(np.float32)
        elif key.endswith(("/var", "bn/scale")):
            flat[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    rgb = unflatten(flat)
    grey = jax.jit(lambda r: model.init(r, jnp.zeros((1, size, size, 1)), train=False))(jax.random.key(2))
    metadata = {"architecture": name, "preprocessing": {"name": "torchvision"}}
    folded, _ = initialize("transfer", name, grey, pretrained="rgb", loader=lambda _: (rgb, metadata))
    folded["params"]["head"] = rgb["params"]["head"]

    def run(variables, x):
        capture = lambda m, method: method == "__call__" and m.name == unit  # noqa: E731
        (logits, _), state = model.apply(variables, x, train=False, capture_intermediates=capture)
        return logits, state["intermediates"][unit]["__call__"][0]

    g = images(batch, size)
    want_logits, want = jax.jit(run)(rgb, preprocess.PRESETS["torchvision"](np.repeat(g, 3, axis=-1)))
    logits, got = jax.jit(run)(folded, preprocess.get_normalization("torchvision", channels=1)(g))
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    inside = interior(size, k, stride, pad)
    mask = np.ones(want.shape[1:3], bool)
    mask[inside, inside] = False
    scale = np.abs(want).max()
    diff = np.abs(got - want)
    logit_err = np.abs(np.asarray(logits) - np.asarray(want_logits)).max() / np.abs(np.asarray(want_logits)).max()
    return {
        "inside": diff[:, inside, inside].max() / scale,
        "border max": diff[:, mask].max() / scale,
        "border median": float(np.median(diff[:, mask]) / scale),
        "border rows": int(want.shape[1] - (inside.stop - inside.start)),
        "logits": float(logit_err),
    }


def main(argv=None):
    args = parse_args(argv)
    rows = {name: measure(name, args.size, args.batch) for name in args.models.split(",") if name}
    print(f"{args.size} px, batch {args.batch} (half uniform noise, half gradients), random init, eval mode")
    print("| model | first layer, inside | border, max | border, median | border rows + cols | logits |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['inside']:.1e} | {r['border max']:.1e} | {r['border median']:.1e} | {r['border rows']} "
            f"| {r['logits']:.1e} |"
        )


if __name__ == "__main__":
    main()
