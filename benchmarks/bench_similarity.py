"""Benchmark: streaming jitted similarity moments (ours) vs plain NumPy float64, in the same run.

    python benchmarks/bench_similarity.py            # default: about 2-3 minutes on the 2-core dev machine
    python benchmarks/bench_similarity.py --quick    # small shapes, a smoke test
    python benchmarks/bench_similarity.py --single-thread  # both sides on one thread (busy shared machine)

Cases (x and y share a low-rank latent; y is rectified; both carry a mean offset):
  one-shot  100k x 512 : ours = one jitted accumulate over the whole arrays; NumPy = float64 centred covariances.
  streamed  3M x 256   : batches generated on the fly (never all in memory); ours = jitted accumulate per batch;
                         NumPy = the same shifted-sum formula per batch in float64. A NumPy one-shot on this layer
                         would need the full 3M x 256 pair (6.1 GB float32, 12.3 GB float64): not run here.
Each implementation runs in its own subprocess so its peak RSS (includes the Python + JAX runtime) is its own.
Seconds: moments = accumulating the data (data generation and compilation excluded; compile s is reported
separately), finish = CCA + SVCCA(0.99) + PWCCA + CKA
from the moments on the host (the same float64 code for both). Scores of both are printed to show they agree.
"""

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LATENT = 32
POOL = 65_536  # rows of pre-drawn noise, reused at random offsets: drawing fresh noise cost as much as the maths


@functools.cache
def _pool(seed: int, dx: int, dy: int):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((LATENT, dx), dtype=np.float32),
        rng.standard_normal((LATENT, dy), dtype=np.float32),
        rng.standard_normal((POOL, dx), dtype=np.float32),
        rng.standard_normal((POOL, dy), dtype=np.float32),
    )


def batch(seed: int, index: int, rows: int, dx: int, dy: int):
    """Rows `index * rows ...` of the layer pair: a shared latent z (fresh per batch) plus pooled noise."""
    a, b, noise_x, noise_y = _pool(seed, dx, dy)
    rng = np.random.default_rng((seed, index))
    z = rng.standard_normal((rows, LATENT), dtype=np.float32)
    take = (rng.integers(POOL) + np.arange(rows)) % POOL
    x = z @ a + noise_x[take] + 3.0
    y = np.maximum(z @ b + noise_y[take], 0.0) + 1.0
    return x, y


def _finish(stats):
    from transfusion_jax.analysis import similarity

    start = time.perf_counter()
    scores = {
        "cca": similarity.cca(stats).score,
        "svcca": similarity.svcca(stats, keep=0.99).score,
        "pwcca": similarity.pwcca(stats).score,
        "cka": similarity.cka(stats).score,
    }
    return scores, time.perf_counter() - start


def _numpy_stats(n, mean_x, mean_y, cxx, cyy, cxy):
    from transfusion_jax.analysis import moments

    nan = float("nan")  # debiased-CKA terms: not part of this comparison
    return moments.Stats(n=n, mean_x=mean_x, mean_y=mean_y, cxx=cxx, cyy=cyy, cxy=cxy, p_xx=nan, p_yy=nan, p_xy=nan)


