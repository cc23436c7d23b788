"""Benchmark: our streaming CCA / SVCCA / PWCCA vs google/svcca's `cca_core` (and a NumPy float64 reference), in
one run, with where the time goes and the machine's own matmul roofline.

    python benchmarks/bench_similarity.py --svcca_dir DIR     # ~3-5 minutes on the 2-core dev machine
    python benchmarks/bench_similarity.py --quick             # small shapes, a smoke test
    python benchmarks/bench_similarity.py --single-thread     # every side on one thread (busy shared machine)

google/svcca is not a dependency: clone its repository from GitHub (`git clone https://github.com/google/svcca DIR`)
and pass that folder as --svcca_dir; its `cca_core.py` and `pwcca.py` are imported from there as they are. Without
it the cca_core rows are skipped (and say so) and ours is compared with the float64 NumPy reference only.

Cases (x and y share a low-rank latent; y is rectified; both carry a mean offset):
  one-shot 100k x 512: both layers in memory, as google/svcca needs them.
    ours:     `moments.from_arrays(x, y)`: the arrays to the device in ~16 MB pieces (transfer, also timed alone)
              and jitted streaming moments (moments), the sums to the host and their float64 combination
              (finalize), then each measure from the moments in float64 (finish).
    cca_core: `cca_core.get_cca_similarity(x.T, y.T, epsilon=0)` on the (neurons, datapoints) layout it takes
              (a transposed view: no copy); its `np.cov` alone is timed too. SVCCA as google/svcca's tutorial does
              it (an SVD of each centred layer, kept to 99 % of the variance, cast to float64 so its numbers are
              exact, then cca_core); PWCCA is `pwcca.compute_pwcca`, whose definition differs from ours (see
              `similarity.pwcca`): its score is printed, not compared.
    numpy64:  float64 centred covariances, then our float64 finish: the exact-moments reference for our numbers.
  streamed 3M x 256: batches of 65,536 rows generated on the fly (never all in memory); ours
              (`moments.accumulate` per batch) and numpy64 stream them. cca_core needs the whole layer pair plus a
              float64 copy (about 18 GB): run only when that fits --max_reference_gb.
Each implementation runs in its own subprocess, so its peak RSS (Python + runtime included) is its own. Seconds
exclude data generation and ours' compilation (reported as compile s). In-process timings are the median of
--repeats; CPU s (process CPU seconds of the CCA route) varies less than wall seconds on a loaded machine. The
roofline line: the FLOPs of the three matrix products the moments need, 2 n (dx^2 + dy^2 + dx dy), against XLA's
float32 2048^3 matmul rate measured in the same process just before and after the work (best of 5; the load on a
shared machine moves); cca_core's np.cov runs 2 n (dx + dy)^2 float64 FLOPs, against NumPy's float64 matmul rate.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from transfusion_jax import hostinfo

LATENT = 32
POOL = 65_536  # rows of pre-drawn noise, reused at random offsets: drawing fresh noise cost as much as the maths
_POOLS = {}


def _pool(seed: int, dx: int, dy: int):
    if (seed, dx, dy) not in _POOLS:
        rng = np.random.default_rng(seed)
        _POOLS[seed, dx, dy] = (
            rng.standard_normal((LATENT, dx), dtype=np.float32),
            rng.standard_normal((LATENT, dy), dtype=np.float32),
            rng.standard_normal((POOL, dx), dtype=np.float32),
            rng.standard_normal((POOL, dy), dtype=np.float32),
        )
    return _POOLS[seed, dx, dy]


def batch(seed: int, index: int, rows: int, dx: int, dy: int):
    """Rows `index * rows ...` of the layer pair: a shared latent z (fresh per batch) plus pooled noise."""
    a, b, noise_x, noise_y = _pool(seed, dx, dy)
    rng = np.random.default_rng((seed, index))
    z = rng.standard_normal((rows, LATENT), dtype=np.float32)
    take = (rng.integers(POOL) + np.arange(rows)) % POOL
    x = z @ a + noise_x[take] + 3.0
    y = np.maximum(z @ b + noise_y[take], 0.0) + 1.0
    return x, y


def _timed(fn, repeats: int = 1, best: bool = False):
    """(result, wall seconds, process CPU seconds) of `repeats` calls: their medians, or with `best` the least."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    pick = np.min if best else np.median
    return out, float(pick(walls)), float(pick(cpus))


def _batches(case: dict):
    rows, step = case["rows"], case["batch_rows"]
    for i, start in enumerate(range(0, rows, step)):
        yield batch(0, i, min(step, rows - start), case["dx"], case["dy"])


