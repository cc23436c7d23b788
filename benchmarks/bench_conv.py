"""Every convolution of the CPU train step, XLA vs PyTorch, beside the whole step measured in the same run.

Where does our CPU step lose to PyTorch's? The convolutions are taken from the models themselves: the forward pass
of our Flax model (batch 8, float32, NHWC, BatchNorm in train mode) is traced to a jaxpr and each
`conv_general_dilated` in it gives one shape (input, kernel, strides, padding), grouped with its multiplicity. A
convolution's input gradient counts only where the step needs it (its input depends on the parameters: not the
stem, whose input is the image). Each distinct shape is timed in one process, the sides taking turns: forward,
input gradient and kernel gradient, in XLA as the real step runs them (jitted, through models/cpu_kernels.py), in
XLA's plain convolution (`lax.conv_general_dilated` and its autodiff), and in PyTorch (channels_last,
`F.conv2d` and `torch.autograd.grad`, default threads as in bench_train_step). Each side's results are checked
against PyTorch's before timing.

Then the rest of the step, piece by piece, forward + backward, the same way: flax's BatchNorm (train mode) + ReLU
on every convolution's output, every max-pool of the jaxpr, one Adam update of the model's parameters.

Printed: the whole step of both sides first (bench_train_step's builders, in the same run), per shape ms and
PyTorch / ours (speed: above 1 we are faster), the multiplicity-weighted totals, the pieces, then the
convolutions' share of each step, what the step's ratio would be if our convolutions (or the rest) cost what
PyTorch's do, the step's FLOPs from XLA's cost analysis and the achieved GFLOP/s, beside the machine's float32
matmul peak (roofline.py) printed at the top.

  python benchmarks/bench_conv.py                                  # resnet50@224 and cbr_small@587, batch 8
  python benchmarks/bench_conv.py --models=cbr_small --reps=3      # one model, fewer repetitions
  python benchmarks/bench_conv.py --clock=cpu                      # CPU time instead of wall time (a loaded machine)
"""

import argparse
import collections
import dataclasses
import os
import re
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout
sys.path.insert(0, HERE)

from bench_train_step import (  # noqa: E402
    bench_config,
    default_size,
    environment,
    jax_stepper,
    torch_stepper,
)
from roofline import matmul_peak_gflops, program_flops  # noqa: E402

_NHWC = ("NHWC", "HWIO", "NHWC")
OPS = ("forward", "input grad", "kernel grad")
SIDES = ("ours", "XLA plain", "PyTorch")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet50,cbr_small", help="comma-separated model names")
    p.add_argument("--batch", type=int, default=8, help="batch of the step and of every convolution")
    p.add_argument("--size", type=int, default=0, help="input resolution; 0 = each model's paper resolution")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of each convolution per side, median")
    p.add_argument("--steps", type=int, default=5, help="timed train steps per side, median")
    p.add_argument("--warmup", type=int, default=1, help="untimed train steps after the first")
    p.add_argument("--peak_n", type=int, default=2048, help="the peak matmul is n x n x n float32")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time by wall clock, or by this process's CPU time (all threads; steadier on a machine other jobs load)",
    )
    p.add_argument(
        "--plain", action=argparse.BooleanOptionalAction, default=True, help="also time XLA's plain convolution"
    )
    args = p.parse_args(argv)
    args.dtype, args.device = "float32", "cpu"  # what bench_train_step's builders and environment() read
    args.clock = time.perf_counter if args.clock == "wall" else time.process_time
    return args


# ---------------------------------------------------------------------------------------------- shape capture


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """One 2-D NHWC/HWIO convolution of the step, as the model's jaxpr holds it."""

    lhs: tuple[int, ...]  # N, H, W, Cin
    rhs: tuple[int, ...]  # kh, kw, Cin, Cout
    out: tuple[int, ...]  # N, Ho, Wo, Cout
    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    input_grad: bool  # the step needs the gradient wrt the input (the input depends on the parameters)

    def label(self) -> str:
        n, h, w, cin = self.lhs
        kh, kw, _, cout = self.rhs
        pad = ",".join(f"{a}" if a == b else f"{a}/{b}" for a, b in self.padding)
        return f"{n}x{h}x{w}x{cin} -> {cout}, {kh}x{kw}/{self.strides[0]} pad {pad}"


