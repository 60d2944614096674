"""The process pool that runs work (grid jobs, search workers): spawned processes, one
thread each on CPU, or the calling process itself for one worker.

Inside a job, `worker_stop()` is the stop request to check and `report(message)` sends a
progress message to the runner, wherever the job runs:
- **In-process** (workers=1): SIGTERM and SIGINT set the stop; messages go straight to the
  runner's handler, so the display stays live.
- **Spawned** (workers>1): the runner's signals set a shared event; each worker's watchdog
  thread turns it (or the runner's death: kill -9 skips all clean-up) into its stop, so the
  job checkpoints and the next run resumes it. An orphan then exits rather than train on
  for nobody. Messages travel through a queue that `poll` drains.

A stop is state, not an exception: the runner reads `stop_requested` and starts nothing new;
jobs in flight see `worker_stop()` set, save and return.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from typing import Any, Generic, TypeVar

import torch

from sslbench.bench.core.checkpoint import stop_on_signals
from sslbench.bench.plugins import load_plugins

T = TypeVar("T")  # what a job returns
Tag = TypeVar("Tag")  # what the runner attaches to a job to settle it

# -- inside a job --------------------------------------------------------------------------

_stop = threading.Event()  # this process's stop request
_barrier: Any = None  # shared by the pool's workers when asked (measurements start together)
_job_running = threading.Event()  # a job is in progress: an orphan waits for its checkpoint


def _discard(message: Any) -> None:
    del message


_report: Callable[[Any], None] = _discard  # where `report` sends: set per process


def worker_stop() -> threading.Event:
    """The stop request the job in this process must check."""
    return _stop


def worker_barrier() -> Any:
    """The barrier of a pool made with `barrier=True`: every worker waits at it, so their
    jobs start together (the two-process throughput measurement)."""
    assert _barrier is not None, "the pool was made without barrier=True"
    return _barrier


def report(message: Any) -> None:
    """Send a progress message to the runner."""
    _report(message)


def _run_job(fn: Callable[..., T], *args: Any) -> T:
    _stop.clear()
    _job_running.set()
    try:
        return fn(*args)
    finally:
        _job_running.clear()


def _init_worker(queue: Any, threads: int, parent_pid: int, runner_stop: Any,
                 barrier: Any = None) -> None:
    global _report, _barrier
    _report, _barrier = queue.put, barrier
    torch.set_num_threads(threads)
    load_plugins()  # the runner's --plugin files and modules, from the environment
    threading.Thread(target=_watch_runner, args=(parent_pid, runner_stop), daemon=True).start()


def _watch_runner(parent_pid: int, runner_stop: Any, poll_s: float = 0.5,
                  save_s: float = 120.0) -> None:
    while os.getppid() == parent_pid:
        if runner_stop.is_set():
            _stop.set()
        time.sleep(poll_s)
    _stop.set()
    deadline = time.monotonic() + save_s
    while _job_running.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)
    os._exit(1)


# -- the runner's side ---------------------------------------------------------------------


class WorkerPool(Generic[Tag, T]):
    """Up to `workers` jobs at once; `poll` returns the finished ones with their tags."""

    def __init__(self, workers: int, threads: int,
                 on_message: Callable[[Any], None] = _discard, *,
                 catch_signals: bool = True, spawn: bool | None = None,
                 fresh_processes: bool = False, barrier: bool = False) -> None:
        """catch_signals: SIGTERM and SIGINT request a stop (jobs that check `worker_stop`
        save and return); without it they raise KeyboardInterrupt as usual.
        spawn: run jobs in spawned processes (default: when workers > 1).
        fresh_processes: each job in a new process (a measurement's memory peak is its own).
        barrier: a barrier of `workers` parties for the jobs (`worker_barrier`)."""
        self.workers, self.threads, self.on_message = workers, threads, on_message
        self.catch_signals, self.barrier = catch_signals, barrier
        self.spawn = workers > 1 if spawn is None else spawn
        self.fresh_processes = fresh_processes
        self.in_flight: dict[Future[T], Tag] = {}
        self._done: list[tuple[Tag, Future[T]]] = []
        self._exit = ExitStack()
        self._pool: ProcessPoolExecutor | None = None
        self._queue: Any = None
        self._runner_stop: Any = _stop

    def __enter__(self) -> WorkerPool[Tag, T]:
        global _report, _barrier
        if not self.spawn:
            _stop.clear()  # a stop asked of an earlier pool in this process is spent
            _barrier = threading.Barrier(1) if self.barrier else None
            torch.set_num_threads(self.threads)
            _report = self.on_message
            self._exit.callback(_reset_report)
        else:
            context = mp.get_context("spawn")
            self._queue = context.Queue()
            self._runner_stop = context.Event()
            barrier = context.Barrier(self.workers) if self.barrier else None
            self._pool = self._exit.enter_context(ProcessPoolExecutor(
                max_workers=self.workers, mp_context=context, initializer=_init_worker,
                initargs=(self._queue, self.threads, os.getpid(), self._runner_stop, barrier),
                max_tasks_per_child=1 if self.fresh_processes else None))
        if self.catch_signals:
            self._exit.enter_context(stop_on_signals(self._runner_stop))
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()
        self._drain()

    @property
    def stop_requested(self) -> bool:
        return bool(self._runner_stop.is_set())

    def has_room(self) -> bool:
        """Whether to start another job: a free worker, no stop asked, and (in-process) the
        last job's result polled first, so every result is stored before the next job."""
        busy = len(self.in_flight) + len(self._done)
        return busy < max(1, self.workers) and not self.stop_requested

    def submit(self, tag: Tag, fn: Callable[..., T], *args: Any) -> None:
        """Start `fn(*args)`; in-process, it runs to its end before this returns."""
        if self._pool is None:
            future: Future[T] = Future()
            try:
                future.set_result(_run_job(fn, *args))
            except Exception as error:
                future.set_exception(error)
            self._done.append((tag, future))
        else:
            self.in_flight[self._pool.submit(_run_job, fn, *args)] = tag

    def poll(self, timeout_s: float = 0.5) -> Iterator[tuple[Tag, Future[T]]]:
        """The jobs finished since the last poll (their futures hold result or error),
        after passing on the progress messages that arrived meanwhile."""
        if self.in_flight:  # spawned workers (in-process jobs are done when submitted)
            done, _ = wait(list(self.in_flight), timeout=timeout_s, return_when=FIRST_COMPLETED)
            self._drain()
            self._done += [(self.in_flight.pop(future), future) for future in done]
        finished, self._done = self._done, []
        yield from finished

    def _drain(self) -> None:
        while self._queue is not None:
            try:
                message = self._queue.get_nowait()
            except Exception:  # queue.Empty; also a queue closed by a dying worker
                return
            self.on_message(message)


def _reset_report() -> None:
    global _report
    _report = _discard
