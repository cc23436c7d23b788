"""The study's budget, measured (docs/study.md, round 7 R7.10): the README's main command from a cold start, its
wall time and its peak memory, on this machine, with the load average beside them.

  python benchmarks/study_budget.py --workdir DIR [--variant default] [-- --config.FIELD=VALUE ...]

Runs `python -m transfusion_jax.experiments.quickstart --workdir DIR/study` as a child process in a fresh DIR (so the
compilation cache DIR/study/jax_cache starts cold) and samples, every 0.2 s, the summed resident memory of the child
and all its descendants from /proc (the data generators' worker processes included): an independent check of the
peak the report's header gives from `resource.getrusage`. Prints one table row for BENCHMARKS.md / docs/study.md;
`--timeline FILE` keeps every sample, with how far the log had got, to place the peak.
The budget the issue sets: <= 10 min wall and <= 2 GB peak on an idle 2-core CPU.
"""

import argparse
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout

from transfusion_jax.hostinfo import cpu_model  # noqa: E402


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and every descendant (each process's VmRSS; pages shared between them counted once
    per process, so an upper bound when processes share pages)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        todo += _children(p)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a new folder: the study runs in DIR/study")
    parser.add_argument("--variant", default="default", choices=("default", "scale", "mini"))
    parser.add_argument(
        "--timeline",
        default="",
        help="also write every sample to this CSV: seconds, resident bytes of the tree, and the log's line count then "
        "(which line of quickstart.log the run had reached: where a peak falls)",
    )
    args, extra = parser.parse_known_args()
    study_dir = os.path.join(os.path.abspath(args.workdir), "study")
    if os.path.exists(study_dir):
        parser.error(f"{study_dir} exists: the measurement needs a fresh DIR (a cold compilation cache)")
    command = [sys.executable, "-m", "transfusion_jax.experiments.quickstart", "--workdir", study_dir]
    command += [] if args.variant == "default" else [f"--{args.variant}"]
    command += [x for x in extra if x != "--"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the study's own, cold, cache
    load_start, start = os.getloadavg(), time.perf_counter()
    os.makedirs(os.path.abspath(args.workdir), exist_ok=True)
    log_path = os.path.join(os.path.abspath(args.workdir), "quickstart.log")
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        peak, samples = 0, []
        while child.poll() is None:
            rss = tree_rss(child.pid)
            peak = max(peak, rss)
            if args.timeline:
                with open(log_path) as f:
                    samples.append((time.perf_counter() - start, rss, sum(1 for _ in f)))
            time.sleep(0.2)
    if args.timeline:
        with open(args.timeline, "w") as f:
            f.write("seconds,resident_bytes,log_lines\n")
            f.writelines(f"{t:.2f},{rss},{lines}\n" for t, rss, lines in samples)
    wall, load_end = time.perf_counter() - start, os.getloadavg()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"command: {' '.join(command[1:])} (exit {child.returncode}; log {log_path})")
    print("| variant | wall (min) | peak resident memory, process tree (GiB) | load average start / end | exit |")
    print("|---|---|---|---|---|")
    print(f"| {args.variant} | {wall / 60:.2f} | {peak / 2**30:.2f} | {load_start[0]:.1f} / {load_end[0]:.1f} | "
          f"{child.returncode} |")  # fmt: skip
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
