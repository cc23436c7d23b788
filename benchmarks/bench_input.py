"""Does the input pipeline keep up with training? Input images/s over train-step images/s at 587 px, in one run.

Input: the real pipeline in train mode, `build_dataset(...).batches(...)`: grain decodes and crops/resizes on the
host in worker threads or processes, then the jitted per-example augmentation (affine, flip, colour) and the
normalisation run on the device, into batch-sharded jax.Arrays. Two inputs hold the same generated fundus
photographs:
  originals  a Kaggle-layout folder of JPEGs, 4:3 frames --source_size px tall (853 x 640 by default);
  resized    their 587 px copy written once by `python -m transfusion_jax.data resize` (JPEG q95): the host only
             decodes.
Train step: forward + backward + Adam of cbr_small and resnet50 at 587 px on the same devices, on a batch resident on
the device (bench_train_step's configuration). ratio = input img/s / step img/s: at least 1 keeps the accelerator
busy; the target on an accelerator host is >= 2 (headroom for slower disks and bigger originals). Also printed as
references from the same run: a single-threaded Pillow decode + resize loop over the originals (one host core
alone), and with --fed the step fed by the pipeline over the step on resident data (1.0 = input never waits).

Grey input (`config.data.channels`): the same pipeline with one channel and with three, side by side, on generated
CheXpert-v1.0-small x-rays (grey JPEGs 320 x 384, at 224 px) and on the fundus originals (colour, at 587 px; one
channel is their luma): input images/s and bytes per batch, both what crosses to the device (uint8) and the model
input there (float32).

  python benchmarks/bench_input.py                # CPU: input batch 8, step batch 2; a few minutes on 2 cores
  python benchmarks/bench_input.py --models=      # CPU: the input rates and the 1 vs 3 channels table only
  python benchmarks/bench_input.py --gpu          # accelerator: batch 64, bfloat16 step, host-core workers, --fed
  python benchmarks/bench_input.py --gpu --source_size 2592   # originals as big as Kaggle's (3888 x 2592)
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_train_step

SIZE = 587


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="accelerator defaults (see the flags below)")
    p.add_argument("--models", default="cbr_small,resnet50")
    p.add_argument("--num_images", type=int, default=0, help="generated photographs (default 96; --gpu 512)")
    p.add_argument("--source_size", type=int, default=640, help="height of the generated originals (4:3 frames)")
    p.add_argument("--batch", type=int, default=0, help="input global batch (default 8; --gpu 64)")
    p.add_argument("--batches", type=int, default=0, help="timed input batches (default 6; --gpu 20)")
    p.add_argument("--step_batch", type=int, default=0, help="train-step batch (default 2; --gpu 64)")
    p.add_argument("--steps", type=int, default=2, help="timed train steps (median; --gpu 10)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="", help="step dtype (float32; --gpu bf16)")
    p.add_argument("--workers", type=int, default=0, help="grain workers (default: host cores)")
    p.add_argument("--worker_types", default="", help="comma-separated thread/process (default thread; --gpu both)")
    p.add_argument("--fed", action="store_true", help="also time the step fed by the pipeline (on with --gpu)")
    p.add_argument("--channels", default="3,1", help="channel counts of the grey-input table ('' = skip it)")
    args = p.parse_args(argv)
    gpu = args.gpu
    defaults = dict(num_images=(96, 512), batch=(8, 64), batches=(6, 20), step_batch=(2, 64))
    for name, (cpu_value, gpu_value) in defaults.items():
        if not getattr(args, name):
            setattr(args, name, gpu_value if gpu else cpu_value)
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    args.workers = args.workers or os.cpu_count()
    args.worker_types = [w for w in (args.worker_types or ("thread,process" if gpu else "thread")).split(",") if w]
    args.steps = 10 if gpu and args.steps == 2 else args.steps
    args.fed = args.fed or gpu
    args.channels = [int(c) for c in args.channels.split(",") if c]
    return args


def pillow_reference(paths, size):
    from PIL import Image

    start = time.perf_counter()
    for path in paths:
        image = Image.open(path)
        image.draft("RGB", (size, size))
        np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
    return len(paths) / (time.perf_counter() - start)


def data_config(name, root, workers, worker_type, size=SIZE, channels=3):
    from transfusion_jax.data import default_data_config

    c = default_data_config()
    c.update(dict(name=name, root=root, image_size=size, num_workers=workers, worker_type=worker_type, prefetch=4))
    c.channels = channels
    return c


def input_rate(config, batch, batches, mesh, shape: list | None = None):
    """Images/s of the train stream; worker start-up, the first batch and the transform's compile excluded. The
    model input's shape is appended to `shape` when given."""
    import jax

    from transfusion_jax.data import build_dataset

    with build_dataset(config, "train", train=True).batches(batch, mesh=mesh, seed=0) as stream:
        first = jax.block_until_ready(next(stream))
        if shape is not None:
            shape.append(first["image"].shape)
        start = time.perf_counter()
        for _ in range(batches):
            jax.block_until_ready(next(stream))
        return batches * batch / (time.perf_counter() - start)


def channel_rows(args, mesh, tmp, originals):
    """(input, size, channels, img/s, uint8 bytes per batch to the device, float32 model-input bytes per batch)."""
    from transfusion_jax.data import generate

    chexpert = os.path.join(tmp, "chexpert")
    generate.write_chexpert(chexpert, args.num_images, seed=0, size=320)  # 320 x 384 grey JPEGs, as the real set
    rows = []
    inputs = (
        ("CheXpert x-rays (grey)", "chexpert_folder", chexpert, 224),
        ("fundus originals (colour)", "retina_folder", originals, SIZE),
    )
    for label, name, root, size in inputs:
        for channels in args.channels:
            config = data_config(name, root, args.workers, args.worker_types[-1], size, channels)
            shape = []
            rate = input_rate(config, args.batch, args.batches, mesh, shape)
            pixels = int(np.prod(shape[0]))
            rows.append((label, size, channels, rate, pixels, 4 * pixels))
            print(f"input {label} @ {size}, {channels} channel(s): {rate:8.1f} img/s", flush=True)
    return rows


