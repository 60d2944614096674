"""`sslbench bench`: measured throughput of the naive pipeline and the harness, side by side.

On one machine, on the same MNIST slice and number of epochs, it measures:

    naive      the blog's pipeline (`bench.naive`): DataLoader, nn.Module, host syncs
    harness    `bench.train.train_stack` with one run
    harness bf16  the same with bf16 autocast (`train.precision=bf16`), where the device
               computes bf16 natively (or with --bf16)
    stack      `train_stack` with S runs trained as one stacked model
    2 procs    (CPU) two processes at once, one thread and one harness run each

Each measurement runs in its own spawned process (one thread on CPU), one after another
except the two of `2 procs`, which start training together at a barrier. So each memory
figure is that process's own peak, and no measurement slows another down. Images/s are
training images per second (evaluation excluded), the median over epochs after the first
(warm-up), summed over the processes of a measurement.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslbench.bench.errors import UserError
from sslbench.bench.messages import Log
from sslbench.bench.runs.pool import WorkerPool, worker_barrier

if TYPE_CHECKING:
    from sslbench.bench.core.config import RunConfig

METHOD = "temporal_ensembling"
DEFAULT_TRAIN_SIZE = 2000  # the smoke profile's slice
DEFAULT_TEST_SIZE = 1000
DEFAULT_EPOCHS = 3  # the first is warm-up: the figures are the median of epochs 2 and 3
DEFAULT_STACK = 5
DEFAULT_OUT = "report/bench"
THREADS_PER_PROCESS = 1  # on CPU: every pipeline gets one core, so they compare 1:1
TWO_PROCESS_TARGET = 1.7  # CPU: two one-thread processes should give >= 1.7x one alone
SINGLE_RUN_TARGET = 3.0  # CPU: one harness run should give >= 3x the naive pipeline
STACK_TARGET = 5.0  # GPU: S stacked runs should give >= 5x the img/s of S sequential runs
MIN_TRAIN_SIZE = 100  # the labeled images of the mnist100 protocol
BARRIER_TIMEOUT_S = 600.0  # generous: a cold machine may take minutes to import and load



@dataclass(frozen=True)
class BenchSettings:
    train_size: int = DEFAULT_TRAIN_SIZE
    test_size: int = DEFAULT_TEST_SIZE
    epochs: int = DEFAULT_EPOCHS
    stack: int = DEFAULT_STACK
    device: str = "cpu"  # resolved: cpu or cuda[:N]
    data_root: str = ""
    two_process: bool = True
    bf16: bool = False  # also measure the harness with train.precision=bf16


@dataclass(frozen=True)
class Job:
    """What one measuring process trains: `kind` is "naive" or "harness"."""

    kind: str
    config: dict[str, Any]  # RunConfig.to_dict()
    seeds: tuple[int, ...]
    device: str
    data_root: str


@dataclass
class Measurement:
    name: str
    what: str
    runs: int  # runs trained per process
    processes: int
    images_per_s: float  # summed over processes
    epoch_seconds: float  # median over epochs after the first; the slowest process
    peak_memory_mib: float  # the largest process's peak
    final_test_accuracy: list[float]  # per run, fraction in [0, 1]
    device: str
    torch_version: str
    per_process: list[dict[str, Any]] = field(default_factory=list)


# -- settings and configs -------------------------------------------------------------------


def validate(settings: BenchSettings) -> None:
    """Raise UserError naming the flag and the fix; checks the data files too."""
    from sslbench.bench.core.datasets import MNIST, MNIST_TRAIN, verify

    if settings.stack < 1:
        raise UserError(f"--stack must be >= 1 (runs trained as one stack), got {settings.stack}")
    if settings.epochs < 2:
        raise UserError(f"--epochs must be >= 2: the first epoch is warm-up and is not "
                        f"counted; got {settings.epochs}")
    if not MIN_TRAIN_SIZE <= settings.train_size <= MNIST_TRAIN:
        raise UserError(f"--train-size must be between {MIN_TRAIN_SIZE} (the labeled images) "
                        f"and {MNIST.num_train:,}, got {settings.train_size}")
    if not 1 <= settings.test_size <= 10_000:
        raise UserError(f"--test-size must be between 1 and 10,000, got {settings.test_size}")
    verify(Path(settings.data_root), MNIST)  # DataError: says which file and how to fetch


def bench_config(settings: BenchSettings, seed: int = 0) -> RunConfig:
    """The temporal-ensembling config of every pipeline: smoke profile, the bench's slice."""
    from sslbench.bench.core.overrides import build_config

    return build_config(METHOD, seed, "smoke", {
        "data.train_size": settings.train_size, "data.test_size": settings.test_size,
        "train.epochs": settings.epochs})


