"""Max-pool forward + gradient on CPU: models/cpu_kernels.py's kernel (argmax recorded by the forward pass) vs
XLA's (`reduce_window` + `select_and_scatter`), alone and inside the whole train step, in one run.

Part 1: every max-pool of the model's train-mode forward pass (shapes from bench_conv's jaxpr walk), forward +
input gradient, jitted, the two sides taking turns; per shape ms and the multiplicity-weighted sum. Part 2: the
train step of bench_train_step with the CPU kernels on, once with the max-pool kernel and once with XLA's max-pool
(everything else equal), taking turns step by step; images/s, ratio, and XLA's peak memory of each step.

  python benchmarks/bench_max_pool.py       # cbr_small@587, resnet50@224 batch 8; the study's two CBRs @ 32, batch 32
  python benchmarks/bench_max_pool.py --cases=cbr_small:32:32:8-16-32-32 --steps=15
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_conv, bench_train_step
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--cases",
        default="cbr_small:587:8,resnet50:224:8,cbr_small:32:32:8-16-32-32,cbr_small:32:32:16-32-64-128",
        help="model:size:batch[:widths],...; widths a-b-c-d override the model's (the study's CBRs at 32 px)",
    )
    p.add_argument("--reps", type=int, default=5, help="timed calls per side per pool shape, median reported")
    p.add_argument("--steps", type=int, default=5, help="timed train steps per side, median reported")
    p.add_argument("--skip_step", action="store_true", help="max-pools alone, no train step")
    args = p.parse_args(argv)
    args.dtype, args.warmup = "float32", 1  # what bench_train_step's builders read
    return args


def pool_calls(pool):
    """{side: forward + input gradient of one max-pool shape}, results checked equal first."""
    import jax

    from transfusion_jax.models import cpu_kernels

    rng = np.random.default_rng(0)
    x = jax.device_put(rng.standard_normal(pool.lhs, dtype=np.float32))
    sides = {
        "ours": lambda x: cpu_kernels.max_pool(x, pool.window, pool.strides, pool.padding),
        "XLA": lambda x: cpu_kernels._Pool(pool.window, pool.strides, pool.padding).standard(x),
    }
    g = jax.device_put(rng.standard_normal(jax.eval_shape(sides["XLA"], x).shape, dtype=np.float32))
    compiled, results = {}, {}
    for side, layer in sides.items():

        def forward_backward(x, g, layer=layer):
            y, vjp = jax.vjp(layer, x)
            return y, vjp(g)[0]

        compiled[side] = jax.jit(forward_backward).lower(x, g).compile()
        results[side] = compiled[side](x, g)
    for a, b in zip(results["ours"], results["XLA"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)  # sums reordered
    return {side: (lambda c=c: jax.block_until_ready(c(x, g))) for side, c in compiled.items()}


def alternate(calls: dict, reps: int) -> dict:
    """{side: median seconds}, the sides taking turns after one warm-up call each."""
    times = {side: [] for side in calls}
    for call in calls.values():
        call()
    for _ in range(reps):
        for side, call in calls.items():
            start = time.perf_counter()
            call()
            times[side].append(time.perf_counter() - start)
    return {side: float(np.median(t)) for side, t in times.items()}


def step_calls(name, size, batch, args):
    """{side: train step}, {side: XLA's peak bytes}: CPU kernels on, max-pool kernel on (ours) or XLA's."""
    import bench_train_step

    from transfusion_jax.models import cpu_kernels

    calls, peaks = {}, {}
    kernel = cpu_kernels._cpu_max_pool
    for side in ("ours", "XLA"):
        if side == "XLA":  # read when the step is traced, inside jax_stepper
            cpu_kernels._cpu_max_pool = lambda pool, x: pool.standard(x)
        try:
            calls[side], _, peaks[side], _ = bench_train_step.jax_stepper(name, size, batch, args, cpu_kernels=True)
        finally:
            cpu_kernels._cpu_max_pool = kernel
    return calls, peaks


def main(argv=None):
    args = parse_args(argv)
    import bench_conv
    import bench_train_step
    import jax

    print(f"jax {jax.__version__}: {jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} cores")
    plain_config = bench_train_step.bench_config
    for case in args.cases.split(","):
        name, size, batch, *widths = case.split(":")
        size, batch = int(size), int(batch)
        overrides = {"widths": tuple(int(w) for w in widths[0].split("-"))} if widths else {}

        def config(*a, overrides=overrides):
            c = plain_config(*a)
            c.model.overrides = overrides
            return c

        bench_conv.bench_config = bench_train_step.bench_config = config  # read by the model builders below
        _, pools, _ = bench_conv.model_layers(name, size, batch)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\n{name} {'-'.join(widths)} @ {size}, batch {batch} (load average {load})")
        total = {"ours": 0.0, "XLA": 0.0}
        for pool, n in pools.items():
            t = alternate(pool_calls(pool), args.reps)
            for side in total:
                total[side] += n * t[side]
            print(
                f"  {pool.label()} x{n}: ours {1e3 * t['ours']:.1f} ms, XLA {1e3 * t['XLA']:.1f} ms, "
                f"XLA / ours {t['XLA'] / t['ours']:.2f}"
            )
        print(
            f"  all max-pools, forward + gradient: ours {1e3 * total['ours']:.1f} ms, XLA {1e3 * total['XLA']:.1f} "
            f"ms, XLA / ours {total['XLA'] / total['ours']:.2f}"
        )
        if args.skip_step:
            continue
        calls, peaks = step_calls(name, size, batch, args)
        t = alternate(calls, args.steps)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"  train step: ours {batch / t['ours']:.2f} img/s, XLA's max-pool {batch / t['XLA']:.2f} img/s, "
            f"ours / XLA {t['XLA'] / t['ours']:.2f}; peak MiB ours {peaks['ours'] / 2**20:.0f}, "
            f"XLA {peaks['XLA'] / 2**20:.0f} (load average {load})"
        )


if __name__ == "__main__":
    main()
