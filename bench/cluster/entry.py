"""What one task of a job array runs: an ordinary runner on the shared store.

A task claims cells through the store's queue like any `sslbench ablate` (or trials like any
`sslbench search` worker), so tasks never run a cell twice and a task that dies leaves its
cells to the others. Signals, as Slurm sends them:

- **SIGTERM** (`scancel`, `scontrol requeue`, a node going down): the runner's own stop; the
  cells in flight save their checkpoints and are released as interrupted, so the next runner
  (a sibling task, the requeued task, or the same command again) resumes them.
- **SIGUSR2** (submitit's `--signal=USR2@90`: preemption, or the time limit near): the same
  stop, then the task requeues itself (`scontrol requeue`), and the requeued task resumes.

submitit's own handlers ignore SIGTERM and, on SIGUSR2, requeue at once without waiting for
the training loop; ours replace them while the runner works, so nothing is cut mid-save.
The objects here travel to the node as submitit's pickle in the log folder, which only its
owner can write (bench.cluster.launch makes it so).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslbench.bench.messages import say
from sslbench.bench.runs.settings import GridSettings

REQUEUE_ENV = "SLURM_JOB_ID"  # set by Slurm in every job; absent in the local executor


def current_plugins() -> tuple[str, ...]:
    """The plugins this process loaded (`--plugin`), for the tasks to load first: a task
    may start on a node whose environment lacks them."""
    from sslbench.bench.plugins import PLUGINS_ENV

    return tuple(s for s in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if s)


@contextmanager
def stop_then_requeue() -> Iterator[threading.Event]:
    """While inside, SIGUSR2 asks the runner to stop, as SIGTERM does (the runner's handler
    for SIGTERM is whichever is installed when the signal arrives), and the event records
    that the task was preempted; the caller requeues once the runner has saved."""
    preempted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield preempted
        return

    def on_usr2(signum: int, frame: Any) -> None:
        del signum, frame
        preempted.set()
        os.kill(os.getpid(), signal.SIGTERM)  # the runner's stop: save and release the cells

    previous = signal.signal(signal.SIGUSR2, on_usr2)
    try:
        yield preempted
    finally:
        signal.signal(signal.SIGUSR2, previous)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises KeyboardInterrupt, the stop a search understands
    (submitit would ignore it until Slurm's SIGKILL)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        del signum, frame
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def requeue_this_task() -> str:
    """Put this Slurm task back in the queue (it restarts from the top and resumes its cells
    from their checkpoints); what was done, in words."""
    job_id = os.environ.get(REQUEUE_ENV)
    if not job_id:
        return "not under Slurm: run the same command again to resume"
    done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return f"scontrol requeue {job_id} failed: {done.stderr.strip() or done.returncode}"
    return f"requeued as job {job_id}"


@dataclass(frozen=True)
class GridTask:
    """One array task of `ablate --launcher`: `run_grid` on the shared store."""

    grid: str
    settings: GridSettings
    url: str
    plugins: tuple[str, ...] = ()

    def __call__(self) -> dict[str, int]:
        from sslbench.ablations import get_grid
        from sslbench.bench.plugins import load_plugins
        from sslbench.bench.runs.runner import run_grid
        from sslbench.bench.store.runstore import RunStore

        load_plugins(self.plugins)
        say(f"task on {os.uname().nodename}, pid {os.getpid()}: {self.grid}/"
            f"{self.settings.profile}, store {self.url}")
        with stop_then_requeue() as preempted:
            outcome = run_grid(get_grid(self.grid), self.settings, store=RunStore(self.url),
                               log=say)
        summary = {"finished": len(outcome.finished), "failed": len(outcome.failed),
                   "stopped": int(outcome.stopped)}
        if outcome.stopped:  # the cells in flight were settled as interrupted: not failures
            say(f"task ends: {summary['finished']} cells finished here; stopped: the cells in "
                f"flight are checkpointed and released for the next runner")
        else:
            say(f"task ends: {summary['finished']} cells finished here, {summary['failed']} "
                f"failed")
        if preempted.is_set():
            say(f"preempted: {requeue_this_task()}")
        return summary


@dataclass(frozen=True)
class SearchTask:
    """One array task of `search --launcher`: one Optuna worker on the shared study."""

    settings: Any  # bench.runs.search.SearchSettings
    url: str
    device: str
    data_root: Path
    threads: int | None
    plugins: tuple[str, ...] = ()

    def __call__(self) -> dict[str, int]:
        from sslbench.bench.plugins import load_plugins
        from sslbench.bench.runs.search import run_search

        load_plugins(self.plugins)
        say(f"task on {os.uname().nodename}, pid {os.getpid()}: search, store {self.url}")
        with stop_then_requeue() as preempted, sigterm_interrupts():
            try:
                run_search(self.settings, self.url, workers=1, device=self.device,
                           data_root=self.data_root, threads=self.threads, log=say)
            except KeyboardInterrupt:  # the search's stop: its trial in flight told failed
                say("task stopped: the trial in flight is marked failed and asked again")
        if preempted.is_set():
            say(f"preempted: {requeue_this_task()}")
        return {"finished": 1}
