"""Prints every model: parameters, feature names and shapes at the paper's resolutions, GFLOPs per image.

    python -m transfusion_jax.models [--num-classes 2] [--models resnet50,cbr_small]

Shapes and FLOPs come from tracing only (jax.eval_shape, XLA's cost analysis of the lowered forward pass): nothing
is compiled or run, so the table prints in seconds on a CPU.
"""

import argparse

import jax
import jax.numpy as jnp

from transfusion_jax.models import MODEL_NAMES, cpu_kernels, get_model, paper_resolutions


def describe(name: str, num_classes: int, resolution: int):
    """(params, batch_stats entries, {feature: shape}, GFLOPs) of one forward pass on one image, eval mode."""
    model = get_model(name, num_classes)
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    with cpu_kernels.standard_operations():  # FLOPs of the model's arithmetic, not the CPU kernels' zero taps
        variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
        forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
        _, features = jax.eval_shape(forward, variables, x)
        flops = forward.lower(variables, x).cost_analysis()["flops"]

    def count(tree):
        return sum(leaf.size for leaf in jax.tree.leaves(tree))

    shapes = {k: tuple(f.shape[1:]) for k, f in features.items()}
    return count(variables["params"]), count(variables.get("batch_stats", {})), shapes, flops / 1e9


def feature_list(shapes: dict) -> str:
    """'name HxWxC, ...'; a run of three or more features of one shape (a ViT's blocks) as 'first .. last shape'."""
    groups: list[list] = []
    for name, shape in shapes.items():
        if groups and groups[-1][1] == shape:
            groups[-1][0].append(name)
        else:
            groups.append([[name], shape])
    parts = []
    for names, shape in groups:
        size = "x".join(map(str, shape))
        if len(names) > 2:
            parts.append(f"{names[0]} .. {names[-1]} {size}")
        else:
            parts.extend(f"{n} {size}" for n in names)
    return ", ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-classes", type=int, default=2, help="task head size (2 = the paper's Retina task)")
    parser.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated registry names")
    args = parser.parse_args(argv)
    print("| model | input | params | BN stats | GFLOPs/img (XLA, 2 per MAC) | features (H, W, C) |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for res in paper_resolutions(name):
            params, stats, shapes, gflops = describe(name, args.num_classes, res)
            feats = feature_list(shapes)
            print(f"| {name} | {res} | {params:,} | {stats:,} | {gflops:.2f} | {feats} |", flush=True)


if __name__ == "__main__":
    main()
