"""`sslbench gpucheck` (`nox -s gpu`): a GPU machine's first minutes, as one prepared command.

GPU time comes seldom and short (about 15 minutes, start-up included), so one call checks
and measures everything, within a hard time budget (`--budget-s`, default 480), and leaves
one folder to commit, `reports/results/gpu-<device>/`:

    correctness   `pytest -m cuda tests/test_cuda.py` on the device: stacks against
                  sequential runs, checkpoints of the device's generators, CUDA graphs,
                  bf16, chunked evaluation (junit.xml beside the figures)
    bench         `sslbench bench`'s measurements on all 60,000 images: one run, stacks of
                  5 and 10, 2 and 4 processes sharing the device (5 runs each), bf16, naive
    profile       torch.profiler over a few `train_step`s of stacks of 1, 5 and 10: ms per
                  step, kernels per step, the share of the time the GPU is busy, top ops
    paper_slice   the mnist100 grid, 5 seeds, the first N epochs of the paper protocol, in
                  the (workers, stack) the bench found fastest; then the wall time of the
                  whole 300-epoch grid as a projection, its arithmetic written out

Each section runs in a process of its own (its own process group: a CUDA fault or a hang
ends there, and the group is killed at the deadline). Before a section starts, its
estimated cost is held against the time left; one that does not fit is listed as skipped
with both figures, never dropped. results.json and summary.md are rewritten after every
section, and each section rewrites sections/NAME.json after every measurement, so a call
killed from outside still leaves what it had.

`--device cpu --tiny` runs the same sections on tiny sizes in about a minute: CI runs it,
so the plumbing is tested before a GPU sees it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

from sslbench.bench.errors import UserError
from sslbench.bench.files import check_writable, write_text_atomic
from sslbench.bench.messages import Log, say

SECTIONS = ("correctness", "bench", "profile", "paper_slice")
DEFAULT_BUDGET_S = 480.0  # about 8 of the 15 minutes a GPU machine is lent, start-up included
TEST_DEVICE_ENV = "SSLBENCH_TEST_DEVICE"  # the device tests/test_cuda.py runs on
REPO = Path(__file__).resolve().parent.parent  # a source checkout: tests/ sits beside bench/
# The cuda-marked tests: the engine on the device, and the whole-step CUDA graph.
CUDA_TESTS = (Path("tests") / "test_cuda.py", Path("tests") / "test_step_graph.py")
SCHEMA = "sslbench-gpucheck/1"
GRID = "mnist100"
METHOD = "temporal_ensembling"
PROFILE_EPOCH = 1  # steps as in epoch 2: w(t) > 0, the ensemble targets in use
TAIL_LINES = 12  # of a traceback or a log, kept in results.json
EVAL_SHARE = 1.2  # a grid epoch's cost over its training steps alone: evaluation, records



@dataclass(frozen=True)
class Sizes:
    """What the sections measure: FULL on a GPU, TINY for the CPU plumbing run."""

    name: str
    bench_train_size: int
    bench_test_size: int
    bench_epochs: int  # the first is warm-up (bench.speed)
    bench_stack: int  # bench.speed's stacked measurement
    bench_more_stacks: tuple[int, ...]  # further stacks, one process each
    bench_processes: tuple[tuple[int, int], ...]  # (processes, stack each) sharing the device
    bench_bf16: bool  # also bf16 autocast, where the device computes it natively
    profile_stacks: tuple[int, ...]
    profile_train_size: int
    profile_warmup_steps: int  # untimed: allocation, cuDNN's choices, first-call dispatch
    profile_steps: int  # timed, then profiled
    slice_profile: str
    slice_seeds: int
    slice_variants: tuple[str, ...]  # () = every variant of the grid
    slice_epochs: int  # --epochs-slice default
    slice_min_epochs: int  # below this the slice is skipped rather than shortened
    # Costs (s) before anything was measured. FULL: guesses, no GPU has run this yet; put
    # the first GPU run's figures here. TINY: measured on this project's 2-core CPU.
    correctness_s: float
    measurement_s: float  # one bench measurement: spawn, import, load, epochs
    profile_s: float
    job_start_s: float  # a grid job before its first epoch: data, model, store
    slice_epoch_s: float  # a grid job's epoch when the bench measured none


FULL = Sizes(
    name="full", bench_train_size=60_000, bench_test_size=10_000, bench_epochs=3,
    bench_stack=5, bench_more_stacks=(10,), bench_processes=((2, 5), (4, 5)), bench_bf16=True,
    profile_stacks=(1, 5, 10), profile_train_size=60_000, profile_warmup_steps=20,
    profile_steps=20, slice_profile="paper", slice_seeds=5, slice_variants=(), slice_epochs=3,
    slice_min_epochs=2, correctness_s=150, measurement_s=30, profile_s=45, job_start_s=5,
    slice_epoch_s=3)
TINY = Sizes(
    name="tiny", bench_train_size=300, bench_test_size=200, bench_epochs=2, bench_stack=2,
    bench_more_stacks=(), bench_processes=((2, 1),), bench_bf16=False, profile_stacks=(1, 2),
    profile_train_size=500, profile_warmup_steps=3, profile_steps=5, slice_profile="smoke",
    slice_seeds=2, slice_variants=("control", "supervised"), slice_epochs=2,
    slice_min_epochs=1, correctness_s=25, measurement_s=6, profile_s=6, job_start_s=5,
    slice_epoch_s=1)


@dataclass(frozen=True)
class Options:
    device: str  # resolved: cpu, cuda
    tiny: bool
    budget_s: float
    out: Path
    root: Path
    epochs_slice: int
    sections: tuple[str, ...]

    @property
    def sizes(self) -> Sizes:
        return TINY if self.tiny else FULL


class CheckStopped(Exception):
    """SIGTERM or SIGINT reached the check: stop, kill the section, write what there is."""


# -- the parent: sections in order, each against the budget ------------------------------------


class Check:
    """The document being written (results.json) and the deadline it is written against."""

    def __init__(self, options: Options, log: Log) -> None:
        self.options, self.log = options, log
        self.started = time.monotonic()
        self.deadline = self.started + options.budget_s
        self.doc: dict[str, Any] = {
            "schema": SCHEMA,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command_line(options),
            "sizes": asdict(options.sizes),
            "budget_s": options.budget_s,
            "environment": environment(options.device),
            "sections": {name: {"status": "pending"} for name in SECTIONS},
        }

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def section(self, name: str) -> dict[str, Any]:
        section: dict[str, Any] = self.doc["sections"][name]
        return section

    def save(self) -> None:
        self.doc["elapsed_s"] = round(time.monotonic() - self.started, 1)
        out = self.options.out
        write_text_atomic(out / "results.json", json.dumps(self.doc, indent=1) + "\n")
        write_text_atomic(out / "summary.md", render_summary(self.doc))


def run_check(options: Options, log: Log) -> dict[str, Any]:
    """Every section in order, each only when it fits in the time left; the document."""
    check = Check(options, log)
    check.save()
    for number, name in enumerate(SECTIONS, 1):
        try:
            outcome = _section_outcome(check, name, number)
        except CheckStopped as stop:
            _record_stop(check, name, str(stop))
            break
        check.section(name).update(outcome)
        check.save()
        log(f"gpucheck [{number}/{len(SECTIONS)}] {name}: {_one_line(outcome)}")
    check.save()
    return check.doc


def _section_outcome(check: Check, name: str, number: int) -> dict[str, Any]:
    if name not in check.options.sections:
        return {"status": "skipped", "why": "not selected (--sections)"}
    needs, estimate, left = needs_s(check, name), estimate_s(check, name), check.left_s()
    if needs > left:
        return {"status": "skipped", "estimate_s": round(estimate),
                "why": f"budget: needs ~{needs:.0f} s, {max(left, 0):.0f} s left"}
    check.log(f"gpucheck [{number}/{len(SECTIONS)}] {name}: ~{estimate:.0f} s estimated, "
              f"{left:.0f} s left ...")
    check.section(name).update(status="running", estimate_s=round(estimate))
    check.save()
    started = time.monotonic()
    outcome = SECTION_RUNNERS[name](check)
    return {"estimate_s": round(estimate), **outcome,
            "seconds": round(time.monotonic() - started, 1)}


def _record_stop(check: Check, current: str, why: str) -> None:
    for name in SECTIONS[SECTIONS.index(current):]:
        section = check.section(name)
        if section["status"] == "running":  # with what its process had written
            written = _read_json(check.options.out / "sections" / f"{name}.json")
            section.update(status="stopped", why=why, result=written.get("result", {}))
        elif section["status"] == "pending":
            section.update(status="skipped", why=f"the check was stopped ({why})")


def _one_line(outcome: dict[str, Any]) -> str:
    detail = outcome.get("why") or outcome.get("error") or outcome.get("note") or ""
    return outcome["status"] + (f" ({detail})" if detail else "")


def passed(doc: dict[str, Any]) -> bool:
    """Every section that ran passed (skipped ones allowed)."""
    return all(s["status"] in ("ok", "skipped") for s in doc["sections"].values())


# -- estimates ---------------------------------------------------------------------------------


def estimate_s(check: Check, name: str) -> float:
    """The seconds a whole section is expected to take (Sizes' figures; the slice's from
    the bench's measured epoch when there is one)."""
    sizes = check.options.sizes
    if name == "correctness":
        return sizes.correctness_s
    if name == "bench":
        return sizes.measurement_s * len(bench_plan(bench_settings(check.options), sizes))
    if name == "profile":
        return sizes.profile_s
    plan = slice_plan(check)
    return slice_estimate_s(plan, plan["epochs"])


def needs_s(check: Check, name: str) -> float:
    """The seconds a section needs to start: its estimate, except the bench's, which is
    its first two measurements (it skips the others itself when they do not fit)."""
    if name == "bench":
        return 2 * check.options.sizes.measurement_s
    if name == "paper_slice":  # at its fewest epochs
        plan = slice_plan(check)
        return slice_estimate_s(plan, min(plan["epochs"], check.options.sizes.slice_min_epochs))
    return estimate_s(check, name)


def reserve_s(check: Check, name: str) -> float:
    """What the selected sections after `name` need to start: a section plans its own
    parts to leave them that much."""
    later = [n for n in SECTIONS[SECTIONS.index(name) + 1:] if n in check.options.sections]
    return sum(needs_s(check, n) for n in later)


# -- running one section -----------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # None: killed at the deadline
    seconds: float
    tail: list[str]  # the log's last lines


def run_logged(command: Sequence[str], log_path: Path, timeout_s: float,
               env: dict[str, str] | None = None) -> Finished:
    """Run `command` in its own process group, its output copied line by line to stderr
    and to `log_path`; the whole group is killed after `timeout_s` or on a stop."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                              **(env or {})})
    assert process.stdout is not None
    copier = threading.Thread(target=_copy_lines, args=(process.stdout, log_path), daemon=True)
    copier.start()
    returncode: int | None
    try:
        returncode = process.wait(timeout=max(timeout_s, 0.1))
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        if process.poll() is None:  # the deadline, or a stop of the check itself
            _kill_group(process)
        copier.join(timeout=10)
    return Finished(returncode, time.monotonic() - started, _tail(log_path))


def _copy_lines(stream: IO[str], log_path: Path) -> None:
    with log_path.open("w") as log:
        for line in stream:
            sys.stderr.write(line)
            log.write(line)
            log.flush()


def _kill_group(process: subprocess.Popen[str]) -> None:
    with suppress(ProcessLookupError):  # the group is gone already
        os.killpg(process.pid, signal.SIGKILL)  # the section and every process it spawned
    process.wait()


def _tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def run_child(check: Check, name: str, *extra: str, epochs_slice: int | None = None
              ) -> dict[str, Any]:
    """Run section `name` in a child process (`--child NAME`) and read what it wrote."""
    options = check.options
    if epochs_slice is not None:
        options = replace(options, epochs_slice=epochs_slice)
    result_file = options.out / "sections" / f"{name}.json"
    result_file.unlink(missing_ok=True)  # a previous call's: never read as this one's
    soft_deadline = time.time() + check.left_s() - reserve_s(check, name)
    command = [sys.executable, "-m", "sslbench.bench.measure.gpucheck", "--child", name,
               *child_flags(options), "--deadline", f"{soft_deadline:.1f}", *extra]
    finished = run_logged(command, options.out / "logs" / f"{name}.log", check.left_s())
    written = _read_json(result_file)
    outcome: dict[str, Any] = {"result": written.get("result", {}),
                               "log": f"logs/{name}.log"}
    if finished.returncode is None:
        return {**outcome, "status": "timeout",
                "why": f"killed at the end of the budget after {finished.seconds:.0f} s; "
                       f"the result holds what it had finished"}
    if finished.returncode == 0 and written.get("status") == "ok":
        return {**outcome, "status": "ok"}
    return {**outcome, "status": "failed",
            "error": written.get("error") or f"the section's process ended with exit code "
                                              f"{finished.returncode}",
            "traceback": written.get("traceback") or finished.tail}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def child_flags(options: Options) -> list[str]:
    flags = ["--device", options.device, "--out", str(options.out), "--root", str(options.root),
             "--epochs-slice", str(options.epochs_slice)]
    return flags + (["--tiny"] if options.tiny else [])


# -- correctness: the cuda-marked tests on the device ------------------------------------------


def run_correctness(check: Check) -> dict[str, Any]:
    options = check.options
    missing = [str(REPO / t) for t in CUDA_TESTS if not (REPO / t).is_file()]
    if missing:
        return {"status": "failed", "error": f"{', '.join(missing)} not found: the tests run "
                                             f"from a source checkout of sslbench"}
    junit = options.out / "correctness-junit.xml"
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", *map(str, CUDA_TESTS), "-m", "cuda", "-q",
               "-p", "no:cacheprovider", f"--junitxml={junit}"]
    env = {TEST_DEVICE_ENV: options.device, "SSLBENCH_DATA": str(options.root)}
    finished = run_logged(command, options.out / "logs" / "correctness.log", check.left_s(), env)
    outcome: dict[str, Any] = {"log": "logs/correctness.log", "junit": junit.name}
    if finished.returncode is None:
        return {**outcome, "status": "timeout", "why": f"pytest killed at the end of the "
                                                       f"budget after {finished.seconds:.0f} s"}
    try:
        result = junit_results(junit)
    except (OSError, ET.ParseError) as error:
        return {**outcome, "status": "failed", "traceback": finished.tail,
                "error": f"pytest (exit code {finished.returncode}) wrote no readable "
                         f"{junit.name}: {error}"}
    result["device"] = options.device
    counts = result["counts"]
    outcome["result"] = result
    if finished.returncode == 0 and counts["passed"] > 0:
        return {**outcome, "status": "ok", "note": _count_line(counts)}
    return {**outcome, "status": "failed", "traceback": finished.tail,
            "error": f"pytest exit code {finished.returncode}: {_count_line(counts)}"}


def junit_results(path: Path) -> dict[str, Any]:
    """Per test: outcome, seconds and the first line of its message; the counts."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                outcome = name
                first = (found.get("message") or found.text or "").strip().splitlines()
                message = first[0][:300] if first else ""
                break
        tests.append({"test": case.get("name", "?"), "outcome": outcome,
                      "seconds": round(float(case.get("time") or 0), 2), "message": message})
    counts = {o: sum(t["outcome"] == o for t in tests)
              for o in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}


def _count_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n) or "no tests ran"