# -- one measuring process --------------------------------------------------------------------


def process_peak_mib(device_name: str) -> float:
    """This process's own peak memory (MiB): CUDA allocator peak, else the resident set
    (VmHWM on Linux; see bench.throughput.peak_memory_mib)."""
    import torch

    from sslbench.bench.core.throughput import peak_memory_mib

    return peak_memory_mib(torch.device(device_name))


def _train(job: Job, barrier: Any) -> dict[str, Any]:
    """Load the data, wait for the siblings, train; return the figures of this process."""
    import torch

    from sslbench.bench.core.config import config_from_dict
    from sslbench.bench.core.data import prepare
    from sslbench.bench.core.throughput import device_name, reset_peak_memory
    from sslbench.bench.core.train import train_stack
    from sslbench.bench.measure.naive import train_naive

    if job.device == "cpu":
        torch.set_num_threads(THREADS_PER_PROCESS)
    device, root = torch.device(job.device), Path(job.data_root)
    config = config_from_dict(job.config)
    if job.kind == "naive":
        barrier.wait(BARRIER_TIMEOUT_S)  # never run beside another: nothing to load first
        reset_peak_memory(device)
        naive = train_naive(config, device=device, data_root=root)
        curves = {"train_images_per_s": naive.train_images_per_s,
                  "epoch_seconds": naive.epoch_seconds, "train_loss": naive.train_loss}
        accuracy = [naive.final_test_accuracy]
        precision = "fp32"
    else:
        data = prepare(config.data, job.seeds, root, device)
        barrier.wait(BARRIER_TIMEOUT_S)
        runs = train_stack(config, job.seeds, device=device, data_root=root, data=data)
        # The per-epoch figures are shared by the stack; the loss is the first run's.
        curves = {k: runs[0].curves[k]
                  for k in ("train_images_per_s", "epoch_seconds", "train_loss")}
        accuracy = [run.final_test_accuracy for run in runs]
        precision = runs[0].precision
    return {"pid": os.getpid(), "device": device_name(device), "torch_version": torch.__version__,
            "peak_memory_mib": process_peak_mib(job.device), "final_test_accuracy": accuracy,
            "precision": precision, **curves}


def _measure(job: Job) -> dict[str, Any]:
    """A measuring process's job: train at the barrier, or open it for the siblings on
    failure, so that none of them waits for a process that will never come."""
    barrier = worker_barrier()
    try:
        return _train(job, barrier)
    except BaseException:
        barrier.abort()
        raise


def run_processes(jobs: Sequence[Job], target: Callable[[Job], dict[str, Any]] = _measure
                  ) -> list[dict[str, Any]]:
    """Run the jobs at once, each in a fresh spawned process of bench.pool (their workers
    share a barrier, `worker_barrier()`); return their reports in job order."""
    reports: dict[int, dict[str, Any]] = {}
    with WorkerPool[int, dict[str, Any]](len(jobs), THREADS_PER_PROCESS, spawn=True,
                                         fresh_processes=True, barrier=True,
                                         catch_signals=False) as pool:
        for slot, job in enumerate(jobs):
            pool.submit(slot, target, job)
        while pool.in_flight:
            for slot, future in pool.poll():
                error = future.exception()
                if isinstance(error, UserError):
                    raise error
                if isinstance(error, BrokenProcessPool):  # killed, out of memory, os._exit
                    raise RuntimeError(f"measuring process {slot} ended without a result "
                                       f"({error})") from None
                if error is not None:
                    trace = "".join(traceback.format_exception(error))
                    raise RuntimeError(f"measuring process {slot} failed:\n{trace}") from None
                reports[slot] = future.result()
    return [reports[slot] for slot in range(len(jobs))]


# -- measurements -----------------------------------------------------------------------------


