"""Throughput and memory measurement shared by the training loop and the benchmarks."""

from __future__ import annotations

import resource
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: the caching allocator's peak (MiB). CPU: the process's peak resident set (MiB).

    On Linux the peak comes from /proc/self/status (VmHWM): ru_maxrss of a spawned worker
    starts at its parent's peak, which would charge the runner's memory to every cell.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB -> MiB
    except OSError:
        pass  # not Linux: fall back to ru_maxrss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def steady_median(values: Sequence[float]) -> float:
    """Median over epochs after the first (the first pays for warm-up and allocation)."""
    steady = list(values[1:]) or list(values)
    return statistics.median(steady) if steady else float("nan")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
