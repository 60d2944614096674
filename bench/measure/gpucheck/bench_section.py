"""Section 2, bench: `sslbench bench`'s measurements (bench.speed) on the sizes of the paper
protocol, each in its own processes; and the grid configuration they found fastest."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sslbench.bench.measure.gpucheck.document import Check
from sslbench.bench.measure.gpucheck.options import Options, Sizes
from sslbench.bench.measure.gpucheck.process import SectionFile, run_child
from sslbench.bench.messages import say


def run_bench(check: Check, reserve_s: float) -> dict[str, Any]:
    """The bench in its own process; it skips the measurements that would eat `reserve_s`."""
    return run_child(check.options, "bench", timeout_s=check.left_s(), reserve_s=reserve_s)


@dataclass(frozen=True)
class Planned:
    """One bench measurement: bench.speed's (name, what, runs per process, jobs), and the
    grid configuration (workers, stack) it stands for, if a grid can run that way."""

    name: str
    what: str
    runs: int
    jobs: list[Any]  # bench.speed.Job
    grid_config: tuple[int, int] | None


def bench_settings(options: Options) -> Any:
    import torch

    from sslbench.bench.core.precision import native_bf16
    from sslbench.bench.measure.speed import BenchSettings

    sizes = options.sizes
    return BenchSettings(
        train_size=sizes.bench_train_size, test_size=sizes.bench_test_size,
        epochs=sizes.bench_epochs, stack=sizes.bench_stack, device=options.device,
        data_root=str(options.root), two_process=False,
        bf16=sizes.bench_bf16 and native_bf16(torch.device(options.device)))


def bench_plan(settings: Any, sizes: Sizes) -> list[Planned]:
    """The measurements in the order run: what picks the grid's configuration first (one
    run, the stack, processes sharing the device), then bigger stacks, bf16, naive."""
    from sslbench.bench.measure import speed

    standard = {name: (what, runs, jobs) for name, what, runs, jobs in speed.plan(settings)}
    config = speed.bench_config(settings).to_dict()

    def harness(seeds: Sequence[int]) -> speed.Job:
        return speed.Job("harness", config, tuple(seeds), settings.device, settings.data_root)

    stack = settings.stack
    planned = [Planned("harness", *standard["harness"], grid_config=(1, 1)),
               Planned(f"stack{stack}", *standard[f"stack{stack}"], grid_config=(1, stack))]
    for processes, each in sizes.bench_processes:
        planned.append(Planned(
            f"{processes} procs x stack{each}",
            f"{processes} processes at once sharing the device, {each} stacked runs each", each,
            [harness(range(p * each, (p + 1) * each)) for p in range(processes)],
            grid_config=(processes, each)))
    # The whole step as one CUDA graph per epoch (train.step_graph; eager from static buffers
    # on the CPU). Measured, not yet chosen for the slice: the slice runs the grid as stored.
    graphed = {**config, "train": {**config["train"], "step_graph": True}}
    planned.append(Planned(
        f"stack{stack} step_graph", f"train_stack, {stack} runs, the whole step as one CUDA "
        f"graph (train.step_graph)", stack,
        [speed.Job("harness", graphed, tuple(range(stack)), settings.device, settings.data_root)],
        grid_config=None))
    for more in sizes.bench_more_stacks:
        planned.append(Planned(f"stack{more}", f"train_stack, {more} runs as one stacked model",
                               more, [harness(range(more))], grid_config=(1, more)))
    if "harness bf16" in standard:
        planned.append(Planned("harness bf16", *standard["harness bf16"], grid_config=None))
    planned.append(Planned("naive", *standard["naive"], grid_config=None))
    return planned


def child_bench(options: Options, deadline: float, partial: SectionFile) -> dict[str, Any]:
    """The planned measurements in order, each only when the longest so far still fits
    before `deadline` (the others listed as skipped); the result rewritten after each."""
    from sslbench.bench.measure import speed

    settings = bench_settings(options)
    speed.validate(settings)  # DataError names the file and the fetch command
    measured: dict[str, speed.Measurement] = {}
    result: dict[str, Any] = {"protocol": _bench_protocol(settings), "measurements": {},
                              "skipped": {}}
    longest_s = options.sizes.measurement_s
    for planned in bench_plan(settings, options.sizes):
        left = deadline - time.time()
        if longest_s > left:  # the longest one so far stands for the next
            result["skipped"][planned.name] = (f"budget: needs ~{longest_s:.0f} s, "
                                               f"{max(left, 0):.0f} s left")
            continue
        say(f"bench: {planned.name}: {planned.what} ...")
        started = time.monotonic()
        measurement = speed.summarize(planned.name, planned.what, planned.runs,
                                      speed.run_processes(planned.jobs))
        wall_s = time.monotonic() - started
        longest_s = max(longest_s if measured else 0.0, wall_s)
        measured[planned.name] = measurement
        result["measurements"][planned.name] = {
            **asdict(measurement), "grid_config": planned.grid_config,
            "wall_s": round(wall_s, 1)}
        say(f"bench: {planned.name}: {measurement.images_per_s:,.0f} train img/s, "
             f"{measurement.epoch_seconds:.2f} s/epoch ({wall_s:.0f} s)")
        result.update(ratios=speed.ratios(measured, settings.stack),
                      fastest=fastest_config(result["measurements"], options.sizes.slice_seeds))
        partial.write("running", result)
    return result


def _bench_protocol(settings: Any) -> dict[str, Any]:
    from sslbench.bench.measure.speed import METHOD as BENCH_METHOD

    return {"method": BENCH_METHOD, "train_images": settings.train_size,
            "test_images": settings.test_size, "epochs": settings.epochs,
            "device": settings.device,
            "images_per_s": "training images per second, median over epochs 2.."
                            f"{settings.epochs} of each process, summed over processes"}


def fastest_config(measurements: dict[str, dict[str, Any]], seeds: int
                   ) -> dict[str, Any] | None:
    """The grid configuration (workers, stack) of the measurement with the most training
    images/s, among those a grid of `seeds` seeds can run (a stack holds one variant's
    seeds, so at most `seeds`); None when none was measured."""
    candidates = {name: m for name, m in measurements.items()
                  if m.get("grid_config") and m["grid_config"][1] <= seeds}
    if not candidates:
        return None
    name = max(candidates, key=lambda n: candidates[n]["images_per_s"])
    workers, stack = candidates[name]["grid_config"]
    return {"measurement": name, "workers": workers, "stack": stack,
            "images_per_s": candidates[name]["images_per_s"],
            "epoch_seconds": candidates[name]["epoch_seconds"],
            "candidates": {n: round(m["images_per_s"]) for n, m in candidates.items()}}
