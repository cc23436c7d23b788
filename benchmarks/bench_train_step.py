"""Train-step throughput (images/s) of our jitted data-parallel step vs the same step in PyTorch, in one run.

Each case is a model, an input size and a global batch; the step is the paper's Retina optimizer (Adam, lr 1e-3),
2 outputs, BatchNorm in training mode, forward + backward + update, on a batch resident on the device. The PyTorch
side is torchvision's resnet50 / inception_v3 (aux head off) and an equivalent CBR (same convs, SAME padding, 3x3/2
VALID max-pools, no conv bias), channels_last, with autocast (AMP) for bfloat16, and optionally `torch.compile`d.
ViTs (vit_ti16, vit_b16 at 224 px) are
timed against torchvision's VisionTransformer of the same shape (vit_b_16; ViT-Ti/16 built from its class), whose
attention is PyTorch's scaled_dot_product_attention. The steppers take turns step by step and the median step time
is reported, so a load change on a shared machine hits every side alike. Printed with the card, the versions, the
host load and this command line.

  python benchmarks/bench_train_step.py                    # CPU: resnet50@224, cbr_small@587, batch 8, float32
  python benchmarks/bench_train_step.py --cpu_kernels=both # CPU: also our step without models/cpu_kernels.py
  python benchmarks/bench_train_step.py --models=vit_ti16,vit_b16   # CPU: the ViT row, 224 px, batch 8
  python benchmarks/bench_train_step.py --gpu              # GPU: resnet50@224 bf16 batch 32 and 256, cbr_small@587
                                                           # and resnet50@587 batch 32; PyTorch eager + compiled;
                                                           # peak memory
  python benchmarks/bench_train_step.py --gpu --models=vit_ti16,vit_b16 --batch=32,256   # GPU: the ViT row
  python benchmarks/bench_train_step.py --models=resnet50,inception_v3 --batch=32,64 --dtype=bfloat16 --steps=20
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from transfusion_jax import hostinfo  # noqa: E402

# --gpu: (model, size, batch) cases. ResNet-50 at 224 (CheXpert) at the paper's batch and a large one, the CBR and
# ResNet-50 at the Retina resolution.
GPU_CASES = (("resnet50", 224, 32), ("resnet50", 224, 256), ("cbr_small", 587, 32), ("resnet50", 587, 32))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="the GPU cases above, bfloat16, 20 steps, torch.compile too")
    p.add_argument("--models", default="", help="comma-separated model names (resnet50,cbr_small; --gpu: its cases)")
    p.add_argument("--batch", default="", help="comma-separated global batch sizes (8; --gpu with --models: 32)")
    p.add_argument("--size", type=int, default=0, help="input resolution; 0 = each model's paper resolution")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="", help="compute dtype (float32; --gpu bf16)")
    p.add_argument("--steps", type=int, default=0, help="timed steps per side, median reported (5; --gpu 20)")
    p.add_argument("--warmup", type=int, default=0, help="untimed steps after the first (1; --gpu 3)")
    p.add_argument("--torch_compile", action="store_true", help="also time torch.compile(model) (on with --gpu)")
    p.add_argument(
        "--cpu_kernels",
        choices=("on", "off", "both"),
        default="on",
        help="our step with transfusion_jax.models.cpu_kernels (only used on CPUs), without, or both",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="auto: JAX's default backend and CUDA for torch when available",
    )
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.gpu else "float32")
    args.steps = args.steps or (20 if args.gpu else 5)
    args.warmup = args.warmup or (3 if args.gpu else 1)
    args.torch_compile = args.torch_compile or args.gpu
    if args.gpu and not args.models:
        args.cases = list(GPU_CASES)
    else:
        names = [m for m in (args.models or "resnet50,cbr_small").split(",") if m]
        batches = [int(b) for b in (args.batch or ("32" if args.gpu else "8")).split(",") if b]
        args.cases = [(m, args.size or default_size(m), b) for m in names for b in batches]
    return args


def default_size(name: str) -> int:
    """The resolution each model is benchmarked at: ResNet-50 and the ViTs 224 (CheXpert, the ViT checkpoints'),
    Inception-v3 299, CBRs 587 (Retina)."""
    return {"resnet50": 224, "resnet50_slim": 224, "inception_v3": 299, "vit_b16": 224, "vit_ti16": 224}.get(name, 587)


# ---------------------------------------------------------------------------------------------------------- JAX


def bench_config(name, dtype, num_steps):
    """The fields of config_lib.base_config() that building a train step reads, without the data stack (so this
    also runs on a bare accelerator image): Adam lr 1e-3, random init, nothing frozen."""
    import ml_collections

    optimizer = dict(
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
    return ml_collections.ConfigDict(
        dict(
            model=dict(name=name, overrides={}),
            dtype=dtype,
            init="random",
            pretrained="",
            mean_var_bn="mean_var",
            freeze=(),
            num_train_steps=num_steps,
            optimizer=optimizer,
        )
    )


def synthetic_batch(batch: int, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
        "label": rng.integers(0, 2, batch).astype(np.int32),
        "label_mask": np.ones((batch, 1), np.float32),
        "valid": np.ones(batch, bool),
    }


def jax_stepper(name, size, batch_size, args, cpu_kernels: bool = True):
    """(one synchronized train step as a callable, first-call compile seconds, XLA's peak bytes for the step, the
    compiled step: its cost analysis gives the step's FLOPs)."""
    import jax
    import jax.numpy as jnp

    from transfusion_jax.models import cpu_kernels as kernels
    from transfusion_jax.train import partition, steps
    from transfusion_jax.train import state as state_lib

    kernels.ENABLED = cpu_kernels  # read when the step is traced, below
    config = bench_config(name, args.dtype, args.steps + args.warmup + 1)
    mesh = partition.make_data_mesh()
    model = state_lib.build_model(config, 2)
    state, tx, _ = state_lib.create_train_state(config, model, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    state = jax.device_put(state, partition.replicated(mesh))
    batch = jax.device_put(synthetic_batch(batch_size, size), partition.data_sharded(mesh))
    train_step = steps.make_train_step(model, tx, "softmax", mesh)
    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = train_step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    peak = np.nan
    if memory is not None:
        peak = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes
        )
    kernels.ENABLED = True
    holder = {"state": state}

    def step():
        holder["state"], metrics = compiled(holder["state"], batch, key)
        jax.block_until_ready(metrics)

    step()
    return step, compile_s, peak, compiled


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


def torch_vit(name, size):
    """torchvision's VisionTransformer with the shape of our `name` (models/vit.py's VIT_SPECS) for `size` px
    inputs, 2 classes."""
    import torchvision

    from transfusion_jax.models.vit import VIT_SPECS

    s = VIT_SPECS[name]
    return torchvision.models.vision_transformer.VisionTransformer(
        image_size=size,
        patch_size=s["patch_size"],
        num_layers=s["depth"],
        num_heads=s["num_heads"],
        hidden_dim=s["width"],
        mlp_dim=s["mlp_dim"],
        num_classes=2,
    )


def torch_model(name, size):
    import torchvision

    if name.startswith("vit_"):
        return torch_vit(name, size)
    if name in ("resnet50", "resnet50_slim"):
        if name == "resnet50_slim":
            raise ValueError("resnet50_slim has no torchvision counterpart; benchmark resnet50 instead.")
        return torchvision.models.resnet50(weights=None, num_classes=2)
    if name == "inception_v3":
        return torchvision.models.inception_v3(weights=None, num_classes=2, aux_logits=False, init_weights=False)
    return torch_cbr(name)


def torch_device(args) -> str:
    import torch

    return "cuda" if args.device in ("auto", "gpu") and torch.cuda.is_available() else "cpu"


def torch_stepper(name, size, batch_size, args, compiled: bool = False):
    """(one synchronized train step as a callable, peak bytes allocated on CUDA over its first steps or nan)."""
    import torch

    device = torch_device(args)
    model = torch_model(name, size).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compiled else model
    host = synthetic_batch(batch_size, size)
    x = torch.from_numpy(host["image"]).permute(0, 3, 1, 2).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(host["label"]).long().to(device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(forward(x).float(), y)
        loss.backward()
        opt.step()
        sync()

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    step()  # compiles under torch.compile
    step()
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else np.nan
    return step, peak


def interleaved_images_per_second(steppers, batch, warmup, steps):
    """Images/s of each stepper from the median step time, the steppers taking turns step by step so that a load
    change on a shared machine hits all alike."""
    for step in steppers:
        for _ in range(warmup):
            step()
    times = [[] for _ in steppers]
    for _ in range(steps):
        for step, record in zip(steppers, times):
            start = time.perf_counter()
            step()
            record.append(time.perf_counter() - start)
    return [batch / float(np.median(record)) for record in times]


# --------------------------------------------------------------------------------------------------------- main


def environment(args, torch) -> str:
    """Card, versions, host and command: what a reader needs to trust or rerun the table."""
    import flax
    import jax
    import jaxlib
    import optax

    device = jax.devices()[0]
    lines = [
        f"command: python {' '.join(sys.argv)}",
        f"jax {jax.__version__} (jaxlib {jaxlib.__version__}), flax {flax.__version__}, optax {optax.__version__}: "
        f"{jax.device_count()} x {device.device_kind} ({device.platform})",
    ]
    if torch is not None:
        import torchvision

        where = torch_device(args)
        if where == "cuda":
            where = (
                f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
            )
        else:
            where = f"CPU, {torch.get_num_threads()} threads"
        lines.append(f"torch {torch.__version__}, torchvision {torchvision.__version__}: {where}")
    lines.append(f"host: {hostinfo.cpu_model()}, {os.cpu_count()} cores, load average {hostinfo.load_average()}")
    lines.append(
        f"{args.dtype}, median of {args.steps} interleaved steps after {args.warmup} warm-up, Adam, BatchNorm (if any) "
        "in train mode, synthetic batch resident on the device"
    )
    return "\n".join(lines)


def _mib(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x / 2**20:.0f}"


def main(argv=None):
    args = parse_args(argv)
    import jax

    try:
        import torch
    except ImportError:  # a bare accelerator image: report ours alone
        torch = None

    if args.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    ours_kinds = {"on": [True], "off": [False], "both": [True, False]}[args.cpu_kernels]
    rows = []
    for name, size, batch in args.cases:
        steppers, labels, peaks, compile_s = [], [], {}, None
        for kernels in ours_kinds:
            step, seconds, peak, _ = jax_stepper(name, size, batch, args, cpu_kernels=kernels)
            label = "ours" if not steppers else "ours, no CPU kernels"
            steppers.append(step)
            labels.append(label)
            peaks[label] = peak
            compile_s = seconds if compile_s is None else compile_s
        if torch is not None:
            step, peaks["PyTorch"] = torch_stepper(name, size, batch, args)
            steppers.append(step)
            labels.append("PyTorch")
            if args.torch_compile:
                step, peaks["torch.compile"] = torch_stepper(name, size, batch, args, compiled=True)
                steppers.append(step)
                labels.append("torch.compile")
        rates = dict(zip(labels, interleaved_images_per_second(steppers, batch, args.warmup, args.steps)))
        rows.append((name, size, batch, rates, peaks, compile_s))
        print(f"{name}@{size} batch {batch}: " + ", ".join(f"{k} {v:.2f} img/s" for k, v in rates.items()), flush=True)

    print()
    print(environment(args, torch))
    print()
    others = [k for k in rows[0][3] if k != "ours"]
    header = ["model", "size", "batch", "ours img/s"] + [f"{k} img/s" for k in others]
    header += [f"ours / {k}" for k in others] + ["peak MiB (" + ", ".join(rows[0][4]) + ")", "JAX compile s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, size, batch, rates, peaks, compile_s in rows:
        cells = [name, str(size), str(batch), f"{rates['ours']:.2f}"] + [f"{rates[k]:.2f}" for k in others]
        cells += [f"{rates['ours'] / rates[k]:.2f}" for k in others]
        cells += [" / ".join(_mib(v) for v in peaks.values()), f"{compile_s:.1f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
