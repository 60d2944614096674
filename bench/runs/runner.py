"""The grid runner: every (variant, seed) cell once, stored as it finishes.

Cells already finished are skipped; cells that crashed or were interrupted are retried;
a cell that fails is recorded with its reason and the grid goes on. `workers > 1` runs
cells in separate processes (bench.runs.pool: spawned; on CPU one thread each, never
oversubscribed). Claims, heartbeats and reaping are bench.store.queue's; a job's own
training is bench.runs.job's, and the cells and jobs are planned in bench.runs.cells.

With `stack > 1` the seeds of a variant are trained together, up to `stack` at a time, as
one stacked model (`bench.core.train.train_stack`): one job, one process, each cell still
claimed, recorded and reported on its own. A stack in which one run diverges is rerun one
cell at a time, so only the diverging seed is marked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sslbench.ablations.grid import Grid
from sslbench.bench.core.cost import (
    cpu_model_covers,
    duration,
    estimate,
    measured_run_seconds,
)
from sslbench.bench.core.device import resolve_device
from sslbench.bench.core.record import git_commit
from sslbench.bench.core.schema import Record
from sslbench.bench.errors import UserError
from sslbench.bench.messages import Log, say
from sslbench.bench.runs.cells import (
    Cell,
    Job,
    default_stack,
    default_threads,
    plan_cells,
    plan_jobs,
)
from sslbench.bench.runs.job import JobSpec, checkpoint_path, execute_job, job_results
from sslbench.bench.runs.pool import WorkerPool
from sslbench.bench.runs.progress import Progress
from sslbench.bench.runs.settings import GridSettings
from sslbench.bench.store.identity import check_same_settings
from sslbench.bench.store.names import grid_study_name, settings_suffix
from sslbench.bench.store.queue import (
    HEARTBEAT_S,
    RETRIED_FAILURES,
    Heartbeat,
    JobResult,
    beat_interval,
    claim_cell,
    reap_cells,
    settle,
    tidy_claims,
)
from sslbench.bench.store.runstore import RunStore, latest_by_cell


@dataclass
class GridOutcome:
    total: int
    already_done: int
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped_running: list[str] = field(default_factory=list)
    skipped_diverged: list[str] = field(default_factory=list)
    stopped: bool = False  # a stop was asked (SIGTERM, SIGINT): the cells in flight saved



@dataclass(frozen=True)
class Claimed:
    """A job whose cells this runner holds, with their trials in the store."""

    job: Job
    trial_ids: tuple[int, ...]


class GridRun:
    """This invocation's work on one grid study: the cells it tried, claimed and settled.

    Its state is explicit and changed only by its methods; `run_grid` drives it.
    """

    def __init__(self, store: RunStore, study_id: int, cells: Sequence[Cell],
                 settings: GridSettings, *, outcome: GridOutcome, progress: Progress,
                 heartbeat: Heartbeat, stack: int, log: Callable[[str], None]) -> None:
        self.store, self.study_id, self.cells = store, study_id, cells
        self.settings, self.stack, self.log = settings, stack, log
        self.outcome, self.progress, self.heartbeat = outcome, progress, heartbeat
        self.checkpoint_dir = settings.checkpoint_dir
        self.attempted: set[str] = set()  # one attempt per cell per invocation

    def spec(self, job: Job) -> JobSpec:
        """What the worker process needs to train the job: plain values."""
        s = self.settings
        return JobSpec(job.key, tuple(c.config.to_dict() for c in job.cells), s.device,
                       str(s.data_root), str(s.checkpoint_dir) if s.checkpoint_dir else None,
                       s.checkpoint_every)

    def next_jobs(self) -> list[Job]:
        """Cells claimable now (their owner died meanwhile, too), as jobs; waits while only
        cells running elsewhere are left (with wait_for_others)."""
        while True:
            for reaped in reap_cells(self.store, self.study_id, self.settings.grace_s):
                self.log(f"{reaped}: its owner is gone; taking it over")
                self.attempted.discard(reaped)  # tried while its owner held it: claim it now
            claimable, running, _ = scan(self.cells, self.store, self.study_id,
                                         self.settings.retry_failed, self.attempted)
            if claimable or not running or not self.settings.wait_for_others:
                self.progress.pending += len(claimable)
                return plan_jobs(claimable, self.stack)
            time.sleep(min(HEARTBEAT_S, self.settings.grace_s / 4))

    def claim(self, job: Job) -> Claimed | None:
        """Claim the job's cells in the store: the job of the cells claimed, or None if
        other runners finished or took all of them since."""
        cells, trial_ids = [], []
        for cell in job.cells:
            self.progress.pending = max(0, self.progress.pending - 1)
            self.attempted.add(cell.key)
            trial_id = claim_cell(self.store, self.study_id, cell.key, cell.variant, cell.seed,
                                  cell.config.to_dict())
            if trial_id is None:
                self.outcome.skipped_running.append(cell.key)
                self.progress.cell_done(cell.key, "skipped: finished or running elsewhere")
                continue
            self.heartbeat.add(trial_id)
            cells.append(cell)
            trial_ids.append(trial_id)
        if not cells:
            return None
        claimed = Claimed(Job(tuple(cells)), tuple(trial_ids))
        saved = self._checkpoint(claimed.job.cells)
        if saved is not None and saved.exists():
            self.log(f"{claimed.job.key}: resuming from its checkpoint in {self.checkpoint_dir}")
        return claimed

    def settle(self, claimed: Claimed, results: Sequence[JobResult]) -> None:
        """Store each cell's result; a cell's checkpoint goes once its record is stored."""
        for cell, trial_id, result in zip(claimed.job.cells, claimed.trial_ids, results,
                                          strict=True):
            self.heartbeat.remove(trial_id)
            self.progress.cell_done(cell.key, self._settle_cell(cell, trial_id, result),
                                    claimed.job.key)
            if result.ok:
                self._remove_checkpoint((cell,))
        if all(r.ok for r in results):
            self._remove_checkpoint(claimed.job.cells)

    def _settle_cell(self, cell: Cell, trial_id: int, result: JobResult) -> str:
        if not settle(self.store, trial_id, result):  # silent too long: another runner reran it
            self.outcome.skipped_running.append(cell.key)
            return ("discarded: another runner took the cell over (no heartbeat from this one "
                    "for the grace period)")
        if not result.ok:
            self.outcome.failed.append(cell.key)
            return f"FAILED ({result.status}): {result.reason.splitlines()[0]}"
        assert result.record is not None
        self.outcome.finished.append(cell.key)
        metrics = result.record["metrics"]
        flag = " (collapsed to near chance)" if metrics["collapsed"] else ""
        return f"test acc {metrics['final_test_accuracy']:.2%}{flag}"

    def _checkpoint(self, cells: Sequence[Cell]) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        return checkpoint_path(str(self.checkpoint_dir), cells[0].config,
                               [c.seed for c in cells])

    def _remove_checkpoint(self, cells: Sequence[Cell]) -> None:
        path = self._checkpoint(cells)
        if path is not None:
            path.unlink(missing_ok=True)


def scan(cells: Sequence[Cell], store: RunStore, study_id: int, retry_failed: bool,
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
        elif cell.key not in attempted:
            claimable.append(cell)
    return claimable, running, outcome


def open_grid_study(store: RunStore, grid_name: str, profile: str, settings: str | None,
                    cells: Sequence[Cell]) -> int:
    """The grid's study in the store, created if new. A store holding the grid's cells with
    other settings is refused (bench.identity) unless `settings` names a separate set."""
    profile_key = profile + settings_suffix(settings)
    name = grid_study_name(grid_name, profile_key)
    existing = store.find_study(name)
    if existing is not None:
        check_same_settings(cells, ((r.cell, r.variant, r.config)
                                    for r in store.cell_runs(existing)),
                            f"the store's grid {grid_name}/{profile_key}")
    study_id = store.study_id(name, {"grid": grid_name, "profile": profile, "kind": "grid",
                                     **({"settings": settings} if settings else {})})
    tidy_claims(store, study_id)  # spent claims that older versions left behind
    store.ask_for_cells(study_id, [c.key for c in cells])
    return study_id


def open_grid(grid: Grid, settings: GridSettings, store: RunStore, log: Log,
              owner: str = "process") -> tuple[list[Cell], int, list[Cell], list[str],
                                                GridOutcome]:
    """The grid's cells, its study (opened, its cells asked for), the dead owners' cells
    reaped, and the scan: (cells, study id, cells to run, cells running elsewhere, counts).
    `owner` names what ran a reaped cell in the log line (a process, a cluster task)."""
    cells = plan_cells(grid, settings.profile, settings.seeds, settings.variants,
                       settings.overrides)
    study_id = open_grid_study(store, grid.name, settings.profile, settings.settings_name,
                               cells)
    for reaped in reap_cells(store, study_id, settings.grace_s):
        log(f"{reaped}: its {owner} ended before it finished; it will be rerun")
    pending, running, outcome = scan(cells, store, study_id, settings.retry_failed, set())
    return cells, study_id, pending, running, outcome


def check_code_version(store: RunStore, study_id: int, where: str, pin: bool,
                       log: Log = say) -> None:
    """Before cells are added to a grid: the code versions its finished cells ran at
    against this process's. Pinned (`--pin-code`), a tree with uncommitted changes, an
    unknown commit or another commit than the grid's is refused; otherwise a mismatch is
    warned about, because pairs of old and new cells then mix code versions."""
    git = git_commit()
    here = f"{git['commit'][:12]}{' (dirty)' if git['dirty'] else ''}"
    ran = sorted({v for r in store.cell_runs(study_id)
                  if r.state == "COMPLETE" and r.record is not None
                  for v in Record.from_dict(r.record).code_versions})
    if pin and (git["dirty"] or git["commit"] == "unknown"):
        raise UserError(f"--pin-code: this code is {here}, not one clean commit; commit or "
                        f"stash the changes (or run from a clean `git worktree`), or drop "
                        f"--pin-code")
    others = [v for v in ran if v != here]
    if not others:
        return
    line = (f"{where}: its finished cells ran at {', '.join(ran)}; this runner is at {here}, "
            f"so pairs of old and new cells mix code versions")
    if pin:
        raise UserError(f"--pin-code: {line}; check out {others[0]} (a `git worktree` keeps "
                        f"your tree), or store the new cells apart with --settings NAME")
    log(f"warning: {line} (the report flags them; --pin-code refuses this)")


def _cost_rows(cells: Sequence[Cell]) -> list[tuple[str, int, int | None, int | None]]:
    return [(c.variant, c.config.train.epochs, c.config.data.train_size,
             c.config.data.test_size) for c in cells]


def start_estimate(grid: Grid, profile: str, pending: Sequence[Cell], store: RunStore,
                   study_id: int, workers: int, device: torch.device) -> str:
    """The start line's cost: the pending cells' expected wall time on these workers and this
    device (bench.core.cost, the model `sslbench plan` uses), and on a CPU, where that is
    long, the smoke profile's few minutes as a first try."""
    finished = ((r.variant, r.record) for r in store.cell_runs(study_id)
                if r.state == "COMPLETE")
    measured = measured_run_seconds(finished, device.type)
    unmodeled = {c.variant for c in pending if not cpu_model_covers(c.config)}
    expected = estimate(_cost_rows(pending), workers, device.type, measured, unmodeled)
    text = expected.text()
    if device.type == "cpu" and profile != "smoke" and (expected.seconds or 0) > 10 * 60:
        variants = sorted({c.variant for c in pending})
        smoke = plan_cells(grid, "smoke", range(2), variants)
        quick_try = estimate(_cost_rows(smoke), workers, "cpu", {})
        text += (f"; to try the grid first: --profile smoke --seeds 2 "
                 f"(about {duration(quick_try.seconds or 0)})")
    return text


