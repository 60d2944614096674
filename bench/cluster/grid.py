"""`sslbench ablate --launcher slurm|local`: a grid as a job array of ordinary runners.

Here, on the submitting machine: the store is checked to be reachable from every node and
its paths made absolute, the grid's study is opened (its cells asked for, so `sslbench
status` counts them from the start), the cells left are counted and grouped into jobs as a
local run would (stacks of seeds on a GPU), and that many tasks are submitted, at most
`--jobs`. Each task is `run_grid` on the store (bench.cluster.entry.GridTask): the store's
claims decide which task runs which cell, so a task that ends early, is cancelled or is
requeued loses nothing, and the same command run again submits only what is left.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

import torch

from sslbench.ablations.grid import Grid
from sslbench.bench.cluster.entry import GridTask, current_plugins
from sslbench.bench.cluster.follow import Followed, follow_grid
from sslbench.bench.cluster.launch import (
    ClusterOptions,
    Submitted,
    check_reachable,
    submit,
    time_minutes,
)
from sslbench.bench.cluster.shared import shared_folder, shared_store_url
from sslbench.bench.core.cost import (
    cpu_model_covers,
    duration,
    estimate,
    measured_run_seconds,
)
from sslbench.bench.messages import Log, say
from sslbench.bench.runs.cells import default_stack, plan_jobs
from sslbench.bench.runs.progress import Progress
from sslbench.bench.runs.runner import check_code_version, open_grid
from sslbench.bench.runs.settings import GridSettings
from sslbench.bench.store.runstore import RunStore

DEFAULT_MINUTES = 240  # --time where nothing is measured or modeled for the device
MIN_MINUTES = 30  # a task's time is never shorter: scheduling and start-up take minutes


@dataclasses.dataclass
class LaunchOutcome:
    submitted: Submitted | None  # None: nothing left to run
    followed: Followed | None  # with --wait
    total: int
    already_done: int


def default_log_dir(url: str) -> Path:
    """Beside a journal or SQLite store (`runs.log` -> `runs.log.jobs/`), else
    ./sslbench-jobs: where submitit writes each task's script, pickle and log."""
    for scheme in ("journal:///", "sqlite:///"):
        if url.startswith(scheme):
            return Path(url.removeprefix(scheme) + ".jobs")
    return Path("sslbench-jobs")


def task_settings(settings: GridSettings, options: ClusterOptions) -> GridSettings:
    """The settings each task runs with: one worker using the task's CPUs as threads (on a
    GPU, one stacked job at a time), absolute paths, and no waiting for cells that other
    tasks run (a task ends when nothing is left to claim; its siblings finish the rest)."""
    return dataclasses.replace(
        settings, workers=1, threads=settings.threads or options.cpus_per_job,
        data_root=shared_folder(settings.data_root),
        checkpoint_dir=shared_folder(settings.checkpoint_dir) if settings.checkpoint_dir
        else None,
        wait_for_others=False)


def _task_minutes(options: ClusterOptions, cost_rows: list[tuple[str, int, int | None,
                  int | None]], measured: dict[str, float], tasks: int,
                  device_type: str, unmodeled: set[str]) -> tuple[int, str]:
    """--time, or twice the expected share of one task (at least MIN_MINUTES)."""
    if options.time is not None:
        return time_minutes(options.time), "--time"
    expected = estimate(cost_rows, tasks, device_type, measured, unmodeled).seconds
    if expected is None:
        return DEFAULT_MINUTES, "no estimate for this device: the default; set --time"
    minutes = max(MIN_MINUTES, math.ceil(2 * expected / 60))
    return minutes, f"twice the expected {duration(expected)} per task; --time sets it"


def launch_grid(grid: Grid, settings: GridSettings, url: str, options: ClusterOptions, *,
                log: Log = say) -> LaunchOutcome:
    url = shared_store_url(url, options.launcher)
    check_reachable(options.launcher)  # before the store is opened or created
    settings = task_settings(settings, options)
    store = RunStore(url)
    cells, study_id, pending, running, outcome = open_grid(grid, settings, store, log,
                                                           owner="task")
    where = f"{grid.name}/{settings.profile}"
    if not pending:
        log(f"{where}: nothing to submit: {outcome.already_done} of {len(cells)} cells "
            f"finished" + (f", {len(running)} running" if running else ""))
        return LaunchOutcome(None, None, len(cells), outcome.already_done)
    check_code_version(store, study_id, where, settings.pin_code, log)
    device_type = "cuda" if options.gpus_per_job else "cpu"
    stack = settings.stack or default_stack(torch.device(device_type), len(settings.seeds))
    jobs = plan_jobs(pending, stack)
    tasks = min(options.jobs or len(jobs), len(jobs))  # never more tasks than jobs
    if options.launcher == "local" and options.jobs is None:  # this machine's cores, shared
        tasks = min(tasks, max(1, (os.cpu_count() or 1) // options.cpus_per_job))
    rows = [(c.variant, c.config.train.epochs, c.config.data.train_size,
             c.config.data.test_size) for c in pending]
    measured = measured_run_seconds(((r.variant, r.record) for r in store.cell_runs(study_id)
                                     if r.state == "COMPLETE"), device_type)
    unmodeled = {c.variant for c in pending if not cpu_model_covers(c.config)}
    minutes, why = _task_minutes(options, rows, measured, tasks, device_type, unmodeled)
    log_dir = shared_folder(options.log_dir or default_log_dir(url))
    task = GridTask(grid.name, dataclasses.replace(settings, stack=stack), url,
                    current_plugins())
    submitted = submit(options, task, tasks, log_dir=log_dir, name=f"sslbench-{grid.name}",
                       minutes=minutes)
    resources = f"{options.cpus_per_job} CPU(s)" + (
        f", {options.gpus_per_job} GPU(s)" if options.gpus_per_job else "")
    kind = "Slurm job array" if options.launcher == "slurm" else "local job array"
    log(f"{where}: {len(pending)} of {len(cells)} cells to run ({outcome.already_done} already "
        f"finished) in {len(jobs)} job(s){f' of up to {stack} seeds' if stack > 1 else ''}; "
        f"submitted {kind} {submitted.array_id} with {tasks} task(s), {resources} and "
        f"{minutes} min each ({why}); store {url}")
    log(f"logs: {submitted.log_pattern()}; progress: sslbench status --storage {url} --grid "
        f"{grid.name}; {submitted.cancel_hint()}")
    followed = None
    if options.wait:
        progress = Progress(len(cells), outcome.already_done, tasks,
                            cells[0].config.train.epochs, stream=sys.stderr, stack=stack,
                            pending=len(pending))
        with progress:
            followed = follow_grid(url, study_id, pending,
                                   submitted, progress)
    return LaunchOutcome(submitted, followed, len(cells), outcome.already_done)