def _finish(stats, repeats: int) -> dict:
    """Each measure from the moments (float64, host), timed, with what it returns."""
    from transfusion_jax.analysis import similarity

    out = {}
    for name, fn in (
        ("cca", lambda: similarity.cca(stats)),
        ("svcca", lambda: similarity.svcca(stats, keep=0.99)),
        ("pwcca", lambda: similarity.pwcca(stats)),
    ):
        result, wall, cpu = _timed(fn, repeats)
        out[name] = {"s": wall, "cpu_s": cpu, "score": result.score, "coefficients": result.coefficients.tolist()}
    return out


def run_ours(case: dict, repeats: int) -> dict:
    """What a user calls: one-shot, `moments.from_arrays(x, y)` on arrays in memory; streamed, `moments.accumulate`
    per generated batch. Both send host rows to the device in ~16 MB pieces (`moments.default_batch_rows`); those
    transfers are timed alone too (device_put of the same pieces), and moments is the rest."""
    import jax

    from transfusion_jax.analysis import moments

    dx, dy, n = case["dx"], case["dy"], case["rows"]
    step = moments.default_batch_rows(dx, dy)
    batches = {n} if case["name"] == "one-shot" else {case["batch_rows"], n % case["batch_rows"]} - {0}
    sizes = {piece for b in batches for piece in ({b} if b <= step else {step, b % step})} - {0}
    start = time.perf_counter()
    for rows in sizes:  # compile for every piece shape first, so 'moments' is steady-state
        zeros = np.zeros((rows, dx), np.float32), np.zeros((rows, dy), np.float32)
        moments.accumulate(moments.init(dx, dy), *zeros).n.block_until_ready()
    compile_s = time.perf_counter() - start

    def transfers(x, y):
        for i in range(0, len(x), step):
            jax.block_until_ready((jax.device_put(x[i : i + step]), jax.device_put(y[i : i + step])))

    peak = xla_f32_peak()  # the roofline's top, measured next to the work (the load on a shared machine moves)
    if case["name"] == "one-shot":  # the same host arrays each repeat: time the work, not the data generation
        ((x, y),) = list(_batches(case))
        acc, total_s, cpu = _timed(lambda: jax.block_until_ready(moments.from_arrays(x, y)), repeats)
        transfer_s = _timed(lambda: transfers(x, y), repeats)[1]
    else:
        acc, total_s, cpu, transfer_s = moments.init(dx, dy), 0.0, 0.0, 0.0
        for x, y in _batches(case):
            acc, wall, cpu_s = _timed(lambda: jax.block_until_ready(moments.accumulate(acc, x, y)))  # noqa: B023
            total_s, cpu, transfer_s = total_s + wall, cpu + cpu_s, transfer_s + _timed(lambda: transfers(x, y))[1]  # noqa: B023
    peak = max(peak, xla_f32_peak())
    stats, finalize_s, _ = _timed(lambda: moments.finalize(acc), repeats)
    return {
        "device": jax.devices()[0].platform,
        "peak_gflops": peak,
        "compile_s": compile_s,
        "transfer_s": transfer_s,
        "moments_s": total_s - transfer_s,
        "finalize_s": finalize_s,
        "cpu_moments_s": cpu,
        "finish": _finish(stats, repeats),
    }


def run_numpy64(case: dict, repeats: int) -> dict:
    """Exact float64 moments (centred one-shot, or shifted sums per batch), then our float64 finish."""
    from transfusion_jax.analysis import moments

    dx, dy, n = case["dx"], case["dy"], case["rows"]
    nan = float("nan")  # debiased-CKA terms: not part of this comparison

    def one_shot(x, y):
        x, y = x.astype(np.float64), y.astype(np.float64)
        mx, my = x.mean(0), y.mean(0)
        x -= mx
        y -= my
        return moments.Stats(n, mx, my, x.T @ x / n, y.T @ y / n, x.T @ y / n, nan, nan, nan)

    if case["name"] == "one-shot":
        ((x, y),) = list(_batches(case))
        stats, moments_s, _ = _timed(lambda: one_shot(x, y), repeats)
    else:
        sums, moments_s = None, 0.0
        for x, y in _batches(case):
            start = time.perf_counter()
            x, y = x.astype(np.float64), y.astype(np.float64)
            if sums is None:
                shift_x, shift_y = x.mean(0), y.mean(0)
                sums = [np.zeros(dx), np.zeros(dy), np.zeros((dx, dx)), np.zeros((dy, dy)), np.zeros((dx, dy))]
            u, v = x - shift_x, y - shift_y
            for total, part in zip(sums, (u.sum(0), v.sum(0), u.T @ u, v.T @ v, u.T @ v)):
                total += part
            moments_s += time.perf_counter() - start
        sx, sy, sxx, syy, sxy = sums
        mu, nu = sx / n, sy / n
        cxx, cyy, cxy = sxx / n - np.outer(mu, mu), syy / n - np.outer(nu, nu), sxy / n - np.outer(mu, nu)
        stats = moments.Stats(n, shift_x + mu, shift_y + nu, cxx, cyy, cxy, nan, nan, nan)
    return {"device": "cpu", "moments_s": moments_s, "finish": _finish(stats, 1)}