# -- bench: bench.speed's measurements, on the sizes of the paper protocol ---------------------


def run_bench(check: Check) -> dict[str, Any]:
    return run_child(check, "bench")


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


# -- profile: kernels per step and how busy the GPU is -----------------------------------------


def run_profile(check: Check) -> dict[str, Any]:
    return run_child(check, "profile")


def child_profile(options: Options, deadline: float, partial: SectionFile) -> dict[str, Any]:
    from sslbench.bench.core.config import build_config
    from sslbench.bench.core.datasets import MNIST, verify

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
    run_steps(state, weight, 0, warmup)
    started = time.perf_counter()
    run_steps(state, weight, warmup, count)
    step_ms = (time.perf_counter() - started) / count * 1000
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


# -- the paper slice: the grid's first epochs, then the projection -----------------------------


def slice_plan(check: Check) -> dict[str, Any]:
    """The slice's (workers, stack): the bench's fastest if it measured one, else the
    runner's defaults; and the most epochs (up to --epochs-slice) that fit in the time
    left, at least the minimum (the parent skips the slice when even that does not fit)."""
    options, sizes = check.options, check.options.sizes
    bench = check.section("bench")
    fastest = bench.get("result", {}).get("fastest") if bench["status"] in ("ok", "timeout") \
        else None
    variants = len(sizes.slice_variants) or _grid_variants()
    if fastest:
        workers, stack = fastest["workers"], fastest["stack"]
        # The bench's epoch on its own slice, scaled to the slice's training images.
        scale = _slice_train_images(sizes) / sizes.bench_train_size
        epoch_s = fastest["epoch_seconds"] * scale * EVAL_SHARE
        source = f"bench: fastest measurement {fastest['measurement']!r}"
    else:
        on_cuda = options.device.startswith("cuda")
        workers = 1 if on_cuda else min(os.cpu_count() or 1, variants * sizes.slice_seeds)
        stack = sizes.slice_seeds if on_cuda else 1
        epoch_s = sizes.slice_epoch_s
        source = f"the runner's defaults (the bench section is {bench['status']})"
    plan = {"workers": workers, "stack": stack, "config_source": source,
            "job_start_s": sizes.job_start_s, "epoch_s_estimate": round(epoch_s, 3),
            "variants": variants,
            "rounds": math.ceil(variants * math.ceil(sizes.slice_seeds / stack) / workers)}
    fitting = [n for n in range(sizes.slice_min_epochs, options.epochs_slice + 1)
               if slice_estimate_s(plan, n) <= check.left_s()]
    plan["epochs"] = max(fitting, default=min(sizes.slice_min_epochs, options.epochs_slice))
    return plan


