"""The host side of a batch without decoding workers: grain's synchronous path (a dict per element, then
`MapDataset.batch`) vs the in-thread path (`Dataset._host_batches` with num_workers=0: a batch at a time), on the
miniature study's training split as its runs read it (32 px, decoded once and cached), in one run.

  python benchmarks/bench_host_batches.py            # generates the study's target set in a temporary folder

Prints ms of host time per batch of 32 for each path (after one warm-up epoch that fills the cache, so that both
serve from memory as the study's runs do after their first epoch), their ratio, and checks that both give the same
arrays. The device transform after it is the same for both and not timed here.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=2000, help="timed batches per path")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each path is printed")
    args = parser.parse_args(argv)

    from transfusion_jax import data as data_lib
    from transfusion_jax import hostinfo
    from transfusion_jax.experiments.study import design, execute
    from transfusion_jax.experiments.study.design import RunKey
    from transfusion_jax.experiments.study.recipes import finetune_config

    with tempfile.TemporaryDirectory() as root:
        c = design.get_config("default")
        paths = execute.make_data(root, c, log=lambda _: None)
        config = finetune_config(c, paths, RunKey("large", "full", "random", 0), root)
        dataset = data_lib.build_dataset(config, config.train_split, train=True)
        assert dataset.num_workers == 0 and dataset._load.cache is not None, "the study's runs decode in-thread, cached"
        stream = dataset._stream(config.batch_size, seed=0, epoch_start=0, start_step=0)
        for _ in zip(range(len(dataset) // config.batch_size + 1), dataset._host_batches(stream)):
            pass  # fills the cache

        def per_batch(batches) -> float:
            start = time.perf_counter()
            for _ in zip(range(args.batches), batches):
                pass
            return (time.perf_counter() - start) / args.batches * 1e3

        times = {"grain": [], "in-thread": []}
        for _ in range(args.rounds):
            times["grain"].append(per_batch(dataset._grain_batches(stream, threads=0)))
            times["in-thread"].append(per_batch(dataset._host_batches(stream)))
        for want, got in zip(dataset._grain_batches(stream, threads=0), dataset._host_batches(stream)):
            assert all(np.array_equal(want[k], got[k]) and want[k].dtype == got[k].dtype for k in want)
            break
        print(f"{hostinfo.cpu_model()}, {os.cpu_count()} cores, load {hostinfo.load_average()}")
        best = {k: min(v) for k, v in times.items()}
        for path, ms in best.items():
            print(f"{path:>10}: {ms:.3f} ms per batch of {config.batch_size} (best of {args.rounds} x {args.batches})")
        print(f"grain / in-thread: {best['grain'] / best['in-thread']:.1f}x; the same arrays: yes")


if __name__ == "__main__":
    main()
