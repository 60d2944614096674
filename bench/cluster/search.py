"""`sslbench search --launcher slurm|local`: Optuna workers as a job array on one study.

Each task is one `sslbench search` worker (bench.cluster.entry.SearchTask): it asks the
shared study for trials until the study holds `--trials` finished ones, so the tasks
together run exactly that many, and a trial whose task dies is asked again (the search's
own heartbeat and reaping).
"""

from __future__ import annotations

import time
from pathlib import Path

from sslbench.bench.cluster.entry import SearchTask, current_plugins
from sslbench.bench.cluster.grid import DEFAULT_MINUTES, default_log_dir
from sslbench.bench.cluster.launch import (
    ClusterOptions,
    Submitted,
    check_reachable,
    submit,
    time_minutes,
)
from sslbench.bench.cluster.shared import shared_folder, shared_store_url
from sslbench.bench.messages import Log, say
from sslbench.bench.runs.search import (
    SearchSettings,
    check_settings,
    open_study,
    refuse_unsafe_sqlite,
)
from sslbench.bench.store.names import SEARCH_PREFIX
from sslbench.bench.store.runstore import RunStore
from sslbench.bench.store.status import search_lines

DEFAULT_SEARCH_TASKS = 4  # TPE learns from finished trials: more at once explore blindly
POLL_S = 10.0


def launch_search(settings: SearchSettings, url: str, options: ClusterOptions, *,
                  device: str, data_root: Path, threads: int | None, log: Log = say) -> Submitted:
    check_settings(settings)
    url = shared_store_url(url, options.launcher)
    check_reachable(options.launcher)  # before the store is opened or created
    tasks = min(options.jobs or DEFAULT_SEARCH_TASKS, settings.trials)
    store = RunStore(url)
    refuse_unsafe_sqlite(store, settings, tasks)  # the local launcher's SQLite file
    open_study(store, settings)  # made here: `sslbench status` and --wait read it at once
    minutes = time_minutes(options.time) if options.time else DEFAULT_MINUTES
    task = SearchTask(settings, url, device, shared_folder(data_root),
                      threads or options.cpus_per_job, current_plugins())
    log_dir = shared_folder(options.log_dir or default_log_dir(url))
    submitted = submit(options, task, tasks, log_dir=log_dir,
                       name=f"sslbench-search-{settings.space}", minutes=minutes)
    log(f"search {settings.space}/{settings.profile}: {settings.trials} trials wanted; "
        f"submitted {options.launcher} job array {submitted.array_id} with {tasks} task(s), "
        f"{minutes} min each{'' if options.time else ' (the default; --time sets it)'}; "
        f"store {url}")
    log(f"logs: {submitted.log_pattern()}; progress: sslbench status --storage {url}; "
        f"{submitted.cancel_hint()}")
    if options.wait:
        follow_search(url, submitted, log)
    return submitted


def follow_search(url: str, submitted: Submitted, log: Log, poll_s: float = POLL_S) -> None:
    """A line each time the study's trial counts change, until no task is left."""
    last: list[str] = []
    while True:
        alive = submitted.alive()
        store = RunStore(url, read_only=True)
        lines = [line for name in store.study_names() if name.startswith(SEARCH_PREFIX)
                 for line in search_lines(store, name)]
        if lines != last:
            for line in lines:
                log(line)
            last = lines
        if not alive:
            return
        time.sleep(poll_s)