@dataclasses.dataclass(frozen=True)
class PoolShape:
    """One NHWC max-pool of the step (`reduce_window_max` in the jaxpr)."""

    lhs: tuple[int, ...]
    window: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]

    def label(self) -> str:
        pad = ",".join(f"{a}" if a == b else f"{a}/{b}" for a, b in self.padding)
        return f"max-pool {'x'.join(map(str, self.lhs))}, {self.window[0]}x{self.window[1]}/{self.strides[0]} pad {pad}"


def conv_shapes(fun, args, tainted) -> tuple[list[ConvShape], list[PoolShape]]:
    """Every `conv_general_dilated` and max-pool traced by `fun(*args)` in program order. `tainted[i]`: whether
    argument i holds parameters; a convolution's input gradient is needed iff its input depends on a tainted
    argument (followed through nested jaxprs: positionally where the arities match, else conservatively)."""
    import jax
    from jax import lax
    from jax.extend import core

    closed = jax.make_jaxpr(fun)(*args)
    flat = [t for arg, t in zip(args, tainted) for _ in jax.tree_util.tree_leaves(arg)]
    found, pools = [], []

    def walk(jaxpr, tainted_in):
        dirty = {v for v, t in zip(jaxpr.invars, tainted_in) if t}
        for eqn in jaxpr.eqns:
            in_t = [not isinstance(v, core.Literal) and v in dirty for v in eqn.invars]
            if eqn.primitive.name == "conv_general_dilated":
                lhs, rhs = (v.aval.shape for v in eqn.invars)
                p = eqn.params
                simple = (
                    p["dimension_numbers"] == lax.conv_dimension_numbers(lhs, rhs, _NHWC)
                    and all(d == 1 for d in tuple(p["lhs_dilation"]) + tuple(p["rhs_dilation"]))
                    and p["feature_group_count"] == 1
                    and p["batch_group_count"] == 1
                )
                if not simple:
                    raise ValueError(f"only plain NHWC/HWIO convolutions are benchmarked, got {p}")
                found.append(
                    ConvShape(
                        tuple(lhs),
                        tuple(rhs),
                        tuple(eqn.outvars[0].aval.shape),
                        tuple(p["window_strides"]),
                        tuple(tuple(pad) for pad in p["padding"]),
                        in_t[0],
                    )
                )
            if eqn.primitive.name == "reduce_window_max":
                p = eqn.params
                if p["window_dimensions"][::3] != (1, 1) or p["window_strides"][::3] != (1, 1):
                    raise ValueError(f"only spatial NHWC max-pools are benchmarked, got {p}")
                pools.append(
                    PoolShape(
                        tuple(eqn.invars[0].aval.shape),
                        tuple(p["window_dimensions"][1:3]),
                        tuple(p["window_strides"][1:3]),
                        tuple(tuple(pad) for pad in p["padding"][1:3]),
                    )
                )
            for sub in core.jaxprs_in_params(eqn.params):
                walk(sub, in_t if len(sub.invars) == len(in_t) else [any(in_t)] * len(sub.invars))
            if any(in_t):
                dirty.update(eqn.outvars)

    walk(closed.jaxpr, flat)
    return found, pools


def model_layers(name: str, size: int, batch: int) -> tuple[collections.Counter, collections.Counter, dict]:
    """({ConvShape: multiplicity}, {PoolShape: multiplicity}, the parameters' shapes) of the model's train-mode
    forward pass, traced with XLA's plain convolution."""
    import jax
    import jax.numpy as jnp

    from transfusion_jax.models import cpu_kernels
    from transfusion_jax.train import state as state_lib

    model = state_lib.build_model(bench_config(name, "float32", 1), 2)
    x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)

    def forward(params, batch_stats, x):
        return model.apply({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])

    enabled, cpu_kernels.ENABLED = cpu_kernels.ENABLED, False  # the plain primitive shows in the jaxpr
    try:
        args = (variables["params"], variables.get("batch_stats", {}), x)
        convs, pools = conv_shapes(forward, args, (True, False, False))
    finally:
        cpu_kernels.ENABLED = enabled
    return collections.Counter(convs), collections.Counter(pools), variables["params"]


# ------------------------------------------------------------------------------------------------- the sides


