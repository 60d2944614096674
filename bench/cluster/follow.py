"""`--wait`: a grid's progress on a cluster, read from the store, in the display a local run
shows (bench.runs.progress: tqdm bars in a terminal, plain lines elsewhere).

Every few seconds the grid's cells are read (read-only); a cell that has finished or failed
for good since the last look is reported once, with its accuracy and the host that ran it.
It ends when every cell is settled, or when no task of the array is left (then the cells
still open are counted and the same command resumes them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sslbench.bench.cluster.launch import Submitted
from sslbench.bench.runs.cells import Cell
from sslbench.bench.runs.progress import Progress
from sslbench.bench.store.queue import RETRIED_FAILURES
from sslbench.bench.store.runstore import CellRun, RunStore, latest_by_cell

POLL_S = 5.0  # seconds between looks at the store: a heartbeat is written every 10 s


@dataclass
class Followed:
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    open: list[str] = field(default_factory=list)  # neither finished nor failed for good


def settled(run: CellRun | None) -> bool:
    """Finished, or failed in a way no runner retries (diverged, an error)."""
    return run is not None and (run.state == "COMPLETE" or (
        run.state == "FAIL" and run.failure_kind not in RETRIED_FAILURES))


def _message(run: CellRun) -> str:
    where = f" on {run.owner.split(':')[0]}" if run.owner else ""
    if run.state == "COMPLETE" and run.record is not None:
        metrics = run.record["metrics"]
        flag = " (collapsed to near chance)" if metrics.get("collapsed") else ""
        return f"test acc {metrics['final_test_accuracy']:.2%}{flag}{where}"
    reason = (run.failure or "").splitlines()[0] if run.failure else "no reason stored"
    return f"FAILED ({run.failure_kind or 'error'}){where}: {reason}"


def follow_grid(store_url: str, study_id: int, cells: Sequence[Cell], submitted: Submitted,
                progress: Progress, poll_s: float = POLL_S) -> Followed:
    """Report each cell as it settles until all have or no task is left."""
    store = RunStore(store_url, read_only=True)
    reported: set[str] = set()
    while True:
        alive = submitted.alive()  # asked first: a task's last cell is stored before it ends
        latest = latest_by_cell(store.cell_runs(study_id))
        for cell in cells:
            run = latest.get(cell.key)
            if cell.key not in reported and run is not None and settled(run):
                reported.add(cell.key)
                progress.cell_done(cell.key, _message(run))
        if len(reported) == len(cells) or not alive:
            break
        time.sleep(poll_s)
    outcome = Followed()
    for cell in cells:
        run = latest.get(cell.key)
        if run is not None and run.state == "COMPLETE":
            outcome.finished.append(cell.key)
        elif settled(run):
            outcome.failed.append(cell.key)
        else:
            outcome.open.append(cell.key)
    return outcome
