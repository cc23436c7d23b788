"""The two ends of a roofline on this machine: a program's FLOPs and the float32 rate the machine can reach.

Shared by bench_conv.py (the train step's achieved GFLOP/s beside the peak) and bench_multirun.py (the most any
stacking of runs could gain: peak / the rate runs already reach one after another). FLOPs come from XLA's own cost
analysis of the compiled program (what it will execute, padding excluded); the reachable peak is a large float32
matmul, the most arithmetic-dense kernel both libraries have, timed in XLA and in PyTorch taking turns.
"""

import time

import numpy as np


def program_flops(compiled) -> float:
    """FLOPs of one call of a compiled JAX program, from XLA's cost analysis (nan where the backend gives none)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    if not analysis:
        return float("nan")
    return float(analysis.get("flops", float("nan")))


def matmul_peak_gflops(n: int = 2048, reps: int = 10, torch=None, clock=time.perf_counter) -> dict[str, float]:
    """Median GFLOP/s of an n x n x n float32 matmul in XLA (jitted `jnp.dot`) and, given `torch`, in `torch.mm`
    (its default threads), the two taking turns so a load change hits both alike. `clock`: wall time, or
    `time.process_time` for GFLOP per CPU-second of this process."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    sides = {}
    xa, xb = jnp.asarray(a), jnp.asarray(b)
    dot = jax.jit(jnp.dot)
    sides["XLA"] = lambda: dot(xa, xb).block_until_ready()
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        sides["PyTorch"] = lambda: torch.mm(ta, tb)
    times = {name: [] for name in sides}
    for fn in sides.values():
        fn()  # compile / warm up
    for _ in range(reps):
        for name, fn in sides.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: 2 * n**3 / float(np.median(t)) / 1e9 for name, t in times.items()}
