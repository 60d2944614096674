"""The grid runner: every (variant, seed) cell once, stored as it finishes.

Cells already finished are skipped; cells that crashed or were interrupted are retried;
a cell that fails is recorded with its reason and the grid goes on. `workers > 1` runs
cells in separate processes (spawned; on CPU one thread each, never oversubscribed).

With `stack > 1` the seeds of a variant are trained together, up to `stack` at a time, as
one stacked model (`bench.train.train_stack`): one job, one process, each cell still
claimed, recorded and reported on its own. A stack in which one run diverges is rerun one
cell at a time, so only the diverging seed is marked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing as mp
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ablations import get_grid
from ablations.grid import Grid
from bench.checkpoint import CheckpointPolicy, Interrupted, stop_on_signals
from bench.config import RunConfig, build_config, config_from_dict
from bench.errors import DivergedError
from bench.identity import check_same_settings, study_suffix
from bench.record import build_record
from bench.store import (
    DEFAULT_GRACE_S,
    HEARTBEAT_S,
    RETRIED_FAILURES,
    RunStore,
    grid_study_name,
    latest_by_cell,
)
from bench.train import EpochSummary, resolve_device, train_stack


@dataclass(frozen=True)
class Cell:
    variant: str
    seed: int
    config: RunConfig

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"


def plan_cells(grid: Grid, profile: str, seeds: Sequence[int],
               variants: Sequence[str] | None = None,
               overrides: dict[str, str] | None = None) -> list[Cell]:
    """All cells of the grid (or of the chosen variants), configs checked up front."""
    chosen = [grid.variant(name) for name in variants] if variants else list(grid.variants)
    # One full build per variant; seeds only replace the seed (the seed enters no other
    # field), so planning 100,000 seeds takes seconds, not minutes.
    base = {v.name: build_config(v.method, 0, profile, overrides, v.overrides) for v in chosen}
    # Seed-major order: an interrupted grid leaves whole seeds, i.e. complete pairs.
    return [Cell(v.name, seed, replace(base[v.name], seed=seed)) for seed in seeds for v in chosen]


@dataclass(frozen=True)
class Job:
    """Cells of one variant trained together as one stack (one cell when not stacking)."""

    cells: tuple[Cell, ...]

    @property
    def key(self) -> str:
        if len(self.cells) == 1:
            return self.cells[0].key
        seeds = [c.seed for c in self.cells]
        return f"{self.cells[0].variant}/seeds{','.join(map(str, seeds))}"


def plan_jobs(cells: Sequence[Cell], stack: int) -> list[Job]:
    """Group the cells of each variant into stacks of up to `stack` seeds, in seed order;
    the jobs keep the cells' order of first appearance (seed-major)."""
    if stack <= 1:
        return [Job((cell,)) for cell in cells]
    by_variant: dict[str, list[Cell]] = {}
    for cell in cells:
        by_variant.setdefault(cell.variant, []).append(cell)
    jobs: list[Job] = []
    placed: set[str] = set()
    for cell in cells:
        if cell.variant in placed:
            continue
        placed.add(cell.variant)
        same = sorted(by_variant[cell.variant], key=lambda c: c.seed)
        jobs += [Job(tuple(same[i:i + stack])) for i in range(0, len(same), stack)]
    return jobs


def default_stack(device: torch.device, seeds: int) -> int:
    """All seeds of a variant in one stack on CUDA, where one run leaves the GPU idle
    between kernel launches; one run per process on the CPU, where the cores are the
    limit and `workers` shares them out."""
    return max(1, seeds) if device.type == "cuda" else 1


@dataclass
class GridOutcome:
    total: int
    already_done: int
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped_running: list[str] = field(default_factory=list)
    skipped_diverged: list[str] = field(default_factory=list)