def summarize(name: str, what: str, runs: int, reports: Sequence[dict[str, Any]]
              ) -> Measurement:
    """One measurement from its processes' reports (per-epoch figures per process)."""
    from sslbench.bench.core.throughput import steady_median

    return Measurement(
        name=name, what=what, runs=runs, processes=len(reports),
        images_per_s=sum(steady_median(r["train_images_per_s"]) for r in reports),
        epoch_seconds=max(steady_median(r["epoch_seconds"]) for r in reports),
        peak_memory_mib=max(r["peak_memory_mib"] for r in reports),
        final_test_accuracy=[a for r in reports for a in r["final_test_accuracy"]],
        device=reports[0]["device"], torch_version=reports[0]["torch_version"],
        per_process=list(reports))


def plan(settings: BenchSettings) -> list[tuple[str, str, int, list[Job]]]:
    """(name, what, runs per process, jobs) of every measurement, in the order run."""
    config = bench_config(settings).to_dict()

    def job(kind: str, seeds: Sequence[int], run_config: dict[str, Any] = config) -> Job:
        return Job(kind, run_config, tuple(seeds), settings.device, settings.data_root)

    stack = settings.stack
    measurements = [
        ("naive", "the blog's pipeline: torchvision DataLoader, nn.Module, host syncs", 1,
         [job("naive", [0])]),
        ("harness", "train_stack, one run", 1, [job("harness", [0])]),
    ]
    if settings.bf16:
        bf16 = {**config, "train": {**config["train"], "precision": "bf16"}}
        measurements.append(("harness bf16", "train_stack, one run, bf16 autocast", 1,
                             [job("harness", [0], bf16)]))
    measurements += [
        (f"stack{stack}", f"train_stack, {stack} runs as one stacked model", stack,
         [job("harness", range(stack))]),
    ]
    if settings.two_process:
        measurements.append(("2 processes", "two processes at once, one harness run each", 1,
                             [job("harness", [0]), job("harness", [1])]))
    return measurements


def ratios(pipelines: dict[str, Measurement], stack: int) -> dict[str, dict[str, Any]]:
    """Quotients of measured images/s: {name: {value, numerator, denominator, what}}."""
    wanted = [
        ("harness_vs_naive", "harness", "naive", "harness 1 run / naive"),
        ("bf16_vs_naive", "harness bf16", "naive", "harness 1 run in bf16 / naive"),
        ("bf16_vs_fp32", "harness bf16", "harness", "harness 1 run: bf16 / fp32"),
        ("stack_vs_single", f"stack{stack}", "harness",
         f"{stack} stacked runs (aggregate) / 1 run"),
        ("two_process_vs_one", "2 processes", "harness", "2 processes / 1 process"),
    ]
    return {key: {"value": pipelines[num].images_per_s / pipelines[den].images_per_s,
                  "numerator": num, "denominator": den, "what": what}
            for key, num, den, what in wanted if num in pipelines and den in pipelines}


def _load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def run_bench(settings: BenchSettings, log: Log) -> dict[str, Any]:
    """Validate, measure every pipeline one after another, return the JSON document."""
    import torch
    import torchvision

    validate(settings)
    started = dt.datetime.now(dt.UTC)
    load_start = _load_average()
    pipelines: dict[str, Measurement] = {}
    steps = plan(settings)
    for number, (name, what, runs, jobs) in enumerate(steps, 1):
        log(f"bench [{number}/{len(steps)}] {name}: {what}; {settings.train_size:,} images x "
            f"{settings.epochs} epochs ...")
        measured = summarize(name, what, runs, run_processes(jobs))
        pipelines[name] = measured
        log(f"bench [{number}/{len(steps)}] {name}: {measured.images_per_s:,.0f} train img/s, "
            f"{measured.epoch_seconds:.2f} s/epoch, peak {measured.peak_memory_mib:,.0f} MiB "
            f"per process")
    first = next(iter(pipelines.values()))
    return {
        "schema": "sslbench-bench/1",
        "created": started.isoformat(timespec="seconds"),
        "protocol": {
            "method": METHOD, "train_images": settings.train_size,
            "test_images": settings.test_size, "epochs": settings.epochs,
            "stack": settings.stack, "batch_size": bench_config(settings).train.batch_size,
            "threads_per_process": THREADS_PER_PROCESS if settings.device == "cpu" else None,
            "images_per_s": "training images per second, median over epochs 2.."
                            f"{settings.epochs} of each process, summed over processes",
            "memory": _memory_note(settings.device),
        },
        "environment": {
            "device": first.device, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "load_average_start": load_start,
            "load_average_end": _load_average(),
        },
        "pipelines": {name: asdict(m) for name, m in pipelines.items()},
        "ratios": ratios(pipelines, settings.stack),
        "two_process_target": TWO_PROCESS_TARGET if settings.device == "cpu" else None,
        "single_run_target": SINGLE_RUN_TARGET if settings.device == "cpu" else None,
        "stack_target": STACK_TARGET if settings.device != "cpu" else None,
        "skipped": {} if settings.two_process else {"2 processes": _why_skipped(settings)},
    }


