"""Compile time of the train step, cold vs warm persistent compilation cache (train/compile_cache.py), in one run.

For each case a fresh process builds the train step (bench_train_step's configuration) against an empty cache
directory (cold: XLA compiles and stores the program), then a second fresh process does the same against that
directory (warm: the program is loaded). Each reports the time to trace and lower the step and the time of
`.compile()`; the warm/cold ratio is what a sweep's second run of a model, a resumed run or a rerun notebook pays.

  python benchmarks/bench_compile.py                       # cbr_small@587, resnet50@224 (batch 8), the quickstart's
                                                           # CBR at 32 px (batch 32); float32
  python benchmarks/bench_compile.py --cases=resnet50@224:256 --dtype=bfloat16   # on an accelerator
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# The child: build one train step and time its lowering and compilation with the cache in argv[1].
CHILD = """
import json, sys, time
sys.path.insert(0, {here!r}); sys.path.insert(0, {repo!r})
from transfusion_jax.train import compile_cache
compile_cache.enable(sys.argv[1], min_compile_seconds=0.0)
import jax, jax.numpy as jnp
from bench_train_step import bench_config, synthetic_batch
from transfusion_jax.train import partition, steps
from transfusion_jax.train import state as state_lib
name, size, batch, dtype, widths = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
config = bench_config(name, dtype, 10)
if widths:
    config.model.overrides = dict(widths=tuple(int(w) for w in widths.split("-")))
mesh = partition.make_data_mesh()
model = state_lib.build_model(config, 2)
state, tx, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, size, size, 3)))
state = jax.device_put(state, partition.replicated(mesh))
data = jax.device_put(synthetic_batch(batch, size), partition.data_sharded(mesh))
step = steps.make_train_step(model, tx, "softmax", mesh)
start = time.perf_counter()
lowered = step.lower(state, data, jax.random.key(0))
lowered_s = time.perf_counter() - start
start = time.perf_counter()
compiled = lowered.compile()
compile_s = time.perf_counter() - start
jax.block_until_ready(compiled(state, data, jax.random.key(0)))
print(json.dumps(dict(lower_s=lowered_s, compile_s=compile_s, device=jax.devices()[0].device_kind)))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--cases",
        default="cbr_small@587:8,resnet50@224:8,cbr_small@32:32:8-16-32-32",
        help="comma-separated model@size:batch[:widths]",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    return p.parse_args(argv)


def child(cache_dir: str, name: str, size: int, batch: int, dtype: str, widths: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # the given directory, only
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD.format(here=HERE, repo=REPO),
            cache_dir,
            name,
            str(size),
            str(batch),
            dtype,
            widths,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        name, rest = case.split("@")
        size, batch, *widths = rest.split(":")
        widths = widths[0] if widths else ""
        with tempfile.TemporaryDirectory() as cache_dir:
            cold = child(cache_dir, name, int(size), int(batch), args.dtype, widths)
            warm = child(cache_dir, name, int(size), int(batch), args.dtype, widths)
        label = f"{name}{' ' + widths if widths else ''} @ {size}"
        rows.append((label, batch, cold, warm))
        print(
            f"{label} batch {batch}: compile cold {cold['compile_s']:.1f} s, warm {warm['compile_s']:.2f} s", flush=True
        )
    import jax

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"jax {jax.__version__} on {rows[0][2]['device']}; {os.cpu_count()} cores, load average {load}; {args.dtype}")
    print(time.strftime("%Y-%m-%d %H:%M"))
    print()
    print("| model @ size | batch | trace + lower s | compile s, cold cache | compile s, warm cache | warm / cold |")
    print("|---|---|---|---|---|---|")
    for label, batch, cold, warm in rows:
        print(
            f"| {label} | {batch} | {cold['lower_s']:.1f} | {cold['compile_s']:.1f} | {warm['compile_s']:.2f} | "
            f"{warm['compile_s'] / cold['compile_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