def default_threads(workers: int) -> int:
    """Threads per worker on CPU: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


# -- one cell, in whichever process runs it -----------------------------------------------

_progress_queue: Any = None
# Set to stop the cell in progress: it saves a checkpoint at the next step and returns
# "interrupted". Signals set it, and so does the watchdog when the runner dies.
_stop = threading.Event()
_cell_running = threading.Event()


def _init_worker(queue: Any, threads: int, parent_pid: int, runner_stop: Any) -> None:
    global _progress_queue
    _progress_queue = queue
    torch.set_num_threads(threads)
    threading.Thread(target=_watch_runner, args=(parent_pid, runner_stop), daemon=True).start()


def _watch_runner(parent_pid: int, runner_stop: Any, poll_s: float = 0.5,
                  save_s: float = 120.0) -> None:
    """Stop the cell when the runner asks (its SIGTERM/SIGINT) or dies (kill -9 skips all
    clean-up): the cell checkpoints, so the next run resumes it. An orphan then exits
    rather than train on for nobody."""
    while os.getppid() == parent_pid:
        if runner_stop.is_set():
            _stop.set()
        time.sleep(poll_s)
    _stop.set()
    deadline = time.monotonic() + save_s
    while _cell_running.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)
    os._exit(1)


def checkpoint_path(checkpoint_dir: str, config: RunConfig,
                    seeds: Sequence[int] | None = None) -> Path:
    """A cell's checkpoint, named by its run id; a stack's adds the seeds it trains."""
    if seeds is None or len(seeds) == 1:
        return Path(checkpoint_dir) / f"{config.config_hash()}.pt"
    return Path(checkpoint_dir) / f"{config.config_hash()}-seeds{'_'.join(map(str, seeds))}.pt"


def execute_cell(config_dict: dict[str, Any], cell_key: str, device_name: str, data_root: str,
                 checkpoint_dir: str | None = None, checkpoint_every: int = 1,
                 progress: Callable[[str, EpochSummary], None] | None = None) -> dict[str, Any]:
    """Run one cell; never raises: returns {"status": "ok"|"diverged"|"error"|"interrupted"}."""
    (result,) = execute_job([config_dict], cell_key, device_name, data_root, checkpoint_dir,
                            checkpoint_every, progress)
    return result


def execute_job(config_dicts: Sequence[dict[str, Any]], job_key: str, device_name: str,
                data_root: str, checkpoint_dir: str | None = None, checkpoint_every: int = 1,
                progress: Callable[[str, EpochSummary], None] | None = None
                ) -> list[dict[str, Any]]:
    """Train the cells of one job (one variant's configs, differing only in seed) as one
    stack; never raises: one {"status": "ok"|"diverged"|"error"|"interrupted"} per cell.

    With a checkpoint folder the job resumes from its checkpoint (named by run id and
    seeds), saves every `checkpoint_every` epochs and on SIGTERM/SIGINT, and removes it when
    finished. A stack that diverges is rerun cell by cell, so only the diverging seed is
    marked; a stop asked meanwhile leaves the cells not yet rerun interrupted.
    """
    _stop.clear()
    _cell_running.set()
    try:
        def attempt(configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
            return _attempt(configs, job_key, device_name, data_root, checkpoint_dir,
                            checkpoint_every, progress)

        results = attempt(config_dicts)
        if len(config_dicts) == 1 or results[0]["status"] != "diverged":
            return results
        stopped = {"status": "interrupted", "reason": "interrupted before its rerun"}
        return [attempt([c])[0] if not _stop.is_set() else stopped for c in config_dicts]
    finally:
        _cell_running.clear()


def _attempt(config_dicts: Sequence[dict[str, Any]], job_key: str, device_name: str,
             data_root: str, checkpoint_dir: str | None, checkpoint_every: int,
             progress: Callable[[str, EpochSummary], None] | None) -> list[dict[str, Any]]:
    """One training of the configs as one stack; its outcome per cell, never raising."""
    cells = len(config_dicts)
    policy = None
    try:
        configs = [config_from_dict(c) for c in config_dicts]
        seeds = [c.seed for c in configs]
        device = resolve_device(device_name)
        started = dt.datetime.now(dt.UTC)
        policy = (CheckpointPolicy(checkpoint_path(checkpoint_dir, configs[0], seeds),
                                   checkpoint_every, stop=_stop) if checkpoint_dir else None)

        def report(summary: EpochSummary) -> None:
            if progress is not None:
                progress(job_key, summary)
            elif _progress_queue is not None:
                _progress_queue.put((job_key, summary))

        with stop_on_signals(_stop):
            results = train_stack(configs[0], seeds, device=device, data_root=Path(data_root),
                                  progress=report, checkpoint=policy)
        records = [build_record(config, result, device, started)
                   for config, result in zip(configs, results, strict=True)]
        # The checkpoint stays until the runner has stored the records (see settle): a
        # store write that fails (a full disk) then costs at most the last epoch.
        return [{"status": "ok", "record": record} for record in records]
    except Interrupted as stopped:
        return [{"status": "interrupted", "reason": f"interrupted: {stopped}"}] * cells
    except DivergedError as error:
        if cells > 1 and policy is not None:  # its cells rerun alone: never resumed
            policy.path.unlink(missing_ok=True)
        return [{"status": "diverged", "reason": str(error)}] * cells
    except Exception as error:
        detail = traceback.format_exc(limit=8)
        return [{"status": "error", "reason": f"{type(error).__name__}: {error}\n{detail}"}
                ] * cells


# -- progress ------------------------------------------------------------------------------


class Progress:
    """One line per epoch: cells done / total, the cell's epoch and accuracy, time left."""

    def __init__(self, total: int, done: int, workers: int, epochs_per_cell: int,
                 stream: Any = sys.stderr, stack: int = 1) -> None:
        self.total, self.done, self.workers = total, done, workers
        self.epochs_per_cell = epochs_per_cell
        self.stack = stack  # cells trained together: a pending cell costs 1/stack of a job
        self.stream = stream
        self.epoch_seconds: list[float] = []
        self.epochs_left_in_flight: dict[str, int] = {}
        self.pending = 0
        self.counted: set[str] = set()

    def epoch(self, cell: str, summary: EpochSummary) -> None:
        self.epoch_seconds.append(summary.epoch_seconds + summary.eval_seconds)
        self.epochs_left_in_flight[cell] = summary.epochs - summary.epoch - 1
        recent = self.epoch_seconds[-20:]
        per_epoch = sum(recent) / len(recent)
        epochs_left = (sum(self.epochs_left_in_flight.values())
                       + self.pending * self.epochs_per_cell / self.stack)
        eta = per_epoch * epochs_left / self.workers
        acc = ", ".join(f"{a:.2%}" for a in summary.test_accuracy)
        print(f"[{self.done}/{self.total} cells] {cell} epoch {summary.epoch + 1}/{summary.epochs}"
              f" test acc {acc} w {summary.weight:.4f} "
              f"{summary.train_images_per_s:,.0f} img/s | ~{_duration(eta)} left",
              file=self.stream, flush=True)

    def cell_done(self, cell: str, message: str, job: str | None = None) -> None:
        # A cell is counted once however often it is reported (skipped here, then finished
        # by another runner and taken over...), so the counter never passes the total.
        if cell not in self.counted:
            self.counted.add(cell)
            self.done = min(self.total, self.done + 1)
        self.epochs_left_in_flight.pop(job or cell, None)
        print(f"[{self.done}/{self.total} cells] {cell}: {message}", file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- the grid ------------------------------------------------------------------------------


class Heartbeat:
    """A thread that beats, every HEARTBEAT_S seconds, for the trials this runner owns.

    It has its own store connection: one thread per connection, as the engines want.
    """

    def __init__(self, url: str, interval_s: float = HEARTBEAT_S) -> None:
        self.url, self.interval_s = url, interval_s
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)

    def add(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.discard(trial_id)

    def _run(self) -> None:
        store = RunStore(self.url)
        while not self.stopped.wait(self.interval_s):
            with self.lock:
                beating = list(self.trial_ids)
            for trial_id in beating:
                # A lost connection is not fatal: the next beat tries again.
                with contextlib.suppress(Exception):
                    store.beat(trial_id)


def _scan(cells: Sequence[Cell], store: RunStore, study_id: int, retry_failed: bool,
          attempted: set[str]) -> tuple[list[Cell], list[str], GridOutcome]:
    """(cells this runner may claim now, cells running elsewhere, counts) from the store."""
    latest = latest_by_cell(store.cell_runs(study_id))
    outcome = GridOutcome(total=len(cells), already_done=0)
    claimable: list[Cell] = []
    running: list[str] = []
    for cell in cells:
        run = latest.get(cell.key)
        if run is not None and run.state == "COMPLETE":
            outcome.already_done += 1
        elif run is not None and run.state == "RUNNING":
            running.append(cell.key)
            outcome.skipped_running.append(cell.key)
        elif (run is not None and run.state == "FAIL" and run.failure_kind not in RETRIED_FAILURES
              and not retry_failed):
            outcome.skipped_diverged.append(cell.key)
        elif cell.key not in attempted:  # one attempt per cell per invocation
            claimable.append(cell)
    return claimable, running, outcome


def run_grid(grid_name: str, profile: str, seeds: Sequence[int], *, store: RunStore,
             variants: Sequence[str] | None = None, overrides: dict[str, str] | None = None,
             workers: int = 1, device: str = "auto", threads: int | None = None,
             data_root: Path, retry_failed: bool = False,
             checkpoint_dir: Path | None = None, checkpoint_every: int = 1,
             grace_s: float = DEFAULT_GRACE_S, wait_for_others: bool = True,
             stack: int | None = None, settings: str | None = None,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)
             ) -> GridOutcome:
    """Run every unfinished cell of the grid, claiming each in the store.

    `stack`: seeds of a variant trained together as one stacked model (default: all of
    them on CUDA, one on the CPU; see default_stack).

    Other runners (processes or machines) may work on the same grid through the same
    store: each cell is claimed by exactly one. With `wait_for_others`, when only cells
    running elsewhere are left, this runner waits for them and takes over any whose owner
    stops sending heartbeats (`grace_s`), so the grid ends complete.

    A cell is found only under its full config: a store holding the grid's cells with other
    settings is refused (bench.identity) unless `settings` names a separate set of cells.
    """
    grid = get_grid(grid_name)
    cells = plan_cells(grid, profile, seeds, variants, overrides)
    profile_key = profile + study_suffix(settings)
    name = grid_study_name(grid_name, profile_key)
    existing = store.find_study(name)
    if existing is not None:
        check_same_settings(cells, ((r.cell, r.variant, r.config)
                                    for r in store.cell_runs(existing)),
                            f"the store's grid {grid_name}/{profile_key}")
    study_id = store.study_id(name, {"grid": grid_name, "profile": profile, "kind": "grid",
                                     **({"settings": settings} if settings else {})})
    for reaped in store.reap_interrupted(study_id, grace_s):
        log(f"{reaped}: its process ended before it finished; it will be rerun")
    attempted: set[str] = set()
    pending, running_elsewhere, outcome = _scan(cells, store, study_id, retry_failed, attempted)
    if not pending and not (running_elsewhere and wait_for_others):
        log(f"{grid_name}/{profile}: nothing to run: {outcome.already_done} of {len(cells)} "
            f"cells already finished" + _skips(outcome))
        return outcome
    resolved = resolve_device(device)
    stack = stack or default_stack(resolved, len(seeds))
    stacking = f", stacks of up to {stack} seeds" if stack > 1 else ""
    log(f"{grid_name}/{profile}: {len(pending)} of {len(cells)} cells to run "
        f"({outcome.already_done} already finished{_skips(outcome)}), {workers} worker(s)"
        f"{stacking}, store {store.url}")
    initially_done = outcome.already_done

    threads = threads or default_threads(workers if resolved.type == "cpu" else 1)
    progress = Progress(len(cells), outcome.already_done + len(outcome.skipped_diverged), workers,
                        cells[0].config.train.epochs, stack=stack)
    progress.pending = len(pending)

    def settle(job: Job, claimed: Sequence[tuple[Cell, int]],
               results: Sequence[dict[str, Any]]) -> None:
        for (cell, trial_id), result in zip(claimed, results, strict=True):
            settle_cell(cell, trial_id, result, job.key)
            if checkpoint_dir is not None and result["status"] == "ok":  # stored: spent
                checkpoint_path(str(checkpoint_dir), cell.config).unlink(missing_ok=True)
        if checkpoint_dir is not None and all(r["status"] == "ok" for r in results):
            checkpoint_path(str(checkpoint_dir), job.cells[0].config,
                            [c.seed for c in job.cells]).unlink(missing_ok=True)

    def settle_cell(cell: Cell, trial_id: int, result: dict[str, Any], job_key: str) -> None:
        heartbeat.remove(trial_id)
        stored = (store.finish_cell(trial_id, result["record"]) if result["status"] == "ok"
                  else store.fail_cell(trial_id, result["reason"], result["status"]))
        if not stored:  # this runner was silent too long; another one reran the cell
            outcome.skipped_running.append(cell.key)
            progress.cell_done(cell.key, "discarded: another runner took the cell over "
                                         "(no heartbeat from this one for the grace period)",
                               job_key)
        elif result["status"] == "ok":
            outcome.finished.append(cell.key)
            metrics = result["record"]["metrics"]
            flag = " (collapsed to near chance)" if metrics["collapsed"] else ""
            progress.cell_done(cell.key, f"test acc {metrics['final_test_accuracy']:.2%}{flag}",
                               job_key)
        else:
            kind = result["status"]
            outcome.failed.append(cell.key)
            progress.cell_done(cell.key, f"FAILED ({kind}): {result['reason'].splitlines()[0]}",
                               job_key)

    cell_args = (device, str(data_root), str(checkpoint_dir) if checkpoint_dir else None,
                 checkpoint_every)

    def start(job: Job) -> tuple[Job, list[tuple[Cell, int]]] | None:
        """Claim the job's cells in the store: (the job of the claimed cells, their trial
        ids), or None if other runners finished or took all of them since."""
        claimed: list[tuple[Cell, int]] = []
        for cell in job.cells:
            progress.pending = max(0, progress.pending - 1)
            attempted.add(cell.key)
            trial_id = store.claim_cell(study_id, cell.key, cell.variant, cell.seed,
                                        cell.config.to_dict())
            if trial_id is None:
                outcome.skipped_running.append(cell.key)
                progress.cell_done(cell.key, "skipped: finished or running elsewhere")
                continue
            heartbeat.add(trial_id)
            claimed.append((cell, trial_id))
        if not claimed:
            return None
        job = Job(tuple(cell for cell, _ in claimed))
        saved = checkpoint_dir is not None and checkpoint_path(
            str(checkpoint_dir), job.cells[0].config, [c.seed for c in job.cells])
        if saved and saved.exists():
            log(f"{job.key}: resuming from its checkpoint in {checkpoint_dir}")
        return job, claimed

    def more_work() -> list[Job]:
        """Cells that became claimable since (their owner died), as jobs; waits while
        others run."""
        while True:
            for reaped in store.reap_interrupted(study_id, grace_s):
                log(f"{reaped}: its owner is gone; taking it over")
                attempted.discard(reaped)  # tried while its owner held it: claim it now
            claimable, running, _ = _scan(cells, store, study_id, retry_failed, attempted)
            if claimable or not running or not wait_for_others:
                progress.pending += len(claimable)
                return plan_jobs(claimable, stack)
            time.sleep(min(HEARTBEAT_S, grace_s / 4))

    # Beat at least three times per grace period, so a live owner is never taken for dead.
    with Heartbeat(store.url, interval_s=min(HEARTBEAT_S, grace_s / 3)) as heartbeat:
        # only cells running elsewhere: wait for them, take over the dead
        jobs = plan_jobs(pending, stack) if pending else more_work()
        if workers <= 1:
            torch.set_num_threads(threads)
            while jobs:
                for job in jobs:
                    started = start(job)
                    if started is None:
                        continue
                    job, claimed = started
                    results = execute_job([c.config.to_dict() for c in job.cells], job.key,
                                          *cell_args, progress=progress.epoch)
                    settle(job, claimed, results)
                    if any(r["status"] == "interrupted" for r in results):
                        raise KeyboardInterrupt  # the user asked to stop; resumes next time
                jobs = more_work()
        else:
            _run_pool(jobs, workers, threads, start, settle, more_work, cell_args, progress)
    outcome.already_done = initially_done
    return outcome


Claimed = tuple[Job, list[tuple[Cell, int]]]


def _run_pool(pending: list[Job], workers: int, threads: int,
              start: Callable[[Job], Claimed | None],
              settle: Callable[[Job, Sequence[tuple[Cell, int]], Sequence[dict[str, Any]]], None],
              more_work: Callable[[], list[Job]], cell_args: tuple[Any, ...],
              progress: Progress) -> None:
    """Jobs in `workers` spawned processes, one thread each on CPU."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    runner_stop = context.Event()  # set on SIGTERM/SIGINT: workers checkpoint and stop
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(queue, threads, os.getpid(), runner_stop)) as pool, \
            stop_on_signals(runner_stop):
        in_flight: dict[Future[list[dict[str, Any]]], Claimed] = {}
        queued = list(pending)
        while queued or in_flight:
            if runner_stop.is_set():
                queued.clear()  # start nothing new; cells in flight checkpoint and return
            while queued and len(in_flight) < workers:
                started = start(queued.pop(0))
                if started is None:
                    continue
                job = started[0]
                future = pool.submit(execute_job, [c.config.to_dict() for c in job.cells],
                                     job.key, *cell_args)
                in_flight[future] = started
            done, _ = wait(list(in_flight), timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(queue, progress)
            for future in done:
                job, claimed = in_flight.pop(future)
                try:
                    results = future.result()
                except Exception as error:  # the worker process itself died
                    results = [{"status": "error", "reason": f"worker process failed: {error}"}
                               ] * len(claimed)
                settle(job, claimed, results)
            if not queued and not in_flight and not runner_stop.is_set():
                queued = more_work()
        _drain(queue, progress)
    if runner_stop.is_set():
        raise KeyboardInterrupt


def _drain(queue: Any, progress: Progress) -> None:
    while True:
        try:
            cell, summary = queue.get_nowait()
        except Exception:  # queue.Empty; also a queue closed by a dying worker
            return
        progress.epoch(cell, summary)


def _skips(outcome: GridOutcome) -> str:
    parts = []
    if outcome.skipped_running:
        parts.append(f", {len(outcome.skipped_running)} running elsewhere")
    if outcome.skipped_diverged:
        parts.append(f", {len(outcome.skipped_diverged)} diverged (kept; --retry-failed reruns)")
    return "".join(parts)

