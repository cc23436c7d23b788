"""Many runs as one program (train/multirun.py) vs the same runs one after another, in one run.

N compatible runs (one architecture, input size and recipe; different seeds, hence inits and data orders) train
with Adam 1e-3 on batches resident on the device, each run its own batch (or one shared batch, --shared_batch).
Sequential: each run's own state stepped by the single-run train step (one compiled program serves all N, the best
case for running them one by one). Together: the N states stacked, one step of the multi-run program. The two take
turns round by round (a round = one step of every run) and the median round time is reported, so load changes on a
shared machine hit both alike. Run-steps/s and the ratio are printed with the compile times, versions and load,
and a roofline (benchmarks/roofline.py): the FLOPs of one run-step (XLA's cost analysis of the single-run step),
the GFLOP/s each program achieves, and on a CPU the float32 matmul peak measured in the same run, hence the most
any stacking of these runs could gain over one after another: peak / achieved one after another.

  python benchmarks/bench_multirun.py                  # CPU: the quickstart's fine-tuning runs (configs/study.py:
                                                       # CBR-Small 8-16-32-32 at 32 px, batch 32, 25 runs)
  python benchmarks/bench_multirun.py --runs=15 --cpu_kernels=both   # also the program without models/cpu_kernels
  python benchmarks/bench_multirun.py --gpu            # GPU: CBR-Small (paper widths) at 224 px, 8 runs, batch 32, bf16

--whole_runs times WHOLE runs instead of steps: the quickstart's fine-tuning runs (the study's generated data,
recipe, log-spaced validation evaluations, checkpoints, exports, summaries; data and pretraining done once before,
untimed) through `experiments.runs.train_many`, stacked into one program and then one run at a time, in one
invocation with one persistent compilation cache as the quickstart uses (the stacked runs go first, so programs
both modes share, e.g. the initialisation, are compiled on their clock). Prints both wall times, their ratio, the
load, and the largest difference between the two modes' final test AUCs (they train the same runs).

  python benchmarks/bench_multirun.py --whole_runs --runs=15     # the study's small model, full data: 3 inits x 5 seeds
  python benchmarks/bench_multirun.py --whole_runs --runs=15 --shared_order   # the same, one data order for all
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout
sys.path.insert(0, HERE)

from bench_train_step import bench_config, environment, synthetic_batch  # noqa: E402
from roofline import matmul_peak_gflops, program_flops  # noqa: E402


def quickstart_defaults():
    """(widths, image size, batch, number of fine-tuning runs) of the quickstart: the study design's default, the
    small model's runs."""
    from transfusion_jax.experiments.study import design

    c = design.get_config("default")
    runs = sum(len(inits) for model, _, inits in c.cells if model in c.models_run) * len(c.seeds)
    return tuple(c.widths[c.models_run[0]]), c.image_size, c.batch_size, runs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="CBR-Small at 224 px, 8 runs, batch 32, bfloat16, 20 rounds")
    p.add_argument("--model", default="cbr_small")
    p.add_argument("--widths", default="", help="comma-separated CBR widths ('' = quickstart's; 'paper' = model's)")
    p.add_argument("--size", type=int, default=0, help="input resolution (quickstart's)")
    p.add_argument("--batch", type=int, default=0, help="per-run batch (quickstart's)")
    p.add_argument("--runs", type=int, default=0, help="runs N (quickstart's inits x seeds)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="", help="float32; --gpu bfloat16")
    p.add_argument("--rounds", type=int, default=0, help="timed rounds, median reported (10; --gpu 20)")
    p.add_argument("--shared_batch", action="store_true", help="all runs train on one batch (a paired design)")
    p.add_argument("--whole_runs", action="store_true", help="whole quickstart fine-tuning runs via train_many")
    p.add_argument("--workdir", default="", help="--whole_runs: where the data and runs go (default: a temp dir)")
    p.add_argument(
        "--shared_order",
        action="store_true",
        help="--whole_runs: every run gets config.data_order_seed=0 (a paired design: one data order for all)",
    )
    p.add_argument(
        "--cpu_kernels",
        choices=("on", "both"),
        default="on",
        help="with models/cpu_kernels.py (only used on CPUs), or also the multi-run program without them",
    )
    args = p.parse_args(argv)
    widths, size, batch, runs = quickstart_defaults()
    if args.gpu:
        widths, size, batch, runs = "paper", 224, 32, 8
    args.widths = args.widths or widths
    if isinstance(args.widths, str):
        args.widths = None if args.widths == "paper" else tuple(int(w) for w in args.widths.split(",") if w)
    args.size, args.batch, args.runs = args.size or size, args.batch or batch, args.runs or runs
    args.dtype = args.dtype or ("bfloat16" if args.gpu else "float32")
    args.rounds = args.rounds or (20 if args.gpu else 10)
    args.steps, args.warmup, args.device = args.rounds, 1, "auto"  # as bench_train_step.environment reads them
    return args


def build(args, cpu_kernels: bool = True):
    """(sequential round, together round, {single, multi} compile seconds, {single, multi} FLOPs per run-step)."""
    import jax
    import jax.numpy as jnp

    from transfusion_jax.models import cpu_kernels as kernels
    from transfusion_jax.train import multirun, partition, steps
    from transfusion_jax.train import state as state_lib

    mesh = partition.make_data_mesh()
    rep, data = partition.replicated(mesh), partition.data_sharded(mesh)
    configs = []
    for seed in range(args.runs):
        config = bench_config(args.model, args.dtype, 10_000)
        if args.widths:
            config.model.overrides = {"widths": args.widths}
        config.seed = seed
        configs.append(config)
    model = state_lib.build_model(configs[0], 2)
    sample = jnp.zeros((1, args.size, args.size, 3))
    created = [state_lib.create_train_state(c, model, jax.random.key(c.seed), sample) for c in configs]
    states = [jax.device_put(s, rep) for s, _, _ in created]
    batches = [
        jax.device_put(synthetic_batch(args.batch, args.size, seed=0 if args.shared_batch else i), data)
        for i in range(args.runs)
    ]

    kernels.ENABLED = cpu_kernels  # read when the programs are traced, below
    single = steps.make_train_step(model, created[0][1], "softmax", mesh)
    start = time.perf_counter()
    single = single.lower(states[0], batches[0], steps.step_rng(0, 0)).compile()
    single_compile = time.perf_counter() - start

    group = multirun.RunGroup(configs, states[0].params, states[0].batch_stats)
    stacked = jax.device_put(group.stack([jax.device_get(s) for s in states]), rep)
    per_run = jax.device_put(group.per_run, rep)
    multi_batches = batches[0] if args.shared_batch else batches
    multi = multirun.make_multi_train_step(model, group.tx, "softmax", mesh, shared_batch=args.shared_batch)
    start = time.perf_counter()
    multi = multi.lower(stacked, multi_batches, per_run).compile()
    multi_compile = time.perf_counter() - start
    kernels.ENABLED = True
    flops = {"single": program_flops(single), "multi": program_flops(multi) / args.runs}

    holder = {"states": states, "stacked": stacked, "t": 0}

    def sequential():
        t = holder["t"]
        for i in range(args.runs):
            holder["states"][i], metrics = single(holder["states"][i], batches[i], steps.step_rng(i, t))
        jax.block_until_ready(metrics)
        holder["t"] += 1

    def together():
        holder["stacked"], metrics = multi(holder["stacked"], multi_batches, per_run)
        jax.block_until_ready(metrics)

    return sequential, together, {"single": single_compile, "multi": multi_compile}, flops


def whole_runs(args):
    """The quickstart's first `args.runs` fine-tuning runs (configs/study.py's default: the small model's cells in
    plan order), stacked vs one at a time (see above)."""
    import tempfile

    from transfusion_jax.experiments import runs
    from transfusion_jax.experiments.study import design, execute, recipes
    from transfusion_jax.train import compile_cache

    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="bench_multirun_"))
    compile_cache.enable(os.path.join(workdir, "jax_cache"), min_compile_seconds=0.0)
    c = design.load_config()
    keys = design.plan(c)[: args.runs]
    paths = execute.make_data(workdir, c, log=lambda _: None)
    execute.pretrain_all(workdir, c, paths, log=lambda _: None)
    configs = [recipes.finetune_config(c, paths, key, workdir) for key in keys]
    for config in configs:
        config.data_order_seed = 0 if args.shared_order else -1
    wall, loads, summaries = {}, {}, {}
    for mode, per_program in (("one program", 0), ("one after another", 1)):
        dirs = [key.workdir(os.path.join(workdir, mode.replace(" ", "_"))) for key in keys]
        loads[mode] = os.getloadavg()[0]
        start = time.perf_counter()
        summaries[mode] = runs.train_many(configs, dirs, max_runs_per_program=per_program, log=lambda _: None)
        wall[mode] = time.perf_counter() - start
        if any(s["skipped"] for s in summaries[mode]):
            raise SystemExit(f"{workdir} holds finished runs: pass a fresh --workdir.")
    aucs = {m: [s["val"]["final"]["auc"] for s in summaries[m]] for m in summaries}
    diff = max(abs(a - b) for a, b in zip(aucs["one program"], aucs["one after another"]))
    widths = "-".join(map(str, c.widths[keys[0].model]))
    print("\n".join(line for line in environment(args, None).splitlines() if "median of" not in line))
    print(
        f"{len(keys)} quickstart fine-tuning runs (CBR {widths} at {c.image_size} px, batch {c.batch_size}, "
        f"{c.finetune.steps} steps, {len(c.eval_steps)} validation evaluations), whole runs via train_many; "
        f"{'one shared data order' if args.shared_order else 'each seed its own data order'}; workdir {workdir}"
    )
    print()
    print("| mode | wall s | s per run | vs one after another | 1-min load at start |")
    print("|---|---|---|---|---|")
    for mode in ("one after another", "one program"):
        ratio = wall["one after another"] / wall[mode]
        print(f"| {mode} | {wall[mode]:.1f} | {wall[mode] / len(keys):.2f} | {ratio:.2f}x | {loads[mode]:.1f} |")
    print(f"\nlargest |final validation AUC, one program - one after another| over the runs: {diff:.2e}")


