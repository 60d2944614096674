"""The grid runner: every (variant, seed) cell once, stored as it finishes.

Cells already finished are skipped; cells that crashed or were interrupted are retried;
a cell that fails is recorded with its reason and the grid goes on. `workers > 1` runs
cells in separate processes (spawned; on CPU one thread each, never oversubscribed).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ablations import get_grid
from ablations.grid import Grid
from bench.checkpoint import CheckpointPolicy, Interrupted, stop_on_signals
from bench.config import RunConfig, build_config, config_from_dict
from bench.errors import DivergedError
from bench.record import build_record
from bench.store import (
    DEFAULT_GRACE_S,
    HEARTBEAT_S,
    RETRIED_FAILURES,
    RunStore,
    grid_study_name,
    latest_by_cell,
)
from bench.train import EpochSummary, resolve_device, single_run


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
    # Seed-major order: an interrupted grid leaves whole seeds, i.e. complete pairs.
    return [Cell(v.name, seed, build_config(v.method, seed, profile, overrides, v.overrides))
            for seed in seeds for v in chosen]


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


def checkpoint_path(checkpoint_dir: str, config: RunConfig) -> Path:
    return Path(checkpoint_dir) / f"{config.config_hash()}.pt"


def execute_cell(config_dict: dict[str, Any], cell_key: str, device_name: str, data_root: str,
                 checkpoint_dir: str | None = None, checkpoint_every: int = 1,
                 progress: Callable[[str, EpochSummary], None] | None = None) -> dict[str, Any]:
    """Run one cell; never raises: returns {"status": "ok"|"diverged"|"error"|"interrupted"}.

    With a checkpoint folder the cell resumes from its checkpoint (named by run id), saves
    every `checkpoint_every` epochs and on SIGTERM/SIGINT, and removes it when finished.
    """
    _stop.clear()
    _cell_running.set()
    try:
        config = config_from_dict(config_dict)
        device = resolve_device(device_name)
        started = dt.datetime.now(dt.UTC)
        policy = (CheckpointPolicy(checkpoint_path(checkpoint_dir, config), checkpoint_every,
                                   stop=_stop) if checkpoint_dir else None)

        def report(summary: EpochSummary) -> None:
            if progress is not None:
                progress(cell_key, summary)
            elif _progress_queue is not None:
                _progress_queue.put((cell_key, summary))

        with stop_on_signals(_stop):
            result = single_run(config, device=device, data_root=Path(data_root),
                                progress=report, checkpoint=policy)
        record = build_record(config, result, device, started)
        if policy is not None:
            policy.path.unlink(missing_ok=True)
        return {"status": "ok", "record": record}
    except Interrupted as stopped:
        return {"status": "interrupted", "reason": f"interrupted: {stopped}"}
    except DivergedError as error:
        return {"status": "diverged", "reason": str(error)}
    except Exception as error:
        detail = traceback.format_exc(limit=8)
        return {"status": "error", "reason": f"{type(error).__name__}: {error}\n{detail}"}
    finally:
        _cell_running.clear()


# -- progress ------------------------------------------------------------------------------


class Progress:
    """One line per epoch: cells done / total, the cell's epoch and accuracy, time left."""

    def __init__(self, total: int, done: int, workers: int, epochs_per_cell: int,
                 stream: Any = sys.stderr) -> None:
        self.total, self.done, self.workers = total, done, workers
        self.epochs_per_cell = epochs_per_cell
        self.stream = stream
        self.epoch_seconds: list[float] = []
        self.epochs_left_in_flight: dict[str, int] = {}
        self.pending = 0

    def epoch(self, cell: str, summary: EpochSummary) -> None:
        self.epoch_seconds.append(summary.epoch_seconds + summary.eval_seconds)
        self.epochs_left_in_flight[cell] = summary.epochs - summary.epoch - 1
        recent = self.epoch_seconds[-20:]
        per_epoch = sum(recent) / len(recent)
        epochs_left = (sum(self.epochs_left_in_flight.values())
                       + self.pending * self.epochs_per_cell)
        eta = per_epoch * epochs_left / self.workers
        acc = ", ".join(f"{a:.2%}" for a in summary.test_accuracy)
        print(f"[{self.done}/{self.total} cells] {cell} epoch {summary.epoch + 1}/{summary.epochs}"
              f" test acc {acc} w {summary.weight:.4f} "
              f"{summary.train_images_per_s:,.0f} img/s | ~{_duration(eta)} left",
              file=self.stream, flush=True)

    def cell_done(self, cell: str, message: str) -> None:
        self.done += 1
        self.epochs_left_in_flight.pop(cell, None)
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
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)
             ) -> GridOutcome:
    """Run every unfinished cell of the grid, claiming each in the store.

    Other runners (processes or machines) may work on the same grid through the same
    store: each cell is claimed by exactly one. With `wait_for_others`, when only cells
    running elsewhere are left, this runner waits for them and takes over any whose owner
    stops sending heartbeats (`grace_s`), so the grid ends complete.
    """
    grid = get_grid(grid_name)
    cells = plan_cells(grid, profile, seeds, variants, overrides)
    study_id = store.study_id(grid_study_name(grid_name, profile),
                              {"grid": grid_name, "profile": profile, "kind": "grid"})
    for reaped in store.reap_interrupted(study_id, grace_s):
        log(f"{reaped}: its process ended before it finished; it will be rerun")
    attempted: set[str] = set()
    pending, running_elsewhere, outcome = _scan(cells, store, study_id, retry_failed, attempted)
    if not pending and not (running_elsewhere and wait_for_others):
        log(f"{grid_name}/{profile}: nothing to run: {outcome.already_done} of {len(cells)} "
            f"cells already finished" + _skips(outcome))
        return outcome
    log(f"{grid_name}/{profile}: {len(pending)} of {len(cells)} cells to run "
        f"({outcome.already_done} already finished{_skips(outcome)}), {workers} worker(s), "
        f"store {store.url}")
    initially_done = outcome.already_done

    resolved = resolve_device(device)
    threads = threads or default_threads(workers if resolved.type == "cpu" else 1)
    progress = Progress(len(cells), outcome.already_done + len(outcome.skipped_diverged), workers,
                        cells[0].config.train.epochs)
    progress.pending = len(pending)

    def settle(cell: Cell, trial_id: int, result: dict[str, Any]) -> None:
        heartbeat.remove(trial_id)
        stored = (store.finish_cell(trial_id, result["record"]) if result["status"] == "ok"
                  else store.fail_cell(trial_id, result["reason"], result["status"]))
        if not stored:  # this runner was silent too long; another one reran the cell
            outcome.skipped_running.append(cell.key)
            progress.cell_done(cell.key, "discarded: another runner took the cell over "
                                         "(no heartbeat from this one for the grace period)")
        elif result["status"] == "ok":
            outcome.finished.append(cell.key)
            metrics = result["record"]["metrics"]
            flag = " (collapsed to near chance)" if metrics["collapsed"] else ""
            progress.cell_done(cell.key, f"test acc {metrics['final_test_accuracy']:.2%}{flag}")
        else:
            kind = result["status"]
            outcome.failed.append(cell.key)
            progress.cell_done(cell.key, f"FAILED ({kind}): {result['reason'].splitlines()[0]}")

    cell_args = (device, str(data_root), str(checkpoint_dir) if checkpoint_dir else None,
                 checkpoint_every)

    def start(cell: Cell) -> int | None:
        """Claim the cell in the store; None if another runner finished or took it since."""
        progress.pending = max(0, progress.pending - 1)
        attempted.add(cell.key)
        trial_id = store.claim_cell(study_id, cell.key, cell.variant, cell.seed,
                                    cell.config.to_dict())
        if trial_id is None:
            outcome.skipped_running.append(cell.key)
            progress.cell_done(cell.key, "skipped: finished or running elsewhere")
            return None
        heartbeat.add(trial_id)
        saved = checkpoint_dir is not None and checkpoint_path(str(checkpoint_dir), cell.config)
        if saved and saved.exists():
            log(f"{cell.key}: resuming from its checkpoint in {checkpoint_dir}")
        return trial_id

    def more_work() -> list[Cell]:
        """Cells that became claimable since (their owner died); waits while others run."""
        while True:
            for reaped in store.reap_interrupted(study_id, grace_s):
                log(f"{reaped}: its owner is gone; taking it over")
                attempted.discard(reaped)  # tried while its owner held it: claim it now
            claimable, running, _ = _scan(cells, store, study_id, retry_failed, attempted)
            if claimable or not running or not wait_for_others:
                progress.pending += len(claimable)
                return claimable
            time.sleep(min(HEARTBEAT_S, grace_s / 4))

    # Beat at least three times per grace period, so a live owner is never taken for dead.
    with Heartbeat(store.url, interval_s=min(HEARTBEAT_S, grace_s / 3)) as heartbeat:
        if not pending:  # only cells running elsewhere: wait for them, take over the dead
            pending = more_work()
        if workers <= 1:
            torch.set_num_threads(threads)
            while pending:
                for cell in pending:
                    trial_id = start(cell)
                    if trial_id is None:
                        continue
                    result = execute_cell(cell.config.to_dict(), cell.key, *cell_args,
                                          progress=progress.epoch)
                    settle(cell, trial_id, result)
                    if result["status"] == "interrupted":
                        raise KeyboardInterrupt  # the user asked to stop; resumes next time
                pending = more_work()
        else:
            _run_pool(pending, workers, threads, start, settle, more_work, cell_args, progress)
    outcome.already_done = initially_done
    return outcome


