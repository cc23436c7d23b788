"""Benchmark, end to end: two ResNet-50s compared at every block on N images, our one command against the PyTorch
route (torchvision forward hooks, activations to NumPy, google/svcca's `cca_core` per layer pair), in one run.

    python benchmarks/bench_compare.py --svcca_dir DIR              # N=64 images at 224 px: ~6-10 min on 2 cores
    python benchmarks/bench_compare.py --svcca_dir DIR --images 16 --size 112 --layers conv1,block1,block2  # quick

google/svcca is not a dependency: clone its repository from GitHub (`git clone https://github.com/google/svcca DIR`)
and pass that folder as --svcca_dir (its `cca_core.py` is imported from there as it is).

Both routes get the same weights: two torchvision `resnet50(weights=None)` (seeds 0 and 1; their BatchNorm running
statistics set from 32 images in training mode, so every layer has a trained network's scale), saved as .pth and
converted by `python -m transfusion_jax.pretrained convert` (exact: tests/pretrained). Both get the same uint8
images (.npy) and normalise them the torchvision way. Datapoints are every spatial position of every image (the
SVCCA conv tutorial's choice: no sampling, so the two routes see identical rows); CCA is the mean of all canonical
correlations (google/svcca's `cca_coef1` averaged; its own `mean` keeps only the top 98 %). The blocks are conv1 and
block1-4; pre_logits (one pooled row per image) would need more images than its 2048 features.

  ours:    `python -m transfusion_jax.analysis compare a.npz b.npz --images X.npy --method cca --positions all`,
           timed as a user runs it (a fresh process: imports, loading, compiling, collecting, measuring), once
           with an empty compilation cache (cold) and once with the cache the first run left (warm).
  PyTorch: a fresh process that builds both torchvision models, loads the .pth files, hooks the blocks (maxpool =
           conv1, layer1..4 = block1..4), runs the images in batches under no_grad, keeps every block's output as
           NumPy (N, C, H, W), then per block `cca_core.get_cca_similarity(acts_a, acts_b, epsilon=0)` on the
           (channels, N*H*W) layout it takes.
Printed: wall and CPU seconds and peak RSS of each process, the PyTorch route's split (forward vs CCA), each
block's score by both routes and their largest difference, the ratio, the machine and its load.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from transfusion_jax import hostinfo

ROOT = Path(__file__).resolve().parents[1]
HOOKS = {"conv1": "maxpool", "block1": "layer1", "block2": "layer2", "block3": "layer3", "block4": "layer4"}


def make_inputs(workdir: Path, num_images: int, size: int) -> None:
    """Two torchvision ResNet-50s as .pth + our converted .npz, and the uint8 images as .npy."""
    import torch
    import torchvision

    from transfusion_jax import pretrained

    rng = np.random.default_rng(0)

    def smooth_images(n):  # random colour fields at 1/8 resolution, upsampled, with pixel noise: image-like scales
        coarse = rng.uniform(0, 255, (n, size // 8 + 1, size // 8 + 1, 3))
        fine = np.kron(coarse, np.ones((1, 8, 8, 1)))[:, :size, :size] + rng.normal(0, 12, (n, size, size, 3))
        return np.clip(fine, 0, 255).astype(np.uint8)

    images = smooth_images(num_images)
    np.save(workdir / "images.npy", images)
    calibration = torch.from_numpy(
        ((smooth_images(32) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)
    ).permute(0, 3, 1, 2)
    for seed, name in enumerate("ab"):
        torch.manual_seed(seed)
        model = torchvision.models.resnet50(weights=None)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average: the running statistics of these images
        model.train()
        with torch.no_grad():
            for chunk in calibration.split(8):
                model(chunk)
        torch.save(model.state_dict(), workdir / f"{name}.pth")
        pretrained.convert("torchvision", "resnet50", str(workdir / f"{name}.pth"), str(workdir / f"{name}.npz"))


def torch_route(workdir: str, layers: list[str], batch_size: int, svcca_dir: str) -> dict:
    """The PyTorch route as a user writes it; returns per-block scores and where the time went."""
    start = time.perf_counter()
    import torch
    import torchvision

    sys.path.insert(0, str(Path(svcca_dir).resolve()))
    import cca_core

    workdir = Path(workdir)
    images = np.load(workdir / "images.npy")
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    acts = {}
    for name in "ab":
        model = torchvision.models.resnet50(weights=None)
        model.load_state_dict(torch.load(workdir / f"{name}.pth", weights_only=True))
        model.eval()
        kept = {layer: [] for layer in layers}
        hooks = [
            getattr(model, HOOKS[layer]).register_forward_hook(
                lambda module, inputs, output, layer=layer: kept[layer].append(output.detach().numpy())
            )
            for layer in layers
        ]
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(images[i : i + batch_size]).permute(0, 3, 1, 2).float() / 255.0
                model((x - mean) / std)
        for hook in hooks:
            hook.remove()
        acts[name] = {layer: np.concatenate(parts) for layer, parts in kept.items()}
    forward_s = time.perf_counter() - start
    scores, cca_s = {}, {}
    for layer in layers:
        t = time.perf_counter()
        a, b = (acts[name][layer] for name in "ab")  # (N, C, H, W) -> (C, N*H*W): positions as datapoints
        a, b = (x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1) for x in (a, b))
        result = cca_core.get_cca_similarity(a, b, epsilon=0.0, verbose=False)
        scores[layer] = float(np.mean(result["cca_coef1"]))
        cca_s[layer] = time.perf_counter() - t
    return {"scores": scores, "forward_s": forward_s, "cca_s": cca_s}


def run(argv: list[str], env: dict) -> tuple[str, str, dict]:
    """Runs argv to completion; (stdout, stderr, {wall_s, cpu_s, peak_rss_mb}) of that process alone (its own
    rusage from os.wait4; output goes through files, so a chatty stderr cannot fill a pipe and stall it)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        sys.exit(f"{' '.join(argv[:5])} ... failed:\n{stderr[-3000:]}")
    return (
        stdout,
        stderr,
        {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024},
    )


