"""bench_host_batches end to end at a tiny count: it builds the study's training split as the runs read it, times
both host paths and checks they give the same arrays (the assertion inside fails the script otherwise)."""

import importlib.util
import os

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "bench_host_batches.py")
_SPEC = importlib.util.spec_from_file_location("bench_host_batches", _PATH)
bench_host_batches = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_host_batches)


def test_prints_both_paths_and_their_ratio(capsys):
    bench_host_batches.main(["--batches", "20", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "grain:" in out and "in-thread:" in out
    assert "grain / in-thread:" in out and "the same arrays: yes" in out