def slice_estimate_s(plan: dict[str, Any], epochs: int) -> float:
    """Rounds of jobs, each its start-up and its epochs."""
    return float(plan["rounds"] * (plan["job_start_s"] + epochs * plan["epoch_s_estimate"]))


def _slice_train_images(sizes: Sizes) -> int:
    from sslbench.bench.core.config import get_profile
    from sslbench.bench.core.datasets import MNIST

    return get_profile(sizes.slice_profile).train_size or MNIST.num_train


def _grid_variants() -> int:
    from sslbench.ablations import get_grid

    return len(get_grid(GRID).variants)


def run_paper_slice(check: Check) -> dict[str, Any]:
    plan = slice_plan(check)
    outcome = run_child(check, "paper_slice", "--slice-workers", str(plan["workers"]),
                        "--slice-stack", str(plan["stack"]), epochs_slice=plan["epochs"])
    outcome["result"] = {"plan": plan, **outcome.get("result", {})}
    return outcome


def child_slice(options: Options, deadline: float, partial: SectionFile, workers: int,
                stack: int) -> dict[str, Any]:
    from sslbench.ablations import get_grid
    from sslbench.bench.core.config import get_profile
    from sslbench.bench.core.datasets import MNIST, verify
    from sslbench.bench.runs.runner import run_grid
    from sslbench.bench.store.names import grid_study_name
    from sslbench.bench.store.runstore import RunStore, latest_by_cell

    del deadline  # the epochs were fitted to it by the parent, which kills at the budget
    sizes, epochs = options.sizes, options.epochs_slice
    verify(options.root, MNIST)
    seeds = list(range(sizes.slice_seeds))
    store_path = options.out / "slice.db"
    # A fresh store: one holding these cells would skip them as finished and time nothing.
    store_path.unlink(missing_ok=True)
    store = RunStore(f"sqlite:///{store_path}")
    result: dict[str, Any] = {"grid": GRID, "profile": sizes.slice_profile, "seeds": seeds,
                              "epochs": epochs, "workers": workers, "stack": stack,
                              "variants": list(sizes.slice_variants) or "all",
                              "store": store_path.name}
    partial.write("running", result)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpucheck-ckpt-") as checkpoints:
        outcome = run_grid(GRID, sizes.slice_profile, seeds, store=store,
                           variants=list(sizes.slice_variants) or None,
                           overrides={"train.epochs": str(epochs)}, workers=workers,
                           device=options.device, data_root=options.root,
                           checkpoint_dir=Path(checkpoints), stack=stack, log=say)
    wall_s = time.monotonic() - started
    study = store.find_study(grid_study_name(GRID, sizes.slice_profile))
    cells = latest_by_cell(store.cell_runs(study)) if study is not None else {}
    finished = [run for run in cells.values() if run.state == "COMPLETE" and run.record]
    records = [run.record for run in finished if run.record]
    result.update(wall_s=round(wall_s, 1), cells_finished=len(records),
                  cells_failed=sorted(outcome.failed), accuracy=_accuracy_by_variant(finished))
    if records:
        result["projection"] = project(
            [_epoch_cost_s(r) for r in records], wall_s, workers=workers, stack=stack,
            seeds=len(seeds), epochs_run=epochs,
            epochs_full=get_profile(sizes.slice_profile).epochs,
            variants_run=len(sizes.slice_variants) or len(get_grid(GRID).variants),
            variants_full=len(get_grid(GRID).variants))
    if outcome.failed or not records:
        partial.write("running", result)
        reasons = {run.cell: run.failure for run in cells.values() if run.state != "COMPLETE"}
        raise RuntimeError(f"{len(outcome.failed)} of the slice's cells failed: "
                           + "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))[:400])
    return result


def _epoch_cost_s(record: dict[str, Any]) -> float:
    """A run's steady epoch: training steps plus evaluation, median over epochs after the
    first (its job's: the runs of a stack share them)."""
    from sslbench.bench.core.throughput import steady_median

    curves = record["curves"]
    return steady_median(curves["epoch_seconds"]) + steady_median(curves["eval_seconds"])


def _accuracy_by_variant(runs: Sequence[Any]) -> dict[str, list[float]]:
    """Final test accuracy per variant (bench.store.CellRun), in seed order."""
    by_variant: dict[str, list[float]] = {}
    for run in sorted(runs, key=lambda r: (r.variant, r.seed)):
        by_variant.setdefault(run.variant, []).append(run.record["metrics"]["final_test_accuracy"])
    return by_variant


def project(epoch_costs_s: Sequence[float], wall_s: float, *, workers: int, stack: int,
            seeds: int, epochs_run: int, epochs_full: int, variants_run: int,
            variants_full: int) -> dict[str, Any]:
    """The whole grid's wall time at the full epochs, from the slice's (a projection).

    A job is up to `stack` seeds of one variant; `workers` jobs run at once, so the jobs
    run in rounds of `workers`. Each round costs a start-up (what the slice's wall time
    holds beyond its epochs) plus its epochs at the slice's steady epoch cost (training
    and evaluation, measured with `workers` jobs sharing the device). The slice's wall
    time scaled linearly (start-up included at every epoch) is an upper bound.
    """
    epoch_s = sum(epoch_costs_s) / len(epoch_costs_s)
    jobs_run = variants_run * math.ceil(seeds / stack)
    jobs_full = variants_full * math.ceil(seeds / stack)
    rounds_run, rounds_full = math.ceil(jobs_run / workers), math.ceil(jobs_full / workers)
    start_s = max(0.0, wall_s - rounds_run * epochs_run * epoch_s) / rounds_run
    projected_s = rounds_full * (start_s + epochs_full * epoch_s)
    upper_s = wall_s * (epochs_full / epochs_run) * (rounds_full / rounds_run)
    return {
        "epoch_s": round(epoch_s, 3), "start_s_per_round": round(start_s, 2),
        "jobs_full": jobs_full, "rounds_full": rounds_full, "rounds_run": rounds_run,
        "epochs_full": epochs_full, "projected_wall_s": round(projected_s),
        "upper_bound_s": round(upper_s),
        "arithmetic": (
            f"{variants_full} variants x ceil({seeds} seeds / stack {stack}) = {jobs_full} "
            f"jobs; ceil({jobs_full} / {workers} workers) = {rounds_full} rounds; each round "
            f"{start_s:.1f} s start-up (slice: {wall_s:.1f} s wall - {rounds_run} rounds x "
            f"{epochs_run} epochs x {epoch_s:.2f} s, per round) + {epochs_full} epochs x "
            f"{epoch_s:.2f} s = {projected_s:,.0f} s ({projected_s / 3600:.2f} h); upper "
            f"bound {wall_s:.1f} s x {epochs_full}/{epochs_run} x {rounds_full}/{rounds_run} "
            f"= {upper_s:,.0f} s ({upper_s / 3600:.2f} h)"),
    }


SECTION_RUNNERS: dict[str, Callable[[Check], dict[str, Any]]] = {
    "correctness": run_correctness, "bench": run_bench, "profile": run_profile,
    "paper_slice": run_paper_slice}


# -- inside a section's process ----------------------------------------------------------------


class SectionFile:
    """sections/NAME.json, rewritten whole at every step: what the parent reads, even after
    it killed the process."""

    def __init__(self, out: Path, name: str) -> None:
        self.path = out / "sections" / f"{name}.json"

    def write(self, status: str, result: dict[str, Any], **extra: Any) -> None:
        write_text_atomic(self.path, json.dumps({"status": status, "result": result, **extra},
                                                indent=1, default=str) + "\n")


def child_main(args: argparse.Namespace) -> int:
    """`--child NAME`: one section; 0 when it passed, 1 when it failed (error recorded)."""
    options = options_from_args(args, resolve=False)
    partial = SectionFile(options.out, args.child)
    result: dict[str, Any] = {}
    try:
        if args.child == "bench":
            result = child_bench(options, args.deadline, partial)
        elif args.child == "profile":
            result = child_profile(options, args.deadline, partial)
        else:
            result = child_slice(options, args.deadline, partial, args.slice_workers,
                                 args.slice_stack)
    except Exception as error:
        written = _read_json(partial.path).get("result", result)
        lines = traceback.format_exception(error)
        partial.write("failed", written, error=f"{type(error).__name__}: "
                                               f"{str(error).strip().splitlines()[0][:400]}"
                      if str(error).strip() else type(error).__name__,
                      traceback="".join(lines).splitlines()[-TAIL_LINES:])
        print(f"gpucheck {args.child}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    partial.write("ok", result)
    return 0


# -- environment and output --------------------------------------------------------------------


def environment(device_name: str) -> dict[str, Any]:
    """What produced the figures: device, driver, CUDA, cuDNN, torch, commit, cores."""
    import torch

    from sslbench.bench.core.precision import native_bf16
    from sslbench.bench.core.record import environment as record_environment

    device = torch.device(device_name)
    env = record_environment(device)
    env.update(cpu_count=os.cpu_count(), bf16_native=native_bf16(device),
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
               else None,
               tf32={"matmul": torch.backends.cuda.matmul.allow_tf32,
                     "cudnn": torch.backends.cudnn.allow_tf32})
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                      "memory_gib": round(props.total_memory / 2**30, 1),
                      "multiprocessors": props.multi_processor_count,
                      "nvidia_smi": _nvidia_smi()}
    return env


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                               "power.limit,clocks.max.sm", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def device_slug(device_name: str, tiny: bool) -> str:
    """`gpu-nvidia-h200`, `gpu-cpu-tiny`: the default output folder's name."""
    import torch

    name = "cpu"
    if device_name.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device_name))
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"gpu-{slug}" + ("-tiny" if tiny else "")