def _run_pool(pending: list[Cell], workers: int, threads: int,
              start: Callable[[Cell], int | None],
              settle: Callable[[Cell, int, dict[str, Any]], None],
              more_work: Callable[[], list[Cell]], cell_args: tuple[Any, ...],
              progress: Progress) -> None:
    """Cells in `workers` spawned processes, one thread each on CPU."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    runner_stop = context.Event()  # set on SIGTERM/SIGINT: workers checkpoint and stop
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(queue, threads, os.getpid(), runner_stop)) as pool, \
            stop_on_signals(runner_stop):
        in_flight: dict[Future[dict[str, Any]], tuple[Cell, int]] = {}
        queued = list(pending)
        while queued or in_flight:
            if runner_stop.is_set():
                queued.clear()  # start nothing new; cells in flight checkpoint and return
            while queued and len(in_flight) < workers:
                cell = queued.pop(0)
                trial_id = start(cell)
                if trial_id is None:
                    continue
                future = pool.submit(execute_cell, cell.config.to_dict(), cell.key, *cell_args)
                in_flight[future] = (cell, trial_id)
            done, _ = wait(list(in_flight), timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(queue, progress)
            for future in done:
                cell, trial_id = in_flight.pop(future)
                try:
                    result = future.result()
                except Exception as error:  # the worker process itself died
                    result = {"status": "error", "reason": f"worker process failed: {error}"}
                settle(cell, trial_id, result)
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

