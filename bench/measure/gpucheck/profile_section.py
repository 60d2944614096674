"""Section 3, profile: torch.profiler over a few `train_step`s of each stack, in a process
of its own: ms per step, kernels per step, the share of the time the GPU is busy, top ops."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from sslbench.bench.files import write_text_atomic
from sslbench.bench.measure.gpucheck.document import Check
from sslbench.bench.measure.gpucheck.options import METHOD, PROFILE_EPOCH, Options
from sslbench.bench.measure.gpucheck.process import SectionFile, run_child
from sslbench.bench.messages import say


def run_profile(check: Check, reserve_s: float) -> dict[str, Any]:
    """The profile in its own process, killed at the budget's end."""
    return run_child(check.options, "profile", timeout_s=check.left_s(), reserve_s=reserve_s)


def child_profile(options: Options, deadline: float, partial: SectionFile) -> dict[str, Any]:
    """Each stack's figures, and its profiler table in profile-stackN.txt; the result
    rewritten after each stack."""
    from sslbench.bench.core.datasets import MNIST, verify
    from sslbench.bench.core.overrides import build_config

    del deadline  # a few steps per stack: the parent's estimate covers them all
    sizes = options.sizes
    verify(options.root, MNIST)
    config = build_config(METHOD, 0, sizes.slice_profile,
                          {"data.train_size": sizes.profile_train_size})
    result: dict[str, Any] = {"method": METHOD, "train_images": sizes.profile_train_size,
                              "warmup_steps": sizes.profile_warmup_steps,
                              "steps": sizes.profile_steps, "stacks": {}}
    for runs in sizes.profile_stacks:
        say(f"profile: stack of {runs} ...")
        figures, table = profile_stack(config, runs, options)
        write_text_atomic(options.out / f"profile-stack{runs}.txt", table)
        result["stacks"][str(runs)] = {**figures, "table": f"profile-stack{runs}.txt"}
        partial.write("running", result)
    return result


def profile_stack(config: Any, runs: int, options: Options) -> tuple[dict[str, Any], str]:
    """A stack's steps: untimed warm-up, timed steps, profiled steps. The figures and the
    profiler's table of the most expensive operations."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from sslbench.bench.core.data import prepare
    from sslbench.bench.core.train import init_state, start_epoch

    sizes, device = options.sizes, torch.device(options.device)
    seeds = list(range(runs))
    state = init_state(config, seeds, prepare(config.data, seeds, options.root, device), device)
    start_epoch(state)
    weight = torch.tensor(state.method.weight(PROFILE_EPOCH), device=device)
    warmup, count = sizes.profile_warmup_steps, sizes.profile_steps
    step_ms = seconds_per_step(state, weight, warmup, count) * 1000
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        run_steps(state, weight, warmup + count, count)
        wall_us = (time.perf_counter() - started) * 1e6
    figures = {"runs": runs, "ms_per_step": round(step_ms, 3),
               "train_images_per_s": round(runs * state.plan.batch_size / step_ms * 1000),
               **event_counts(list(prof.events()), count, wall_us, step_ms * 1000)}
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return figures, prof.key_averages().table(sort_by=sort_by, row_limit=15)


def run_steps(state: Any, weight: Any, first: int, count: int) -> None:
    """`count` training steps from batch `first` (wrapping round the epoch), then wait for
    the device: the time is the work's, not its launch's."""
    import torch

    from sslbench.bench.core.train import batch_indices, train_step

    for step in range(first, first + count):
        train_step(state, batch_indices(state, step % state.plan.steps), weight, PROFILE_EPOCH)
    if state.device.type == "cuda":
        torch.cuda.synchronize(state.device)


def seconds_per_step(state: Any, weight: Any, warmup: int, count: int) -> float:
    """`warmup` untimed steps (allocations, autotuning), then the mean wall time of the next
    `count` steps, in seconds, the device's work included."""
    run_steps(state, weight, 0, warmup)
    started = time.perf_counter()
    run_steps(state, weight, warmup, count)
    return (time.perf_counter() - started) / count


def event_counts(events: Sequence[Any], steps: int, wall_us: float, step_us: float
                 ) -> dict[str, Any]:
    """Per step: the device's kernels and memory copies/sets, and the outermost aten ops
    (what Python dispatched); the GPU's busy share: device work per step (the union of
    its intervals) over the step's time unprofiled (`step_us`: the profiler slows the
    host, not the kernels it times). Device figures are None on the CPU."""
    from torch.autograd import DeviceType

    on_device = [e for e in events if e.device_type == DeviceType.CUDA]
    copies = [e for e in on_device if e.name.startswith(("Memcpy", "Memset"))]
    aten = [e for e in events if e.device_type == DeviceType.CPU and e.name.startswith("aten::")
            and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))]
    busy_us = union_us([(e.time_range.start, e.time_range.end) for e in on_device])
    device_figures: dict[str, float | None] = {
        "kernels_per_step": (len(on_device) - len(copies)) / steps,
        "copies_per_step": len(copies) / steps,
        "gpu_busy_fraction": round(min(1.0, busy_us / steps / step_us), 4),
        "gpu_busy_fraction_profiled": round(busy_us / wall_us, 4)}
    if not on_device:  # the CPU: no device work to count
        device_figures = dict.fromkeys(device_figures)
    return {**device_figures, "aten_ops_per_step": len(aten) / steps,
            "profiled_ms_per_step": round(wall_us / steps / 1000, 3)}


def union_us(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length of the union of [start, end) intervals (overlaps counted once)."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