def command_line(options: Options) -> str:
    sections = "" if options.sections == SECTIONS else " --sections " + " ".join(options.sections)
    return (f"sslbench gpucheck --device {options.device}{' --tiny' if options.tiny else ''} "
            f"--budget-s {options.budget_s:g} --epochs-slice {options.epochs_slice} "
            f"--out {options.out} --root {options.root}{sections}")


def render_summary(doc: dict[str, Any]) -> str:
    env, sections = doc["environment"], doc["sections"]
    git = env.get("git") or {}
    gpu = env.get("gpu") or {}
    lines = [
        f"# GPU check: {env['device']}", "",
        f"`{doc['command']}`, {doc['created']}; sizes `{doc['sizes']['name']}`; budget "
        f"{doc['budget_s']:g} s, {doc.get('elapsed_s', 0):.0f} s used.", "",
        f"torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env.get('cudnn')}), Python "
        f"{env['python']}, {env.get('cpu_count')} CPU cores"
        + (f"; {gpu['name']}, compute capability {gpu['capability']}, {gpu['memory_gib']} GiB,"
           f" nvidia-smi: {gpu.get('nvidia_smi')}" if gpu else "")
        + f"; bf16 native: {env.get('bf16_native')}; TF32 {env.get('tf32')}; commit "
          f"{git.get('commit', 'unknown')}{' (dirty)' if git.get('dirty') else ''}.", "",
        "| section | status | seconds | estimated | note |", "|---|---|---:|---:|---|",
    ]
    for name, s in sections.items():
        note = s.get("why") or s.get("error") or s.get("note") or ""
        lines.append(f"| {name} | {s['status']} | {s.get('seconds', '')} | "
                     f"{s.get('estimate_s', '')} | {note.replace('|', '/')} |")
    for name, render in (("correctness", _render_correctness), ("bench", _render_bench),
                         ("profile", _render_profile), ("paper_slice", _render_slice)):
        result = sections[name].get("result")
        if result:
            lines += ["", f"## {name}", "", *render(result)]
    skipped = [(n, s) for n, s in sections.items() if s["status"] != "ok"]
    if skipped:
        lines += ["", "## Not run or not passed", ""]
        lines += [f"- {n}: {s['status']}: {s.get('why') or s.get('error') or ''}"
                  for n, s in skipped]
    return "\n".join(lines) + "\n"


