"""Two stacked-run programs at once (one thread each) vs one after another, in one run: what the study's
`programs_at_once` buys on this machine (BENCHMARKS.md, "Programs at once").

  python benchmarks/bench_programs_at_once.py              # the study's two models, 5 stacked runs each, 30 steps
  python benchmarks/bench_programs_at_once.py --runs 8 --steps 50 --rounds 3

Each program is the study's train step (study_pilot's: the project's step, every option off) vmapped over `--runs`
runs of the design's model at its size and batch. A round trains program A for `--steps` steps then program B
(one after another), then both at once from two Python threads (XLA programs release the GIL while they compute);
the two modes alternate within each round, so load changes hit both alike, and the median over rounds is printed
with the ratio, the process's CPU time per wall second in each mode and the load average. Both modes dispatch the
same compiled program, so the difference is only in how the machine's cores are used.
"""

import argparse
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout
sys.path.insert(0, HERE)

import study_pilot  # noqa: E402

from transfusion_jax.experiments.study import design  # noqa: E402
from transfusion_jax.hostinfo import cpu_model  # noqa: E402


def program(c, name: str, runs: int):
    """(step, stacked states of two programs, batch, rngs) for `runs` stacked runs of the design's model `name`."""
    import jax
    import jax.numpy as jnp
    import optax

    from transfusion_jax.train.state import TrainState

    b, s = c.batch_size, c.image_size
    model, _ = study_pilot._random_variables(c, c.widths[name], 2, 0)
    tx = optax.adam(1e-3)

    def init(rng):
        v = model.init(rng, jnp.zeros((1, s, s, 3)), train=False)
        return TrainState(jnp.zeros((), jnp.int32), v["params"], v["batch_stats"], tx.init(v["params"]))

    step = jax.jit(jax.vmap(study_pilot._step_body(model, tx)))
    batch = {
        "image": jax.random.normal(jax.random.key(1), (runs, b, s, s, 3)),
        "label": jnp.zeros((runs, b), jnp.int32),
        "label_mask": jnp.ones((runs, b, 1)),
        "valid": jnp.ones((runs, b), bool),
    }
    rngs = jax.random.split(jax.random.key(2), runs)
    states = [jax.vmap(init)(jax.random.split(jax.random.key(k), runs)) for k in range(2)]
    jax.block_until_ready(step(states[0], batch, rngs))  # compiled before timing
    return step, states, batch, rngs


def train(step, state, batch, rngs, steps: int) -> None:
    import jax

    for _ in range(steps):
        state, metrics = step(state, batch, rngs)
    jax.block_until_ready(metrics)


def at_once(fn, calls) -> None:
    """fn(*args) for each args in `calls`, each in its own thread, all at once."""
    threads = [threading.Thread(target=fn, args=args) for args in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="stacked runs per program")
    p.add_argument("--steps", type=int, default=30, help="steps per program per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--models", default="small,large")
    args = p.parse_args()
    c = design.get_config("default")
    print(f"{cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the start")
    for name in args.models.split(","):
        step, states, batch, rngs = program(c, name, args.runs)
        rows = {"one after another": [], "two at once": []}
        for _ in range(args.rounds):
            rows["one after another"].append(timed(lambda: [train(step, s, batch, rngs, args.steps) for s in states]))
            rows["two at once"].append(
                timed(lambda: at_once(train, [(step, s, batch, rngs, args.steps) for s in states]))
            )
        per_step = {mode: statistics.median(w for w, _ in r) / (2 * args.steps) for mode, r in rows.items()}
        cores = {mode: statistics.median(cpu / w for w, cpu in r) for mode, r in rows.items()}
        print(
            f"{name} ({args.runs} runs per program, {args.steps} steps x 2 programs, median of {args.rounds}): "
            + ", ".join(
                f"{mode} {1e3 * t:.1f} ms per program-step ({cores[mode]:.2f} cores busy)"
                for mode, t in per_step.items()
            )
            + f"; two at once {per_step['one after another'] / per_step['two at once']:.2f}x"
        )
    print(f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
