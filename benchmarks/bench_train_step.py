"""Train-step throughput (images/s) of our jitted data-parallel step vs the same step in PyTorch, in one run.

Each model runs at its paper resolution (ResNet-50 224, Inception-v3 299, CBRs 587) unless `--size` overrides it,
with the paper's Retina optimizer (Adam, lr 1e-3), 2 outputs, BatchNorm in training mode, forward + backward +
update. The PyTorch side is torchvision's resnet50 / inception_v3 (aux head off) and an equivalent CBR (same
convs, SAME padding, 3x3/2 VALID max-pools, no conv bias), on CUDA when available (`--device auto`).

  python benchmarks/bench_train_step.py                                   # reduced default set, a few minutes on CPU
  python benchmarks/bench_train_step.py --models=resnet50,inception_v3,cbr_larget,cbr_largew,cbr_small,cbr_tiny \
      --batch=32 --dtype=bfloat16 --steps=20 --device=auto                # full set on an accelerator
"""

import argparse
import os
import platform
import sys
import time
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet50,cbr_small", help="comma-separated model names")
    p.add_argument("--batch", type=int, default=8, help="global batch size")
    p.add_argument("--size", type=int, default=0, help="input resolution; 0 = each model's paper resolution")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--steps", type=int, default=5, help="timed steps per framework (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first (compiling) one")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="auto: JAX's default backend and CUDA for torch when available",
    )
    return p.parse_args(argv)


def default_size(name: str) -> int:
    """The resolution each model is benchmarked at: ResNet-50 224 (CheXpert), Inception-v3 299, CBRs 587 (Retina)."""
    return {"resnet50": 224, "resnet50_slim": 224, "inception_v3": 299}.get(name, 587)


# ---------------------------------------------------------------------------------------------------------- JAX


def bench_config(name, dtype, num_steps):
    """The fields of config_lib.base_config() that building a train step reads, without ml_collections or the data
    stack (so this also runs on a bare accelerator image): Adam lr 1e-3, random init, nothing frozen."""
    ns = types.SimpleNamespace
    optimizer = ns(
        name="adam",
        learning_rate=1e-3,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        schedule="constant",
        warmup_steps=0,
        grad_clip_norm=0.0,
    )
    return ns(
        model=ns(name=name, overrides={}),
        dtype=dtype,
        init="random",
        pretrained="",
        mean_var_bn="mean_var",
        freeze=(),
        num_train_steps=num_steps,
        optimizer=optimizer,
    )


def jax_stepper(name, size, args):
    """(one synchronized train step as a callable, first-call compile seconds)."""
    import jax
    import jax.numpy as jnp

    from transfusion_jax.train import partition, steps
    from transfusion_jax.train import state as state_lib

    config = bench_config(name, args.dtype, args.steps + args.warmup)
    mesh = partition.make_data_mesh()
    model = state_lib.build_model(config, 2)
    state, tx, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    state = jax.device_put(state, partition.replicated(mesh))
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(args.batch, size, size, 3)).astype(np.float32),
        "label": rng.integers(0, 2, args.batch).astype(np.int32),
        "label_mask": np.ones((args.batch, 1), np.float32),
        "valid": np.ones(args.batch, bool),
    }
    batch = jax.device_put(batch, partition.data_sharded(mesh))
    train_step = steps.make_train_step(model, tx, "softmax", mesh)
    key = jax.random.key(0)
    holder = {"state": state}

    def step():
        holder["state"], metrics = train_step(holder["state"], batch, key)
        jax.block_until_ready(metrics)

    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


# -------------------------------------------------------------------------------------------------------- torch


def torch_cbr(name):
    import torch.nn as tnn

    from transfusion_jax.models import cbr

    spec = cbr.CBR_SPECS[name]
    layers, cin, k = [], 3, spec["kernel_size"]
    for i, width in enumerate(spec["widths"]):
        layers += [
            tnn.Conv2d(cin, width, k, padding=k // 2, bias=False),
            tnn.BatchNorm2d(width, momentum=0.1),
            tnn.ReLU(inplace=True),
        ]
        if i + 1 < len(spec["widths"]) or spec["pool_after_last"]:
            layers.append(tnn.MaxPool2d(3, 2))
        cin = width
    return tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(cin, 2))


def torch_model(name):
    import torchvision

    if name in ("resnet50", "resnet50_slim"):
        if name == "resnet50_slim":
            raise ValueError("resnet50_slim has no torchvision counterpart; benchmark resnet50 instead.")
        return torchvision.models.resnet50(weights=None, num_classes=2)
    if name == "inception_v3":
        return torchvision.models.inception_v3(weights=None, num_classes=2, aux_logits=False, init_weights=False)
    return torch_cbr(name)


def torch_stepper(name, size, args):
    """(one synchronized train step as a callable, device name)."""
    import torch

    device = "cuda" if args.device in ("auto", "gpu") and torch.cuda.is_available() else "cpu"
    model = torch_model(name).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(args.batch, 3, size, size)).astype(np.float32)).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(rng.integers(0, 2, args.batch)).to(device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        sync()

    return step, device


def interleaved_images_per_second(steppers, batch, warmup, steps):
    """Images/s of each stepper from the median step time, the steppers taking turns step by step so that a load
    change on a shared machine hits both alike."""
    for step in steppers:
        for _ in range(warmup):
            step()
    times = [[] for _ in steppers]
    for _ in range(steps):
        for step, record in zip(steppers, times):
            t0 = time.perf_counter()
            step()
            record.append(time.perf_counter() - t0)
    return [batch / float(np.median(record)) for record in times]


# --------------------------------------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    import jax

    try:
        import torch
    except ImportError:  # a bare accelerator image: report ours alone
        torch = None

    if args.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    rows, torch_device = [], "cpu"
    for name in [m for m in args.models.split(",") if m]:
        size = args.size or default_size(name)
        ours_step, compile_s = jax_stepper(name, size, args)
        if torch:
            theirs_step, torch_device = torch_stepper(name, size, args)
            ours, theirs = interleaved_images_per_second([ours_step, theirs_step], args.batch, args.warmup, args.steps)
        else:
            (ours,), theirs = interleaved_images_per_second([ours_step], args.batch, args.warmup, args.steps), np.nan
        rows.append((name, size, ours, compile_s, theirs))
        print(f"{name}@{size}: jax {ours:.2f} img/s (compile {compile_s:.1f} s), torch {theirs:.2f} img/s", flush=True)
    jax_dev = jax.devices()[0]
    print()
    print(
        f"jax {jax.__version__} on {jax.device_count()} x {jax_dev.device_kind} ({jax_dev.platform}); "
        + (
            f"torch {torch.__version__} on {torch_device} ({torch.get_num_threads()} threads); "
            if torch
            else "torch not installed; "
        )
        + f"{platform.processor() or platform.machine()}; batch {args.batch}, {args.dtype}, median of {args.steps} "
        f"interleaved steps, "
        f"Adam, BatchNorm in train mode"
    )
    print()
    print("| model | size | batch | dtype | ours (JAX) img/s | PyTorch img/s | ours / PyTorch | JAX compile s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, size, ours, compile_s, theirs in rows:
        print(
            f"| {name} | {size} | {args.batch} | {args.dtype} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} | "
            f"{compile_s:.1f} |"
        )


if __name__ == "__main__":
    main()
