"""`sslbench status`: where the work of a store stands, read-only, for any store.

Per grid: cells asked for, finished, running (with the host and process that run each and
the age of its last heartbeat), failed by kind, and left to run. Per search: trials
finished, running, failed and pruned. Run from a login node against a cluster's store, or
beside a local run; it never writes (the store is opened read-only).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from sslbench.bench.store.names import SEARCH_PREFIX, grid_study_parts, is_grid_study
from sslbench.bench.store.queue import DEFAULT_GRACE_S, RETRIED_FAILURES
from sslbench.bench.store.runstore import CellRun, RunStore, latest_by_cell, with_store_retries


@dataclass(frozen=True)
class GridStatus:
    """One grid study's cells by state; `left` is None where the store does not record
    the cells asked for (it predates the record)."""

    name: str
    asked: int | None
    done: int
    running: list[CellRun]
    failed: dict[str, int]  # failure kind -> cells whose latest attempt failed so
    retried: int  # failed cells that the next `sslbench ablate` reruns
    left: int | None  # asked for and never attempted


def grid_status(store: RunStore, study_name: str) -> GridStatus:
    study_id = store.storage.get_study_id_from_name(study_name)
    latest = latest_by_cell(store.cell_runs(study_id))
    asked = store.asked_cells(study_id)
    failed = [r for r in latest.values() if r.state == "FAIL"]
    return GridStatus(
        name=study_name,
        asked=None if asked is None else len(asked | set(latest)),
        done=sum(r.state == "COMPLETE" for r in latest.values()),
        running=sorted((r for r in latest.values() if r.state == "RUNNING"),
                       key=lambda r: r.cell),
        failed=dict(Counter(r.failure_kind or "error" for r in failed)),
        retried=sum((r.failure_kind or "error") in RETRIED_FAILURES for r in failed),
        left=None if asked is None else len(asked - set(latest)))


def _age(heartbeat: float | None, now: float) -> str:
    if heartbeat is None:
        return "no heartbeat yet"
    seconds = max(0.0, now - heartbeat)
    text = f"heartbeat {seconds:.0f} s ago"
    if seconds > DEFAULT_GRACE_S:
        text += " (silent past the grace period: the next runner takes it over)"
    return text


def grid_lines(status: GridStatus, now: float) -> list[str]:
    grid, profile, settings = grid_study_parts(status.name)
    title = f"{grid}/{profile}" + (f" @{settings}" if settings else "")
    counts = [f"{status.done} finished", f"{len(status.running)} running"]
    if status.failed:
        counts.append(f"{sum(status.failed.values())} failed (" + ", ".join(
            f"{n} {kind}" for kind, n in sorted(status.failed.items())) + ")")
    left = "? left (this store does not record the cells asked for)" if status.left is None \
        else f"{status.left + status.retried} left to run"
    asked = "" if status.asked is None else f"{status.asked} cells asked for: "
    lines = [f"{title}: {asked}" + ", ".join(counts) + f", {left}"]
    lines += [f"  running {r.cell} on {r.owner or 'an unknown owner'}, {_age(r.heartbeat, now)}"
              for r in status.running]
    return lines


def search_lines(store: RunStore, study_name: str) -> list[str]:
    study_id = store.storage.get_study_id_from_name(study_name)
    trials = with_store_retries(lambda: store.storage.get_all_trials(study_id, deepcopy=False))
    states = Counter(t.state.name.lower() for t in trials)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no trials"
    return [f"{study_name.removeprefix(SEARCH_PREFIX)} (search): {counts}"]


def status_lines(store: RunStore, grid: str | None = None) -> list[str]:
    """Every grid's and search's state in the store (only `grid`'s studies when given)."""
    now = time.time()
    lines: list[str] = []
    for name in sorted(store.study_names()):
        if is_grid_study(name) and (grid is None or grid_study_parts(name)[0] == grid):
            lines += grid_lines(grid_status(store, name), now)
        elif name.startswith(SEARCH_PREFIX) and grid is None:
            lines += search_lines(store, name)
    return lines or ["nothing stored yet" + (f" for grid {grid}" if grid else "")]