def run_case(impl: str, case: str, rows: int, dx: int, dy: int, batch_rows: int) -> dict:
    """Runs in a child process; returns timings, peak RSS and scores."""
    seed = 0
    seconds = compile_seconds = 0.0
    if impl == "ours":
        import jax

        from transfusion_jax.analysis import moments

        acc = moments.init(dx, dy)
        start = time.perf_counter()  # compile for the batch shapes first, so 'moments s' is steady-state
        shapes = {rows} if case == "one-shot" else {batch_rows, rows % batch_rows} - {0}
        for r in shapes:
            moments.accumulate(acc, np.zeros((r, dx), np.float32), np.zeros((r, dy), np.float32)).n.block_until_ready()
        compile_seconds = time.perf_counter() - start
        if case == "one-shot":
            x, y = batch(seed, 0, rows, dx, dy)
            start = time.perf_counter()
            acc = moments.accumulate(acc, x, y)
            acc.n.block_until_ready()
            seconds = time.perf_counter() - start
        else:
            for i, start_row in enumerate(range(0, rows, batch_rows)):
                x, y = batch(seed, i, min(batch_rows, rows - start_row), dx, dy)
                start = time.perf_counter()
                acc = moments.accumulate(acc, x, y)
                acc.n.block_until_ready()
                seconds += time.perf_counter() - start
        stats = moments.finalize(acc)
        device = str(jax.devices()[0].platform)
    else:
        device = "cpu"
        warm = np.ones((min(rows, batch_rows), dx))  # first BLAS calls pay a one-off start-up: keep it out
        warm.T @ warm
        if case == "one-shot":
            x, y = batch(seed, 0, rows, dx, dy)
            start = time.perf_counter()
            x, y = x.astype(np.float64), y.astype(np.float64)
            mx, my = x.mean(0), y.mean(0)
            x -= mx
            y -= my
            cxx, cyy, cxy = x.T @ x / rows, y.T @ y / rows, x.T @ y / rows
            seconds = time.perf_counter() - start
            stats = _numpy_stats(rows, mx, my, cxx, cyy, cxy)
        else:
            sx = sy = sxx = syy = sxy = shift_x = shift_y = None
            for i, start_row in enumerate(range(0, rows, batch_rows)):
                x, y = batch(seed, i, min(batch_rows, rows - start_row), dx, dy)
                start = time.perf_counter()
                x, y = x.astype(np.float64), y.astype(np.float64)
                if shift_x is None:
                    shift_x, shift_y = x.mean(0), y.mean(0)
                    sx, sy = np.zeros(dx), np.zeros(dy)
                    sxx, syy, sxy = np.zeros((dx, dx)), np.zeros((dy, dy)), np.zeros((dx, dy))
                u, v = x - shift_x, y - shift_y
                sx += u.sum(0)
                sy += v.sum(0)
                sxx += u.T @ u
                syy += v.T @ v
                sxy += u.T @ v
                seconds += time.perf_counter() - start
            mu, nu = sx / rows, sy / rows
            stats = _numpy_stats(
                rows,
                shift_x + mu,
                shift_y + nu,
                sxx / rows - np.outer(mu, mu),
                syy / rows - np.outer(nu, nu),
                sxy / rows - np.outer(mu, nu),
            )
    scores, finish_seconds = _finish(stats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "impl": impl,
        "case": case,
        "device": device,
        "moments_s": seconds,
        "compile_s": compile_seconds,
        "finish_s": finish_seconds,
        "peak_rss_mb": peak_mb,
        **scores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    parser.add_argument(
        "--single-thread",
        action="store_true",
        help="pin NumPy (OpenBLAS) and XLA to one thread each: stable figures on a busy shared machine",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(**json.loads(args.child))))
        return
    if args.quick:
        cases = [("one-shot", 20_000, 64, 64, 20_000), ("streamed", 200_000, 32, 32, 16_384)]
    else:
        cases = [("one-shot", 100_000, 512, 512, 100_000), ("streamed", 3_000_000, 256, 256, 65_536)]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    if args.single_thread:
        env.update(
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        )
    print(
        f"threads: {'1 (pinned)' if args.single_thread else 'library defaults'}; "
        f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    rows_out = []
    for case, rows, dx, dy, batch_rows in cases:
        for impl in ("ours", "numpy64"):
            spec = json.dumps({"impl": impl, "case": case, "rows": rows, "dx": dx, "dy": dy, "batch_rows": batch_rows})
            proc = subprocess.run(
                [sys.executable, __file__, "--child", spec], cwd=root, capture_output=True, text=True, env=env
            )
            if proc.returncode:
                sys.exit(f"{impl} {case} failed:\n{proc.stderr}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            rows_out.append({"shape": f"{rows:,} x {dx}", **result})
    header = (
        f"{'case':9} {'shape':>15} {'impl':8} {'device':6} {'moments s':>9} {'compile s':>9} {'finish s':>8} "
        f"{'peak RSS MB':>11} "
        f"{'cca':>9} {'svcca':>9} {'pwcca':>9} {'cka':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows_out:
        print(
            f"{r['case']:9} {r['shape']:>15} {r['impl']:8} {r['device']:6} {r['moments_s']:9.2f} "
            f"{r['compile_s']:9.2f} {r['finish_s']:8.2f} {r['peak_rss_mb']:11.0f} {r['cca']:9.6f} {r['svcca']:9.6f} "
            f"{r['pwcca']:9.6f} {r['cka']:9.6f}"
        )


if __name__ == "__main__":
    main()