def import_svcca(svcca_dir: str):
    """google/svcca's `cca_core` and `pwcca` imported from a clone (pwcca imports cca_core by its bare name)."""
    if not svcca_dir or not (Path(svcca_dir) / "cca_core.py").is_file():
        return None
    sys.path.insert(0, str(Path(svcca_dir).resolve()))
    import cca_core
    import pwcca

    return cca_core, pwcca


def run_cca_core(case: dict, repeats: int, svcca_dir: str) -> dict:
    cca_core, pwcca = import_svcca(svcca_dir)
    parts = list(_batches(case))  # the whole layer pair in memory: google/svcca cannot stream
    x, y = (np.concatenate(side) for side in zip(*parts))
    del parts
    a, b = x.T, y.T  # google/svcca takes (neurons, datapoints)
    peak = numpy_f64_peak()
    result, cca_s, cca_cpu = _timed(lambda: cca_core.get_cca_similarity(a, b, epsilon=0.0, verbose=False), repeats)
    coefficients = result["cca_coef1"]
    _, cov_s, _ = _timed(lambda: np.cov(a, b), repeats)

    def svcca():  # google/svcca's tutorial route, in float64, keeping 99 % of each layer's variance
        kept = []
        for acts in (a, b):
            centred = acts.astype(np.float64) - acts.mean(axis=1, keepdims=True, dtype=np.float64)
            _, s, vt = np.linalg.svd(centred, full_matrices=False)
            k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), 0.99 * (1 - 1e-12)) + 1)
            kept.append(s[:k, None] * vt[:k])
        return np.mean(cca_core.get_cca_similarity(*kept, epsilon=0.0, verbose=False)["cca_coef1"])

    svcca_score, svcca_s, _ = _timed(svcca, 1)
    (pwcca_score, _, _), pwcca_s, _ = _timed(lambda: pwcca.compute_pwcca(a, b, epsilon=0.0), 1)
    return {
        "device": "cpu",
        "peak_gflops": max(peak, numpy_f64_peak()),
        "cov_s": cov_s,
        "cpu_cca_s": cca_cpu,
        "finish": {
            "cca": {"s": cca_s, "score": float(np.mean(coefficients)), "coefficients": coefficients.tolist()},
            "svcca": {"s": svcca_s, "score": float(svcca_score)},
            "pwcca": {"s": pwcca_s, "score": float(pwcca_score)},
        },
    }


def xla_f32_peak() -> float:
    """GFLOP/s of XLA's float32 2048^3 matmul, best of 5: what the cores can do at this moment."""
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32))
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    return 2 * 2048**3 / _timed(lambda: dot(a, a).block_until_ready(), 5, best=True)[1] / 1e9


def numpy_f64_peak() -> float:
    """GFLOP/s of NumPy's (OpenBLAS) float64 2048^3 matmul, best of 5."""
    a = np.random.default_rng(0).standard_normal((2048, 2048))
    a @ a
    return 2 * 2048**3 / _timed(lambda: a @ a, 5, best=True)[1] / 1e9


def child(spec: dict) -> dict:
    impl = spec["impl"]
    if impl == "ours":
        out = run_ours(spec["case"], spec["repeats"])
    elif impl == "numpy64":
        out = run_numpy64(spec["case"], spec["repeats"])
    else:
        out = run_cca_core(spec["case"], spec["repeats"], spec["svcca_dir"])
    return {"impl": impl, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **out}


def reference_gb(case: dict) -> float:
    """cca_core's peak: both layers as float32 plus np.cov's float64 copy of them stacked."""
    return case["rows"] * (case["dx"] + case["dy"]) * (4 + 8) / 1e9


def _machine() -> str:
    return f"{hostinfo.cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, NumPy {np.__version__}"