def _why_skipped(settings: BenchSettings) -> str:
    if settings.device != "cpu":
        return "a CPU check: two one-thread processes against one"
    if (os.cpu_count() or 1) < 2:
        return "fewer than 2 CPU cores"
    return "--no-two-process"


def _memory_note(device: str) -> str:
    if device.startswith("cuda"):
        return "peak of the CUDA caching allocator, per process"
    return ("peak resident set (VmHWM) of each measuring process, its own only: Python, "
            "torch and the data included")


# -- output -----------------------------------------------------------------------------------


def render_markdown(doc: dict[str, Any]) -> str:
    protocol, env = doc["protocol"], doc["environment"]
    lines = [
        "# sslbench bench: measured throughput", "",
        f"Temporal ensembling on the first {protocol['train_images']:,} MNIST training images "
        f"({protocol['test_images']:,} test), {protocol['epochs']} epochs, batch "
        f"{protocol['batch_size']}. Images/s: {protocol['images_per_s']}.", "",
        f"Device: {env['device']}; torch {env['torch']}, torchvision {env['torchvision']}, "
        f"Python {env['python']}; {env['cpu_count']} CPU cores; load average "
        f"{_load(env['load_average_start'])} at start, {_load(env['load_average_end'])} at end "
        f"(a busy machine lowers every figure). Measured {doc['created']}.", "",
        "| pipeline | what | runs x processes | train img/s | s / epoch | peak MiB per process "
        "| final test acc |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, m in doc["pipelines"].items():
        accuracy = sum(m["final_test_accuracy"]) / len(m["final_test_accuracy"])
        lines.append(f"| {name} | {m['what']} | {m['runs']} x {m['processes']} | "
                     f"{m['images_per_s']:,.0f} | {m['epoch_seconds']:.2f} | "
                     f"{m['peak_memory_mib']:,.0f} | {accuracy:.1%} |")
    lines += ["", "| ratio of train img/s | value | note |", "|---|---:|---|"]
    for key, r in doc["ratios"].items():
        lines.append(f"| {r['what']} | {r['value']:.2f}x | {_ratio_note(key, r, doc)} |")
    for name, reason in doc["skipped"].items():
        lines.append(f"| {name} | skipped | {reason} |")
    lines += ["", f"Memory: {protocol['memory']}.", ""]
    return "\n".join(lines)


def _ratio_note(key: str, ratio: dict[str, Any], doc: dict[str, Any]) -> str:
    if key == "stack_vs_single":
        per_run = ratio["value"] / doc["protocol"]["stack"]
        note = f"{per_run:.2f} of a lone run's speed per stacked run"
        if doc.get("stack_target") is not None:
            met = "met" if ratio["value"] >= doc["stack_target"] else "NOT met"
            note += f"; GPU target >= {doc['stack_target']}x: {met}"
        return note
    if key in ("harness_vs_naive", "bf16_vs_naive") and doc.get("single_run_target") is not None:
        met = "met" if ratio["value"] >= doc["single_run_target"] else "NOT met"
        return f"CPU target >= {doc['single_run_target']}x: {met}"
    if key == "two_process_vs_one" and doc["two_process_target"] is not None:
        met = "met" if ratio["value"] >= doc["two_process_target"] else "NOT met"
        return f"CPU target >= {doc['two_process_target']}x: {met}"
    return ""


def _load(values: list[float] | None) -> str:
    return "n/a" if values is None else " / ".join(f"{v:.2f}" for v in values)