def _arrays(shape: ConvShape, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape.lhs, dtype=np.float32)
    fan_in = np.prod(shape.rhs[:3])
    w = (rng.standard_normal(shape.rhs, dtype=np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    g = rng.standard_normal(shape.out, dtype=np.float32)
    return x, w, g


def _instructions(compiled) -> list[str]:
    """A compiled program's HLO instructions without metadata and parameters: equal lists = the same program
    (a custom_vjp keeps an unused input as a parameter)."""
    lines = compiled.as_text().splitlines()
    return [
        re.sub(r", metadata=\{[^}]*\}", "", line)
        for line in lines
        if line.startswith("  ") and "parameter(" not in line
    ]


def xla_side(shape: ConvShape, arrays, plain: bool):
    """({op: a call returning its result}, {op: XLA's FLOPs}, {op: HLO instructions}); ours traces through
    models/cpu_kernels.py."""
    import jax
    from jax import lax

    from transfusion_jax.models import cpu_kernels

    conv_fn = lax.conv_general_dilated if plain else cpu_kernels.conv_general_dilated

    def conv(x, w):
        return conv_fn(x, w, shape.strides, shape.padding, dimension_numbers=_NHWC)

    programs = {
        "forward": (lambda x, w, g: conv(x, w)),
        "input grad": (lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
        "kernel grad": (lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
    }
    x, w, g = (jax.device_put(a) for a in arrays)
    enabled, cpu_kernels.ENABLED = cpu_kernels.ENABLED, True  # read while tracing: the real step's path
    try:
        compiled = {op: jax.jit(f).lower(x, w, g).compile() for op, f in programs.items()}
    finally:
        cpu_kernels.ENABLED = enabled
    calls = {op: (lambda c=c: c(x, w, g).block_until_ready()) for op, c in compiled.items()}
    return (
        calls,
        {op: program_flops(c) for op, c in compiled.items()},
        {op: _instructions(c) for op, c in compiled.items()},
    )


def torch_side(shape: ConvShape, arrays, torch):
    """{op: a call returning its result (NHWC numpy for checking via .result)}: channels_last F.conv2d."""
    (top, bottom), (left, right) = shape.padding
    if top != bottom or left != right:
        raise ValueError(f"asymmetric padding {shape.padding} has no F.conv2d equivalent without an extra pad")
    channels_last = torch.channels_last

    def to_torch(a, perm):
        return torch.from_numpy(a).permute(*perm).contiguous(memory_format=channels_last)

    x_np, w_np, g_np = arrays
    x = to_torch(x_np, (0, 3, 1, 2)).requires_grad_()
    w = to_torch(w_np, (3, 2, 0, 1)).requires_grad_()
    g = to_torch(g_np, (0, 3, 1, 2))

    def forward():
        return torch.nn.functional.conv2d(x, w, stride=shape.strides, padding=(top, left))

    y = forward()
    return {
        "forward": forward,
        "input grad": lambda: torch.autograd.grad(y, x, g, retain_graph=True)[0],
        "kernel grad": lambda: torch.autograd.grad(y, w, g, retain_graph=True)[0],
    }


def _to_nhwc(result, op):
    """A torch result as our layout: NCHW -> NHWC, OIHW -> HWIO."""
    a = result.detach().numpy()
    return a.transpose(2, 3, 1, 0) if op == "kernel grad" else a.transpose(0, 2, 3, 1)


def time_shape(shape: ConvShape, args, torch) -> tuple[dict, dict, set, float]:
    """({op: {side: median s}}, {op: XLA FLOPs}, the ops where ours is XLA's plain program (timed once), largest
    relative difference to PyTorch over ops and sides)."""
    arrays = _arrays(shape)
    ours, flops, ours_hlo = xla_side(shape, arrays, plain=False)
    sides, same = {"ours": ours}, set()
    if args.plain:
        sides["XLA plain"], flops, plain_hlo = xla_side(shape, arrays, plain=True)  # the maths' FLOPs (no halos)
        same = {op for op in OPS if ours_hlo[op] == plain_hlo[op]}
    sides["PyTorch"] = torch_side(shape, arrays, torch)
    ops = [op for op in OPS if op != "input grad" or shape.input_grad]
    worst = 0.0
    medians = {}
    for op in ops:
        reference = _to_nhwc(sides["PyTorch"][op](), op)
        for side in sides:
            if side != "PyTorch":
                got = np.asarray(sides[side][op]())
                worst = max(worst, float(np.max(np.abs(got - reference)) / np.max(np.abs(reference))))
        timed = [side for side in sides if not (side == "XLA plain" and op in same)]
        times = {side: [] for side in timed}
        for _ in range(args.reps):
            for side in timed:
                start = args.clock()
                sides[side][op]()
                times[side].append(args.clock() - start)
        medians[op] = {side: float(np.median(t)) for side, t in times.items()}
        if op in same:
            medians[op]["XLA plain"] = medians[op]["ours"]
    return medians, {op: flops[op] for op in ops}, same & set(ops), worst


# --------------------------------------------------------------------------------- the rest of the step


def _interleaved_medians(calls: dict, reps: int, clock) -> dict:
    """{side: median seconds} of zero-argument calls taking turns (each called once first, untimed)."""
    for call in calls.values():
        call()
    times = {side: [] for side in calls}
    for _ in range(reps):
        for side, call in calls.items():
            start = clock()
            call()
            times[side].append(clock() - start)
    return {side: float(np.median(t)) for side, t in times.items()}


def bn_relu_calls(shape: tuple[int, ...], torch) -> dict:
    """Forward + backward of BatchNorm (train mode, as ConvBN's flax nn.BatchNorm) and ReLU on a conv's output,
    gradients for the input, scale and bias: {side: call}."""
    import flax.linen as nn
    import jax

    x_np = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    g_np = np.random.default_rng(2).standard_normal(shape, dtype=np.float32)
    x, g = jax.device_put(x_np), jax.device_put(g_np)
    bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    variables = bn.init(jax.random.key(0), x)

    def layer(params, x):
        y, updates = bn.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"])
        return nn.relu(y), updates

    def forward_backward(params, x, g):
        y, vjp, updates = jax.vjp(layer, params, x, has_aux=True)
        return y, updates, vjp(g)

    ours = jax.jit(forward_backward).lower(variables["params"], x, g).compile()
    tx = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last).requires_grad_()
    tg = torch.from_numpy(g_np).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    c = shape[-1]
    weight, bias = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    mean, var = torch.zeros(c), torch.ones(c)

    def theirs():
        y = torch.relu(torch.nn.functional.batch_norm(tx, mean, var, weight, bias, True, 0.1, 1e-5))
        return torch.autograd.grad(y, (tx, weight, bias), tg)

    return {"ours": lambda: jax.block_until_ready(ours(variables["params"], x, g)), "PyTorch": theirs}


def max_pool_calls(pool: PoolShape, torch) -> dict:
    """Forward + input gradient of a max-pool as the models run it (`cpu_kernels.max_pool`: on a CPU, the stored
    argmax) vs F.max_pool2d: {side: call}."""
    import jax

    from transfusion_jax.models import cpu_kernels

    (top, bottom), (left, right) = pool.padding
    if top != bottom or left != right:
        raise ValueError(f"asymmetric pool padding {pool.padding} has no F.max_pool2d equivalent")
    x_np = np.random.default_rng(3).standard_normal(pool.lhs, dtype=np.float32)

    def layer(x):
        return cpu_kernels.max_pool(x, pool.window, pool.strides, pool.padding)

    x = jax.device_put(x_np)
    out_shape = jax.eval_shape(layer, x).shape
    g_np = np.random.default_rng(4).standard_normal(out_shape, dtype=np.float32)
    g = jax.device_put(g_np)

    def forward_backward(x, g):
        y, vjp = jax.vjp(layer, x)
        return y, vjp(g)

    ours = jax.jit(forward_backward).lower(x, g).compile()
    tx = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last).requires_grad_()
    tg = torch.from_numpy(g_np).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    def theirs():
        y = torch.nn.functional.max_pool2d(tx, pool.window, pool.strides, (top, left))
        return torch.autograd.grad(y, tx, tg)

    return {"ours": lambda: jax.block_until_ready(ours(x, g)), "PyTorch": theirs}


def adam_calls(params, torch) -> dict:
    """One Adam update (lr 1e-3, optax as the step; torch.optim.Adam as bench_train_step) of the model's parameter
    shapes, state donated as in the step: {side: call}."""
    import jax
    import jax.numpy as jnp
    import optax

    shapes = [p.shape for p in jax.tree_util.tree_leaves(params)]
    rng = np.random.default_rng(5)
    grads_np = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    tx = optax.adam(1e-3)
    holder = {"params": [jnp.zeros(s) for s in shapes], "grads": [jnp.asarray(g) for g in grads_np]}
    holder["opt"] = tx.init(holder["params"])

    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    ours = jax.jit(update, donate_argnums=(0, 1)).lower(holder["params"], holder["opt"], holder["grads"]).compile()

    def call_ours():
        holder["params"], holder["opt"] = ours(holder["params"], holder["opt"], holder["grads"])
        jax.block_until_ready(holder["params"])

    tparams = [torch.zeros(s, requires_grad=True) for s in shapes]
    for p, g in zip(tparams, grads_np):
        p.grad = torch.from_numpy(g)
    opt = torch.optim.Adam(tparams, lr=1e-3)
    return {"ours": call_ours, "PyTorch": opt.step}


def time_rest(shapes, pools, params, args, torch) -> dict:
    """Prints the non-convolution layers of the step one by one (forward + backward), ours vs PyTorch, and returns
    their multiplicity-weighted total {side: seconds}."""
    import jax

    bn_shapes = collections.Counter()
    for shape, count in shapes.items():
        bn_shapes[shape.out] += count
    pieces = [
        (f"BN + ReLU {'x'.join(map(str, s))}", n, lambda s=s: bn_relu_calls(s, torch)) for s, n in bn_shapes.items()
    ]
    pieces += [(pool.label(), n, lambda p=pool: max_pool_calls(p, torch)) for pool, n in pools.items()]
    n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
    pieces.append((f"Adam update, {n_params / 1e6:.1f} M parameters", 1, lambda: adam_calls(params, torch)))
    print("\n| piece (forward + backward) | count | ours ms | PyTorch ms | PyTorch / ours |")
    print("|---|---|---|---|---|")
    total = {"ours": 0.0, "PyTorch": 0.0}
    for label, count, build in pieces:
        medians = _interleaved_medians(build(), args.reps, args.clock)
        for side in total:
            total[side] += count * medians[side]
        ms = " | ".join(f"{1000 * medians[side]:.2f}" for side in total)
        print(f"| {label} | {count} | {ms} | {medians['PyTorch'] / medians['ours']:.2f} |", flush=True)
    ms = " | ".join(f"{1000 * total[side]:.0f}" for side in total)
    print(f"| **all of these** | | {ms} | {total['PyTorch'] / total['ours']:.2f} |")
    return total


# --------------------------------------------------------------------------------------------------- report


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def bench_case(name, size, args, torch) -> None:
    shapes, pools, params = model_layers(name, size, args.batch)
    print(f"\n## {name} @ {size}, batch {args.batch}: {sum(shapes.values())} convolutions, {len(shapes)} distinct")

    # The whole step first, both sides taking turns (bench_train_step's builders).
    load_step = _load()
    step, _, _, compiled = jax_stepper(name, size, args.batch, args, cpu_kernels=True)
    step_flops = program_flops(compiled)
    torch_step, _ = torch_stepper(name, size, args.batch, args)
    for _ in range(args.warmup):
        step(), torch_step()
    step_s = _interleaved_medians({"ours": step, "PyTorch": torch_step}, args.steps, args.clock)
    del step, torch_step, compiled
    print(
        f"whole step: ours {1000 * step_s['ours']:.0f} ms, PyTorch {1000 * step_s['PyTorch']:.0f} ms, "
        f"PyTorch / ours {step_s['PyTorch'] / step_s['ours']:.2f} (median of {args.steps}, load {load_step} at "
        f"start, {_load()} at end); {step_flops / 1e9:.1f} GFLOP per step (XLA cost analysis)",
        flush=True,
    )

    load_conv = _load()
    sides = [s for s in SIDES if s != "XLA plain" or args.plain]
    header = ["shape (N x H x W x Cin -> Cout, k/stride)", "count", "op"] + [f"{s} ms" for s in sides]
    header += ["PyTorch / ours"] + (["PyTorch / XLA plain"] if args.plain else [])
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    totals = {op: dict.fromkeys(sides, 0.0) for op in OPS}
    conv_flops, worst = 0.0, 0.0
    for shape, count in shapes.items():
        medians, flops, same, diff = time_shape(shape, args, torch)
        worst = max(worst, diff)
        for op, by_side in medians.items():
            conv_flops += count * flops[op]
            for side, s in by_side.items():
                totals[op][side] += count * s
            cells = [shape.label(), str(count), op]
            cells += ["= ours" if s == "XLA plain" and op in same else f"{1000 * by_side[s]:.2f}" for s in sides]
            cells += [f"{by_side['PyTorch'] / by_side['ours']:.2f}"]
            cells += [f"{by_side['PyTorch'] / by_side['XLA plain']:.2f}"] if args.plain else []
            print("| " + " | ".join(cells) + " |", flush=True)
    if worst > 1e-3:
        raise SystemExit(f"the sides disagree: largest relative difference to PyTorch {worst:.1e}")

    print(
        "\n'= ours': the same XLA program as ours (compiled HLO compared), timed once."
        f"\nMultiplicity-weighted totals per step (ms; load {load_conv} at the first convolution, {_load()} at the "
        f"last; the step at {load_step}):\n"
    )
    print("| op | " + " | ".join(sides) + " | PyTorch / ours |")
    print("|---|" + "---|" * (len(sides) + 1))
    conv_s = dict.fromkeys(sides, 0.0)
    for op in OPS:
        for side in sides:
            conv_s[side] += totals[op][side]
        cells = [f"{1000 * totals[op][s]:.0f}" for s in sides]
        print(f"| {op} | " + " | ".join(cells) + f" | {totals[op]['PyTorch'] / totals[op]['ours']:.2f} |")
    cells = [f"{1000 * conv_s[s]:.0f}" for s in sides]
    print("| **all convolutions** | " + " | ".join(cells) + f" | {conv_s['PyTorch'] / conv_s['ours']:.2f} |")

    load_rest = _load()
    pieces = time_rest(shapes, pools, params, args, torch)
    rest = {side: step_s[side] - conv_s[side] for side in ("ours", "PyTorch")}
    if_convs = step_s["ours"] - conv_s["ours"] + conv_s["PyTorch"]
    if_rest = conv_s["ours"] + rest["PyTorch"]
    print(
        f"\nwhole step: ours {1000 * step_s['ours']:.0f} ms, PyTorch {1000 * step_s['PyTorch']:.0f} ms, "
        f"PyTorch / ours {step_s['PyTorch'] / step_s['ours']:.2f}\n"
        f"convolutions' share of the step: ours {conv_s['ours'] / step_s['ours']:.0%}, "
        f"PyTorch {conv_s['PyTorch'] / step_s['PyTorch']:.0%}\n"
        f"the rest of the step (BN, ReLU, pools, loss, Adam; step - convolutions): ours {1000 * rest['ours']:.0f} "
        f"ms, PyTorch {1000 * rest['PyTorch']:.0f} ms; of it timed piece by piece above (BN + ReLU, max-pools, "
        f"Adam; load {load_rest} at the first): ours {1000 * pieces['ours']:.0f} ms, PyTorch "
        f"{1000 * pieces['PyTorch']:.0f} ms\n"
        f"step ratio if our convolutions cost PyTorch's (rest unchanged): {step_s['PyTorch'] / if_convs:.2f}; "
        f"if the rest cost PyTorch's (convolutions unchanged): {step_s['PyTorch'] / if_rest:.2f}\n"
        f"FLOPs per step (XLA cost analysis): {step_flops / 1e9:.1f} G, of which convolutions "
        f"{conv_flops / 1e9:.1f} G ({conv_flops / step_flops:.0%})\n"
        f"achieved GFLOP/s: whole step ours {step_flops / step_s['ours'] / 1e9:.1f}, "
        f"PyTorch {step_flops / step_s['PyTorch'] / 1e9:.1f}; convolutions alone ours "
        f"{conv_flops / conv_s['ours'] / 1e9:.1f}, PyTorch {conv_flops / conv_s['PyTorch'] / 1e9:.1f}\n"
        f"largest relative difference of any side's convolution results to PyTorch's: {worst:.1e}",
        flush=True,
    )


def main(argv=None):
    args = parse_args(argv)
    import torch

    print(environment(args, torch))
    clock = "wall time" if args.clock is time.perf_counter else "this process's CPU time (all threads)"
    print(f"convolutions: median of {args.reps} interleaved repetitions per side; every time is {clock}")
    peak = matmul_peak_gflops(args.peak_n, torch=torch, clock=args.clock)
    print(
        f"float32 matmul peak ({args.peak_n}^3, load {_load()}): "
        + ", ".join(f"{side} {g:.1f} GFLOP/s" for side, g in peak.items())
    )
    for name in [m for m in args.models.split(",") if m]:
        bench_case(name, args.size or default_size(name), args, torch)


if __name__ == "__main__":
    main()
