"""What machine a number was measured on: reports and benchmarks print it beside every timing."""

import os
import platform


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (platform.processor() is often empty or just 'x86_64')."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())
