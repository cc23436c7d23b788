"""Self-supervised pretraining's cost: a whole `ssl.pretrain_folder` run at the miniature study's size, and its step
beside the supervised step that does the same convolution work, in one run.

  python benchmarks/bench_ssl.py                 # the study's small CBR (8-16-32-32) at 32 px on 2,000 images
  python benchmarks/bench_ssl.py --widths=16,32,64,128 --method=byol   # the study's large CBR; BYOL

1. Whole run: the study's target training images (2,000 generated fundus photos with polarity lesions, 32 px, as
   experiments.study writes them) in a folder; `pretrain_folder` with its defaults (SimCLR, 8 epochs of batch 128,
   AdamW) twice: cold (an empty compilation cache: what a first run on a machine pays) and warm (the cache of the
   first). Wall time, steps, images per second, load average before and after each.
2. Step: the SSL step (two views of B images made on the device, 2B through the network, NT-Xent / BYOL, optimizer)
   against the supervised train step (train/steps.py) on 2B images of the same size: the convolutions both must
   run. Median of interleaved steps; the ratio is SSL's overhead (views, projector/predictor, loss; BYOL also the
   target's forward pass).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout
sys.path.insert(0, HERE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="8,16,32,32", help="CBR-Small widths (the study's small model)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--images", type=int, default=2000, help="the study's target training set")
    p.add_argument("--method", choices=("simclr", "byol"), default="simclr")
    p.add_argument("--epochs", type=float, default=8.0, help="pretrain_folder's default")
    p.add_argument("--batch", type=int, default=128, help="pretrain_folder's default")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each kind in part 2")
    p.add_argument("--skip_whole", action="store_true", help="part 2 only")
    return p.parse_args(argv)


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def whole_runs(args, root: str) -> list[str]:
    from transfusion_jax.data import generate
    from transfusion_jax.ssl import pretrain_folder

    data = os.path.join(root, "target")
    generate.write_kaggle_dr(data, args.images, seed=1, size=args.size, lesions="polarity")  # as the study's
    widths = tuple(int(w) for w in args.widths.split(","))
    rows = ["| run | wall s | steps | images/s | load before | load after |", "|---|---|---|---|---|---|"]
    for label in ("cold cache", "warm cache"):  # the second run loads every program the first compiled
        before, start = load(), time.perf_counter()
        summary = pretrain_folder(
            os.path.join(data, "train"),
            os.path.join(root, f"{label.split()[0]}.npz"),
            model="cbr_small",
            model_overrides={"widths": widths},
            image_size=args.size,
            method=args.method,
            epochs=args.epochs,
            batch_size=args.batch,
            resize_mode="center_crop",
        )
        wall = time.perf_counter() - start
        seen = summary["num_train_steps"] * args.batch
        rows.append(
            f"| {label} | {wall:.1f} | {summary['num_train_steps']} | {seen / wall:.0f} | {before} | {load()} |"
        )
        print(rows[-1], flush=True)
    return rows


def step_ratio(args) -> list[str]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from bench_train_step import bench_config, synthetic_batch

    from transfusion_jax.data import preprocess
    from transfusion_jax.ssl import steps as ssl_steps
    from transfusion_jax.ssl import trainer
    from transfusion_jax.ssl.folder import folder_config
    from transfusion_jax.train import partition, steps
    from transfusion_jax.train import state as state_lib

    widths = tuple(int(w) for w in args.widths.split(","))
    mesh = partition.make_data_mesh()
    size, b = args.size, args.batch
    sample = jnp.zeros((1, size, size, 3), jnp.float32)
    config = folder_config(os.getcwd(), model_overrides={"widths": widths}, image_size=size, method=args.method)
    encoder = state_lib.build_model(config, trainer.ENCODER_OUTPUTS)
    net, target_net = ssl_steps.build_nets(config, encoder, trainer.encoder_feature_dim(encoder, sample))
    variables = trainer.initial_variables(config, net, encoder, sample)
    tx, _ = ssl_steps.make_optimizer(config, variables["params"], 10_000, 10)
    ssl_state = jax.device_put(ssl_steps.init_state(net, target_net, tx, variables), partition.replicated(mesh))
    norm = preprocess.get_normalization("torchvision")
    ssl_step = ssl_steps.make_train_step(config, net, target_net, tx, trainer.view_config(config), norm, mesh, 10_000)
    images = np.random.default_rng(0).uniform(0, 1, (b, size, size, 3)).astype(np.float32)
    ssl_batch = jax.device_put({"image": images, "valid": np.ones(b, bool)}, partition.data_sharded(mesh))

    sup_config = bench_config("cbr_small", "float32", 10_000)
    sup_config.model.overrides = {"widths": widths}
    model = state_lib.build_model(sup_config, 2)
    sup_state, sup_tx, _ = state_lib.create_train_state(sup_config, model, jax.random.key(0), sample)
    sup_state = jax.device_put(sup_state, partition.replicated(mesh))
    sup_step = steps.make_train_step(model, sup_tx, "softmax", mesh)
    sup_batch = jax.device_put(synthetic_batch(2 * b, size), partition.data_sharded(mesh))

    holder = {"ssl": ssl_state, "sup": sup_state}
    key = jax.random.key(0)

    def run_ssl():
        holder["ssl"], m = ssl_step(holder["ssl"], ssl_batch, key)
        jax.block_until_ready(m)

    def run_sup():
        holder["sup"], m = sup_step(holder["sup"], sup_batch, key)
        jax.block_until_ready(m)

    compile_s = {}
    for name, fn in (("ssl", run_ssl), ("sup", run_sup)):
        start = time.perf_counter()
        fn()  # compiles (or loads from the cache)
        compile_s[name] = time.perf_counter() - start
    times = {"ssl": [], "sup": []}
    before = load()
    for _ in range(args.steps):
        for name, fn in (("ssl", run_ssl), ("sup", run_sup)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ssl_ms, sup_ms = (1000 * statistics.median(times[k]) for k in ("ssl", "sup"))
    return [
        f"| step | median ms | first call s | load before / after: {before} / {load()} |",
        "|---|---|---|---|",
        f"| {args.method}: 2 views of {b} images | {ssl_ms:.1f} | {compile_s['ssl']:.1f} | |",
        f"| supervised: {2 * b} images | {sup_ms:.1f} | {compile_s['sup']:.1f} | |",
        f"| ratio (SSL / supervised) | {ssl_ms / sup_ms:.2f} | | |",
    ]


def main(argv=None):
    args = parse_args(argv)
    from bench_train_step import environment

    args.dtype, args.warmup = "float32", 1  # what environment() reports
    root = tempfile.mkdtemp(prefix="bench_ssl_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(root, "jax_cache")  # empty: the first run is cold
    from transfusion_jax.train import compile_cache

    compile_cache.enable()
    try:
        rows = [] if args.skip_whole else whole_runs(args, root)
        rows += [""] + step_ratio(args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(environment(args, None).rsplit("\n", 1)[0])  # its last line describes bench_train_step's timing
    print(
        f"cbr_small {args.widths} at {args.size} px, {args.method}, batch {args.batch}; whole runs: "
        f"{args.images} images, {args.epochs:g} epochs"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