def _machine() -> str:
    return f"{hostinfo.cpu_model()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--svcca_dir", default="", help="folder holding google/svcca's cca_core.py (a clone)")
    parser.add_argument("--images", type=int, default=64, help="images compared (block4 needs N*49 > 2048 at 224)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass, both routes")
    parser.add_argument("--layers", default=",".join(HOOKS), help="blocks compared")
    parser.add_argument("--workdir", default="", help="keep the checkpoints and images here (default: a temp dir)")
    parser.add_argument("--torch-child", help=argparse.SUPPRESS)
    parser.add_argument("--inputs-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    layers = [name for name in args.layers.split(",") if name]
    if args.inputs_child:
        make_inputs(Path(args.inputs_child), args.images, args.size)
        return
    if args.torch_child:
        print(json.dumps(torch_route(args.torch_child, layers, args.batch_size, args.svcca_dir)))
        return
    if not args.svcca_dir or not (Path(args.svcca_dir) / "cca_core.py").is_file():
        sys.exit(
            f"google/svcca NOT FOUND (--svcca_dir={args.svcca_dir!r} has no cca_core.py). Clone it "
            "(git clone https://github.com/google/svcca DIR) and pass --svcca_dir DIR."
        )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"machine: {_machine()}; load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()  # in a child: every measured process starts from a small parent (its peak RSS)
        inputs = ["--inputs-child", str(workdir), "--images", str(args.images), "--size", str(args.size)]
        run([sys.executable, __file__, *inputs], env)
        print(f"inputs (2 x resnet50 .pth + converted .npz, {args.images} images {args.size} px): "
              f"{time.perf_counter() - start:.0f} s (not timed below)")  # fmt: skip
        env["JAX_COMPILATION_CACHE_DIR"] = str(workdir / "jax_cache")  # empty: the first run of ours is cold
        ours_argv = [
            sys.executable, "-m", "transfusion_jax.analysis", "compare", str(workdir / "a.npz"),
            str(workdir / "b.npz"), "--images", str(workdir / "images.npy"), "--method", "cca", "--positions", "all",
            "--batch-size", str(args.batch_size), "--layers", ",".join(layers),
        ]  # fmt: skip
        results = {}
        for label in ("ours, cold cache", "ours, warm cache"):
            out, _, usage = run(ours_argv, env)
            results[label] = {"scores": {k: v["score"] for k, v in json.loads(out)["layers"].items()}, **usage}
        torch_argv = [
            sys.executable, __file__, "--torch-child", str(workdir), "--svcca_dir", args.svcca_dir,
            "--batch-size", str(args.batch_size), "--layers", ",".join(layers),
        ]  # fmt: skip
        out, _, usage = run(torch_argv, env)
        results["PyTorch + cca_core"] = {**json.loads(out), **usage}
    reference = results["PyTorch + cca_core"]
    print(f"{'route':20} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} " + " ".join(f"{n:>10}" for n in layers))
    for label, r in results.items():
        print(
            f"{label:20} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['peak_rss_mb']:8.0f} "
            + " ".join(f"{r['scores'][n]:10.6f}" for n in layers)
        )
    diffs = {n: abs(results["ours, cold cache"]["scores"][n] - reference["scores"][n]) for n in layers}
    print(
        f"PyTorch route: forward + hooks + to NumPy {reference['forward_s']:.1f} s (process start included); "
        "cca_core per block: " + ", ".join(f"{n} {s:.1f} s" for n, s in reference["cca_s"].items())
    )
    print(
        "largest |score difference| ours vs PyTorch + cca_core: " + ", ".join(f"{n} {d:.1e}" for n, d in diffs.items())
    )
    for label in ("ours, cold cache", "ours, warm cache"):
        print(f"speed-up, {label}: {reference['wall_s'] / results[label]['wall_s']:.1f}x")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