def train_step(name, args, mesh):
    """(jitted step, state, a resident batch) for `name` at 587 px: bench_train_step's Adam configuration."""
    import jax
    import jax.numpy as jnp
    from bench_train_step import bench_config

    from transfusion_jax.train import partition, steps
    from transfusion_jax.train import state as state_lib

    config = bench_config(name, args.dtype, 1000)
    model = state_lib.build_model(config, 2)
    state, tx, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    state = jax.device_put(state, partition.replicated(mesh))
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(args.step_batch, SIZE, SIZE, 3)).astype(np.float32),
        "label": rng.integers(0, 2, args.step_batch).astype(np.int32),
        "label_mask": np.ones((args.step_batch, 1), np.float32),
        "valid": np.ones(args.step_batch, bool),
    }
    batch = jax.device_put(batch, partition.data_sharded(mesh))
    return steps.make_train_step(model, tx, "softmax", mesh), state, batch


def step_rates(name, args, mesh, fed_config):
    """(resident-batch step img/s, pipeline-fed step img/s or nan): median step times after a compile step."""
    import jax

    from transfusion_jax.data import build_dataset

    step, state, batch = train_step(name, args, mesh)
    key = jax.random.key(0)
    state, metrics = step(state, batch, key)  # compile
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = step(state, batch, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    resident = args.step_batch / float(np.median(times))
    fed = np.nan
    if fed_config is not None:
        dataset = build_dataset(fed_config, "train", train=True)
        with dataset.batches(args.step_batch, mesh=mesh, seed=0) as stream:
            state, metrics = step(state, next(stream), key)  # workers start, label dtype settles
            jax.block_until_ready(metrics)
            start = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = step(state, next(stream), key)  # dispatch is async: decoding overlaps the step
            jax.block_until_ready(metrics)
            fed = args.steps * args.step_batch / (time.perf_counter() - start)
    return resident, fed


def print_step_table(args, steps, rates):
    header = "| model | step img/s | input | workers | input img/s | input / step |"
    if args.fed:
        header += " fed step / resident step |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for model, (resident, fed) in steps.items():
        for (label, worker_type), rate in rates.items():
            row = f"| {model} | {resident:.2f} | {label} | {worker_type} | {rate:.1f} | {rate / resident:.1f} |"
            if args.fed:
                row += (
                    f" {fed / resident:.2f} |" if label == "resized" and worker_type == args.worker_types[-1] else " |"
                )
            print(row)


def main(argv=None):
    args = parse_args(argv)
    import jax

    from transfusion_jax.data import __main__ as data_cli
    from transfusion_jax.data import generate
    from transfusion_jax.train import partition

    mesh = partition.make_data_mesh()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        originals, copy = os.path.join(tmp, "originals"), os.path.join(tmp, "resized")
        generate.write_kaggle_dr(originals, args.num_images, seed=0, size=args.source_size)
        data_cli.main(["resize", copy, "--name", "retina_folder", "--root", originals, "--size", str(SIZE)])
        paths = sorted(os.path.join(originals, "train", f) for f in os.listdir(os.path.join(originals, "train")))
        width = args.source_size * 4 // 3
        pillow = pillow_reference(paths, SIZE)
        rates = {}
        for worker_type in args.worker_types:
            for label, name, root in (("originals", "retina_folder", originals), ("resized", "resized", copy)):
                config = data_config(name, root, args.workers, worker_type)
                rates[(label, worker_type)] = input_rate(config, args.batch, args.batches, mesh)
                print(f"input {label:9s} {worker_type:7s}: {rates[(label, worker_type)]:8.1f} img/s", flush=True)
        grey = channel_rows(args, mesh, tmp, originals) if args.channels else []
        fed_config = data_config("resized", copy, args.workers, args.worker_types[-1]) if args.fed else None
        steps = {}
        for model in [m for m in args.models.split(",") if m]:
            steps[model] = step_rates(model, args, mesh, fed_config)
            print(f"step {model}@{SIZE}: {steps[model][0]:.2f} img/s (fed: {steps[model][1]:.2f})", flush=True)

    device = jax.devices()[0]
    print()
    print(
        f"{jax.device_count()} x {device.device_kind} ({device.platform}), jax {jax.__version__}; host: "
        f"{os.cpu_count()} cores, load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
        f"{args.num_images} fundus JPEGs {width}x{args.source_size} and their {SIZE} px copy; input batch "
        f"{args.batch}, {args.workers} workers; step batch {args.step_batch}, {args.dtype}"
    )
    print(f"reference: single-thread Pillow decode + resize of the originals: {pillow:.1f} img/s")
    print()
    if steps:
        print_step_table(args, steps, rates)
    if grey:
        print()
        print(
            "| input | size | channels | input img/s | uint8 MiB / batch (to the device) | float32 MiB / batch (model "
            "input) |"
        )
        print("|---|---|---|---|---|---|")
        for label, size, channels, rate, uint8, float32 in grey:
            print(f"| {label} | {size} | {channels} | {rate:.1f} | {uint8 / 2**20:.2f} | {float32 / 2**20:.2f} |")


if __name__ == "__main__":
    main()