def _render_correctness(result: dict[str, Any]) -> list[str]:
    lines = [f"`pytest -m cuda {' '.join(map(str, CUDA_TESTS))}` on `{result.get('device')}`: "
             f"{_count_line(result['counts'])}.", "", "| test | outcome | s | message |",
             "|---|---|---:|---|"]
    lines += [f"| {t['test']} | {t['outcome']} | {t['seconds']} | "
              f"{t['message'].replace('|', '/')} |" for t in result["tests"]]
    return lines


def _render_bench(result: dict[str, Any]) -> list[str]:
    protocol, measurements = result["protocol"], result["measurements"]
    harness = measurements.get("harness", {}).get("images_per_s")
    lines = [f"{protocol['method']} on {protocol['train_images']:,} training images "
             f"({protocol['test_images']:,} test), {protocol['epochs']} epochs; images/s: "
             f"{protocol['images_per_s']}.", "",
             "| measurement | runs x processes | train img/s | per run | vs one run | s / epoch "
             "| peak MiB | wall s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in measurements.items():
        per_run = m["images_per_s"] / (m["runs"] * m["processes"])
        versus = f"{m['images_per_s'] / harness:.2f}x" if harness else ""
        lines.append(f"| {name} | {m['runs']} x {m['processes']} | {m['images_per_s']:,.0f} | "
                     f"{per_run:,.0f} | {versus} | {m['epoch_seconds']:.2f} | "
                     f"{m['peak_memory_mib']:,.0f} | {m['wall_s']} |")
    lines += [f"| {name} | skipped: {why} | | | | | | |"
              for name, why in result.get("skipped", {}).items()]
    fastest = result.get("fastest")
    if fastest:
        lines += ["", f"Fastest grid configuration: {fastest['workers']} worker(s) x stack "
                      f"{fastest['stack']} ({fastest['measurement']}, "
                      f"{fastest['images_per_s']:,.0f} img/s) of {fastest['candidates']}."]
    return lines


def _render_profile(result: dict[str, Any]) -> list[str]:
    lines = [f"{result['method']}, {result['train_images']:,} training images: "
             f"{result['warmup_steps']} untimed steps, {result['steps']} timed, "
             f"{result['steps']} profiled (torch.profiler; its overhead is in the profiled "
             f"ms).", "",
             "| stack | ms / step | train img/s | kernels / step | copies / step | GPU busy | "
             "aten ops / step | profiled ms / step | top ops |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for runs, s in result["stacks"].items():
        lines.append(f"| {runs} | {s['ms_per_step']:.2f} | {s['train_images_per_s']:,} | "
                     f"{_figure(s['kernels_per_step'], '.0f')} | "
                     f"{_figure(s['copies_per_step'], '.1f')} | "
                     f"{_figure(s['gpu_busy_fraction'], '.0%')} | "
                     f"{s['aten_ops_per_step']:.0f} | {s['profiled_ms_per_step']:.2f} | "
                     f"`{s['table']}` |")
    return lines


def _figure(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _render_slice(result: dict[str, Any]) -> list[str]:
    plan = result.get("plan", {})
    if "grid" not in result:  # it ended before it started training
        return [f"Planned: {plan.get('workers')} worker(s) x stack {plan.get('stack')}, "
                f"{plan.get('epochs')} epochs, from {plan.get('config_source')}."]
    lines = [f"Grid {result.get('grid')}, profile {result.get('profile')} cut to the first "
             f"{result.get('epochs')} epochs (`--set train.epochs=N`), seeds "
             f"{result.get('seeds')}, variants {result.get('variants')}; "
             f"{result.get('workers')} worker(s) x stack {result.get('stack')}, from "
             f"{plan.get('config_source')}. Store: `{result.get('store')}`."]
    if "wall_s" in result:
        lines += ["", f"Measured: {result['wall_s']} s wall for {result['cells_finished']} "
                      f"cells ({len(result['cells_failed'])} failed)."]
    if result.get("accuracy"):
        lines += ["", "Test accuracy after these epochs (not a result of the protocol: a "
                      "timing run): " + "; ".join(
                          f"{v} {sum(a) / len(a):.1%}" for v, a in result["accuracy"].items())]
    projection = result.get("projection")
    if projection:
        lines += ["", f"**Projection** (not a measurement) of the whole grid at "
                      f"{projection['epochs_full']} epochs: about "
                      f"{projection['projected_wall_s'] / 3600:.2f} h; at most "
                      f"{projection['upper_bound_s'] / 3600:.2f} h. Arithmetic: "
                      f"{projection['arithmetic']}. Checkpoints every epoch are in the "
                      f"start-up share, not in the epoch cost."]
    return lines




# -- command line ------------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    from sslbench.bench.core.datasets import default_root

    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                        help="device to check (default auto: CUDA when there is one)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes (a few hundred images, 1 or 2 epochs): the plumbing "
                             "in about a minute on a CPU")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"hard time budget in seconds; sections that do not fit are "
                             f"skipped and listed (default {DEFAULT_BUDGET_S:g})")
    parser.add_argument("--out", help="output folder (default reports/results/gpu-DEVICE/, "
                                      "e.g. gpu-nvidia-h200, gpu-cpu-tiny)")
    parser.add_argument("--root", default=str(default_root()),
                        help="data folder (default: $SSLBENCH_DATA or ~/.cache/sslbench/data)")
    parser.add_argument("--epochs-slice", type=int, default=None, metavar="N",
                        help=f"epochs of the paper slice, fewer when they do not fit (default "
                             f"{FULL.slice_epochs}; --tiny: {TINY.slice_epochs})")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="only these sections (the others are listed as not selected)")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `gpucheck` to the CLI's subparsers; returns the new parser."""
    parser = commands.add_parser("gpucheck", help="one-call GPU check: CUDA tests, bench, "
                                                  "profile, paper slice, in a time budget",
                                 description=__doc__.splitlines()[0])
    add_options(parser)
    parser.set_defaults(func=command)
    return parser