def run_grid(grid: Grid, settings: GridSettings, *, store: RunStore, log: Log = say
             ) -> GridOutcome:
    """Run every unfinished cell of the grid, claiming each in the store (bench.store.queue).

    `settings.stack`: seeds of a variant trained together as one stacked model (default: all
    of them on CUDA, one on the CPU; see default_stack). Other runners (processes or
    machines) may share the grid through the store: each cell is claimed by exactly one.
    With `wait_for_others`, when only cells running elsewhere are left, this runner waits
    and takes over any whose owner stops beating (`grace_s`), so the grid ends complete.
    A stop (SIGTERM, SIGINT) checkpoints the cells in flight; the outcome says `stopped`.
    """
    git_commit()  # the code this runner loaded, before any cell trains
    cells, study_id, pending, running, outcome = open_grid(grid, settings, store, log)
    where = f"{grid.name}/{settings.profile}"
    if not pending and not (running and settings.wait_for_others):
        log(f"{where}: nothing to run: {outcome.already_done} of {len(cells)} cells already "
            f"finished" + _skips(outcome))
        return outcome
    if pending:
        check_code_version(store, study_id, where, settings.pin_code, log)
    device = resolve_device(settings.device)
    stack = settings.stack or default_stack(device, len(settings.seeds))
    cost = start_estimate(grid, settings.profile, pending, store, study_id, settings.workers,
                          device)
    log(f"{where}: {len(pending)} of {len(cells)} cells to run ({outcome.already_done} already "
        f"finished{_skips(outcome)}), {settings.workers} worker(s)"
        f"{f', stacks of up to {stack} seeds' if stack > 1 else ''}; {cost}; store {store.url}")
    progress = Progress(len(cells), outcome.already_done + len(outcome.skipped_diverged),
                        settings.workers, cells[0].config.train.epochs, stack=stack,
                        pending=len(pending))
    threads = settings.threads or default_threads(settings.workers if device.type == "cpu"
                                                  else 1)
    with progress, Heartbeat(store.url, beat_interval(settings.grace_s)) as heartbeat, \
            WorkerPool[Claimed, list[JobResult]](settings.workers, threads,
                                                 lambda m: progress.epoch(*m)) as pool:
        run = GridRun(store, study_id, cells, settings, outcome=outcome, progress=progress,
                      heartbeat=heartbeat, stack=stack, log=log)
        queued = plan_jobs(pending, stack) if pending else run.next_jobs()
        while queued or pool.in_flight:
            while queued and pool.has_room():
                if (claimed := run.claim(queued.pop(0))) is not None:
                    pool.submit(claimed, execute_job, run.spec(claimed.job))
            for claimed, future in pool.poll():
                run.settle(claimed, job_results(future, len(claimed.trial_ids)))
            if pool.stop_requested:
                queued.clear()  # start nothing new; the jobs in flight checkpoint and return
            elif not queued and not pool.in_flight:
                queued = run.next_jobs()
        outcome.stopped = pool.stop_requested
    return outcome


def _skips(outcome: GridOutcome) -> str:
    parts = []
    if outcome.skipped_running:
        parts.append(f", {len(outcome.skipped_running)} running elsewhere")
    if outcome.skipped_diverged:
        parts.append(f", {len(outcome.skipped_diverged)} diverged (kept; --retry-failed reruns)")
    return "".join(parts)
