"""Input-pipeline throughput: decode + resize + augment + normalise + batch into a jax.Array, in images/s.

Reads a generated Kaggle-layout Retina folder (fundus JPEGs 640 px tall in a 853 x 640 frame, about the
size of the btgraham-300 / 250K TFDS configs) through the real `retina_folder` reader with train augmentation,
at 224 and 587 px, with 1 and 2 worker processes and threads, and without augmentation (eval, 2 threads).
Reference in the same run: a plain single-threaded Pillow loop that only decodes and resizes the same files.

  python benchmarks/bench_input.py [--num_images 256] [--batch 32] [--batches 6]
"""

import argparse
import os
import tempfile
import time

import jax
import numpy as np
from PIL import Image

from transfusion_jax.data import build_dataset, default_data_config, generate


def pillow_reference(paths, size):
    start = time.perf_counter()
    for path in paths:
        image = Image.open(path)
        image.draft("RGB", (size, size))
        np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
    return len(paths) / (time.perf_counter() - start)


def pipeline_rate(root, size, workers, worker_type, batch, batches, mesh, train=True):
    c = default_data_config()
    c.update(dict(name="retina_folder", root=root, image_size=size, num_workers=workers, worker_type=worker_type))
    iterator = build_dataset(c, "train", train=train).batches(batch, mesh=mesh, seed=0)
    jax.block_until_ready(next(iterator))  # worker start-up and first batch excluded
    start = time.perf_counter()
    for _ in range(batches):  # eval passes are finite: batches must not exceed num_images / batch - 1
        jax.block_until_ready(next(iterator))
    rate = batches * batch / (time.perf_counter() - start)
    iterator.close()
    return rate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    with tempfile.TemporaryDirectory() as root:
        generate.write_kaggle_dr(root, args.num_images, seed=0, size=640)
        paths = [os.path.join(root, "train", f) for f in sorted(os.listdir(os.path.join(root, "train")))]
        print(f"{os.cpu_count()} CPUs; {args.num_images} JPEGs 853x640; batch {args.batch}; images/s")
        print(
            f"{'size':>5} {'pillow loop (ref)':>18} {'1 proc':>8} {'2 proc':>8} {'1 thread':>9} {'2 threads':>10} "
            f"{'2 thr no aug':>13}"
        )
        for size in (224, 587):
            reference = pillow_reference(paths, size)
            rates = [
                pipeline_rate(root, size, w, kind, args.batch, args.batches, mesh)
                for kind in ("process", "thread")
                for w in (1, 2)
            ]
            rates.append(pipeline_rate(root, size, 2, "thread", args.batch, args.batches, mesh, train=False))
            print(
                f"{size:>5} {reference:>18.1f} {rates[0]:>8.1f} {rates[1]:>8.1f} {rates[2]:>9.1f} {rates[3]:>10.1f} "
                f"{rates[4]:>13.1f}"
            )


if __name__ == "__main__":
    main()