def options_from_args(args: argparse.Namespace, resolve: bool = True) -> Options:
    """Checked options; UserError for an absent device or an impossible number."""
    from sslbench.bench.core.device import resolve_device

    device = str(resolve_device(args.device)) if resolve else args.device
    if not args.budget_s > 0:
        raise UserError(f"--budget-s must be a positive number of seconds, got {args.budget_s}")
    sizes = TINY if args.tiny else FULL
    epochs = sizes.slice_epochs if args.epochs_slice is None else args.epochs_slice
    if epochs < 1:
        raise UserError(f"--epochs-slice must be >= 1, got {epochs}")
    out = Path(args.out) if args.out else Path("reports", "results",
                                               device_slug(device, args.tiny))
    return Options(device=device, tiny=args.tiny, budget_s=float(args.budget_s),
                   out=out.expanduser().resolve(), root=Path(args.root).expanduser().resolve(),
                   epochs_slice=epochs,
                   sections=tuple(s for s in SECTIONS if s in args.sections))


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise CheckStopped in the main thread, so the section in flight
    is killed and everything so far written; the handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        del frame
        raise CheckStopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def command(args: argparse.Namespace) -> int:
    """`sslbench gpucheck`: run the check, print the summary; 0 when every section that ran
    passed, 1 otherwise."""
    options = options_from_args(args)
    check_writable(options.out)
    with stop_on_signals():
        doc = run_check(options, say)
    print(render_summary(doc))
    say(f"gpucheck: wrote {options.out / 'results.json'} and {options.out / 'summary.md'}")
    return 0 if passed(doc) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sslbench.bench.measure.gpucheck",
                                     description=__doc__.splitlines()[0])
    add_options(parser)
    # A section's own process, started by the check (not for users).
    parser.add_argument("--child", choices=SECTIONS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=math.inf, help=argparse.SUPPRESS)
    parser.add_argument("--slice-workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--slice-stack", type=int, default=1, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return child_main(args)
    try:
        return command(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