def _row(case, r):
    f = r["finish"]
    if r["impl"] == "ours":
        moments_part = r["transfer_s"] + r["moments_s"] + r["finalize_s"]
        total = {m: moments_part + f[m]["s"] for m in f}
        parts = f"{r['transfer_s']:8.2f} {r['moments_s']:8.2f} {r['finalize_s']:8.3f} {f['cca']['s']:8.3f}"
        cpu = r["cpu_moments_s"] + f["cca"]["cpu_s"]
    elif r["impl"] == "numpy64":
        total = {m: r["moments_s"] + f[m]["s"] for m in f}
        parts = f"{'':8} {r['moments_s']:8.2f} {'':8} {f['cca']['s']:8.3f}"
        cpu = float("nan")
    else:
        total = {m: f[m]["s"] for m in f}
        parts = f"{'':8} {r['cov_s']:8.2f} {'':8} {f['cca']['s'] - r['cov_s']:8.3f}"
        cpu = r["cpu_cca_s"]
    cpu = f"{cpu:9.2f}" if np.isfinite(cpu) else f"{'':9}"
    return (
        f"{case['name']:9} {case['rows']:>9,} x {case['dx']:<4} {r['impl']:8} {parts} "
        f"{total['cca']:9.2f} {cpu} {total['svcca']:9.2f} {total['pwcca']:9.2f} {r.get('compile_s', 0):7.2f} "
        f"{r['peak_rss_mb']:8.0f}"
    ), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--svcca_dir",
        default="",
        help="folder holding google/svcca's cca_core.py and pwcca.py (a clone of its GitHub repository)",
    )
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    parser.add_argument("--repeats", type=int, default=3, help="in-process repeats of the one-shot case (median)")
    parser.add_argument(
        "--max_reference_gb", type=float, default=6.0, help="run cca_core on a case only if its peak fits (GB)"
    )
    parser.add_argument(
        "--single-thread",
        action="store_true",
        help="pin NumPy (OpenBLAS) and XLA to one thread each: stable figures on a busy shared machine",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.quick:
        cases = [dict(name="one-shot", rows=20_000, dx=64, dy=64, batch_rows=20_000)]
        cases.append(dict(name="streamed", rows=200_000, dx=32, dy=32, batch_rows=16_384))
    else:
        cases = [dict(name="one-shot", rows=100_000, dx=512, dy=512, batch_rows=100_000)]
        cases.append(dict(name="streamed", rows=3_000_000, dx=256, dy=256, batch_rows=65_536))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    if args.single_thread:
        env.update(
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        )
    have_svcca = import_svcca(args.svcca_dir) is not None
    print(f"machine: {_machine()}")
    print(
        f"threads: {'1 (pinned)' if args.single_thread else 'library defaults'}; "
        f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    if not have_svcca:
        print(
            f"google/svcca NOT FOUND (--svcca_dir={args.svcca_dir!r} has no cca_core.py): the cca_core rows are "
            "skipped. Clone it (git clone https://github.com/google/svcca DIR) and pass --svcca_dir DIR."
        )

    def run(spec):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)], cwd=root, capture_output=True, text=True, env=env
        )
        if proc.returncode:
            sys.exit(f"{spec['impl']} failed:\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    header = (
        f"{'case':9} {'shape':>16} {'impl':8} {'transfer':>8} {'moments':>8} {'finalize':>8} {'finish':>8} "
        f"{'CCA s':>9} {'CCA CPU s':>9} {'SVCCA s':>9} {'PWCCA s':>9} {'compile':>7} {'peak MB':>8}"
    )
    lines, notes = [header, "-" * len(header)], []
    for case in cases:
        impls = ["ours", "numpy64"]
        if have_svcca and reference_gb(case) <= args.max_reference_gb:
            impls.append("cca_core")
        elif have_svcca:
            notes.append(
                f"{case['name']} {case['rows']:,} x {case['dx']}: cca_core not run: it needs both layers in memory "
                f"plus np.cov's float64 copy, ~{reference_gb(case):.1f} GB > --max_reference_gb "
                f"{args.max_reference_gb:g}"
            )
        results = {}
        for impl in impls:
            spec = {"impl": impl, "case": case, "repeats": args.repeats if case["name"] == "one-shot" else 1}
            results[impl] = run({**spec, "svcca_dir": args.svcca_dir})
        totals = {}
        for impl, r in results.items():
            line, totals[impl] = _row(case, r)
            lines.append(line)
        notes.extend(_case_notes(case, results, totals))
    print("\n".join(lines))
    print(
        "columns: seconds; ours: transfer = arrays to the device, moments = jitted streaming sums, finalize = sums to "
        "the host in float64, finish = CCA from the moments; cca_core: moments = its np.cov alone, finish = the rest "
        "of get_cca_similarity (pinv, matrix square roots, SVD); X s = the whole route to that measure"
    )
    print("\n".join(notes))
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def _case_notes(case, results, totals) -> list[str]:
    n, dx, dy = case["rows"], case["dx"], case["dy"]
    ours, exact = results["ours"], results["numpy64"]
    label = f"{case['name']} {n:,} x {dx}"
    flops = 2 * n * (dx * dx + dy * dy + dx * dy)
    rate, peak = flops / ours["moments_s"] / 1e9, ours["peak_gflops"]
    lines = [
        f"{label}: roofline: ours' moments run 3 matrix products, {flops / 1e9:.3g} GFLOP, in {ours['moments_s']:.2f} s"
        f" = {rate:.0f} GFLOP/s, {rate / peak:.0%} of XLA's float32 matmul peak measured beside it, {peak:.0f} "
        f"GFLOP/s (at the peak: {flops / peak / 1e9:.2f} s; exploiting symmetry could at best skip "
        f"{n * (dx * dx + dy * dy) / 1e9:.3g} GFLOP of them)"
    ]
    state = 4 * (2 * (dx * dx + dy * dy + dx * dy + 3 * dx + 3 * dy + 3) + dx + dy + 1)
    lines.append(
        f"{label}: memory: ours' accumulator holds {state / 1e6:.1f} MB whatever n (sums and Kahan terms, "
        f"O(features^2)); the layer pair itself is {n * (dx + dy) * 4 / 1e6:,.0f} MB in float32 (O(examples x "
        "features)), which ours streams and cca_core must hold, plus its float64 copy"
    )
    for m in ("cca", "svcca", "pwcca"):
        lines.append(
            f"{label}: {m}: ours vs float64 moments |score diff| "
            f"{abs(ours['finish'][m]['score'] - exact['finish'][m]['score']):.1e}"
        )
    ref = np.asarray(exact["finish"]["cca"]["coefficients"])
    lines.append(
        f"{label}: CCA coefficients, max |ours - float64 moments| "
        f"{np.abs(np.asarray(ours['finish']['cca']['coefficients']) - ref).max():.1e}"
    )
    if "cca_core" in results:
        theirs = results["cca_core"]
        flops64 = 2 * n * (dx + dy) ** 2
        coef = np.sort(np.asarray(theirs["finish"]["cca"]["coefficients"]))[::-1]
        ours_coef = np.asarray(ours["finish"]["cca"]["coefficients"])
        cpu = ours["cpu_moments_s"] + ours["finish"]["cca"]["cpu_s"]
        cpu = f" ({theirs['cpu_cca_s'] / cpu:.1f}x in CPU seconds)" if np.isfinite(cpu) else ""
        lines += [
            f"{label}: cca_core's np.cov: {flops64 / 1e9:.3g} float64 GFLOP in {theirs['cov_s']:.2f} s "
            f"({flops64 / theirs['cov_s'] / 1e9:.0f} GFLOP/s; NumPy's float64 matmul peak beside it "
            f"{theirs['peak_gflops']:.0f} GFLOP/s: {flops64 / theirs['peak_gflops'] / 1e9:.2f} s); the rest of "
            "get_cca_similarity: "
            f"{theirs['finish']['cca']['s'] - theirs['cov_s']:.2f} s",
            f"{label}: speed-up ours vs cca_core: CCA {totals['cca_core']['cca'] / totals['ours']['cca']:.1f}x{cpu}, "
            f"SVCCA {totals['cca_core']['svcca'] / totals['ours']['svcca']:.1f}x, "
            f"PWCCA {totals['cca_core']['pwcca'] / totals['ours']['pwcca']:.1f}x",
            f"{label}: numbers vs cca_core: CCA coefficients max |diff| {np.abs(ours_coef - coef).max():.1e}, "
            f"mean |diff| {abs(ours_coef.mean() - coef.mean()):.1e}; SVCCA(0.99) |diff| "
            f"{abs(ours['finish']['svcca']['score'] - theirs['finish']['svcca']['score']):.1e}; PWCCA ours "
            f"{ours['finish']['pwcca']['score']:.6f} vs pwcca.compute_pwcca {theirs['finish']['pwcca']['score']:.6f} "
            "(another definition: similarity.pwcca says how)",
        ]
    return lines


if __name__ == "__main__":
    main()