def main(argv=None):
    args = parse_args(argv)
    if args.whole_runs:
        whole_runs(args)
        return
    try:
        import torch
    except ImportError:
        torch = None
    sequential, together, compiles, flops = build(args)
    rounds = {"one after another": sequential, "one program": together}
    if args.cpu_kernels == "both":
        _, together_plain, plain_compiles, _ = build(args, cpu_kernels=False)
        rounds["one program, no CPU kernels"] = together_plain
        compiles["multi, no CPU kernels"] = plain_compiles["multi"]
    times = {name: [] for name in rounds}
    for fn in rounds.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, fn in rounds.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rate = {name: args.runs / float(np.median(t)) for name, t in times.items()}  # run-steps per second
    import jax

    on_cpu = jax.default_backend() == "cpu"
    peak = matmul_peak_gflops(torch=torch) if on_cpu else {}  # the roofline's top, in the same run
    peak_load = os.getloadavg()[0]

    widths = "paper widths" if args.widths is None else "-".join(map(str, args.widths))
    print(environment(args, torch))
    print(
        f"{args.runs} runs of {args.model} ({widths}) at {args.size} px, batch {args.batch} per run, "
        f"{'one shared batch' if args.shared_batch else 'each run its own batch'}; median of {args.rounds} rounds"
    )
    print()
    print("| program | run-steps/s | ms per run-step | vs one after another | achieved GFLOP/s | compile s |")
    print("|---|---|---|---|---|---|")
    compile_of = {
        "one after another": "single",
        "one program": "multi",
        "one program, no CPU kernels": "multi, no CPU kernels",
    }
    for name, r in rate.items():
        print(
            f"| {name} | {r:.1f} | {1000 / r:.1f} | {r / rate['one after another']:.2f} | "
            f"{flops['single'] * r / 1e9:.1f} | {compiles[compile_of[name]]:.1f} |"
        )
    print(
        f"\nFLOPs per run-step (XLA cost analysis): single-run step {flops['single'] / 1e9:.3f} G, "
        f"multi-run program / runs {flops['multi'] / 1e9:.3f} G"
    )
    if peak:
        best = max(peak.values())
        achieved = flops["single"] * rate["one after another"] / 1e9
        print(
            f"float32 matmul peak (2048^3, load {peak_load:.1f}): "
            + ", ".join(f"{side} {g:.1f} GFLOP/s" for side, g in peak.items())
            + f"\nupper bound on any stacking's speed-up (best peak / achieved one after another): "
            f"{best:.1f} / {achieved:.1f} = {best / achieved:.2f}x"
        )


if __name__ == "__main__":
    main()
