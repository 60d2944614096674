"""The grid runner: every (variant, seed) cell once, stored as it finishes.

Cells already finished are skipped; cells that crashed or were interrupted are retried;
a cell that fails is recorded with its reason and the grid goes on. `workers > 1` runs
cells in separate processes (bench.pool: spawned; on CPU one thread each, never
oversubscribed). Claims, heartbeats and reaping are bench.queue's.

With `stack > 1` the seeds of a variant are trained together, up to `stack` at a time, as
one stacked model (`bench.train.train_stack`): one job, one process, each cell still
claimed, recorded and reported on its own. A stack in which one run diverges is rerun one
cell at a time, so only the diverging seed is marked.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from sslbench.ablations import get_grid
from sslbench.ablations.grid import Grid
from sslbench.bench.core.checkpoint import CheckpointPolicy
from sslbench.bench.core.config import RunConfig, build_config, config_from_dict
from sslbench.bench.core.cost import duration, estimate, measured_run_seconds
from sslbench.bench.core.device import resolve_device
from sslbench.bench.core.record import build_record, git_commit
from sslbench.bench.core.train import Stopped, train_until_stopped
from sslbench.bench.errors import DivergedError
from sslbench.bench.messages import Log, say
from sslbench.bench.runs.pool import WorkerPool, report, worker_stop
from sslbench.bench.runs.progress import Progress
from sslbench.bench.store.identity import check_same_settings
from sslbench.bench.store.names import grid_study_name, settings_suffix
from sslbench.bench.store.queue import (
    DEFAULT_GRACE_S,
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
    stopped: bool = False  # a stop was asked (SIGTERM, SIGINT): the cells in flight saved


def default_threads(workers: int) -> int:
    """Threads per worker on CPU: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


# -- one job, in whichever process runs it ------------------------------------------------


def checkpoint_path(checkpoint_dir: str, config: RunConfig,
                    seeds: Sequence[int] | None = None) -> Path:
    """A cell's checkpoint, named by its run id; a stack's adds the seeds it trains."""
    if seeds is None or len(seeds) == 1:
        return Path(checkpoint_dir) / f"{config.config_hash()}.pt"
    return Path(checkpoint_dir) / f"{config.config_hash()}-seeds{'_'.join(map(str, seeds))}.pt"


@dataclass(frozen=True)
class JobSpec:
    """What a worker process needs to train a job: plain values, cheap to send."""

    key: str  # the job's name in progress lines, e.g. "control/seed0"
    configs: tuple[dict[str, Any], ...]  # one variant's configs, differing only in seed
    device: str
    data_root: str
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1


def execute_job(spec: JobSpec) -> list[JobResult]:
    """Train the cells of one job as one stack; never raises: one JobResult per cell.

    With a checkpoint folder the job resumes from its checkpoint (named by run id and
    seeds), saves every `checkpoint_every` epochs and when asked to stop; the runner
    removes it once the records are stored. A stack that diverges is rerun cell by cell,
    so only the diverging seed is marked; a stop asked meanwhile leaves the cells not yet
    rerun interrupted.
    """
    git_commit()  # this process's code, read before training (bench.record.git_commit)
    results = _attempt(spec, spec.configs)
    if len(spec.configs) == 1 or results[0].status != "diverged":
        return results
    stopped = JobResult("interrupted", reason="interrupted before its rerun")
    return [_attempt(spec, [c])[0] if not worker_stop().is_set() else stopped
            for c in spec.configs]


def _attempt(spec: JobSpec, config_dicts: Sequence[dict[str, Any]]) -> list[JobResult]:
    """One training of the configs as one stack; its outcome per cell, never raising."""
    cells = len(config_dicts)
    policy = None
    try:
        configs = [config_from_dict(c) for c in config_dicts]
        seeds = [c.seed for c in configs]
        device = resolve_device(spec.device)
        started = dt.datetime.now(dt.UTC)
        if spec.checkpoint_dir:
            policy = CheckpointPolicy(checkpoint_path(spec.checkpoint_dir, configs[0], seeds),
                                      spec.checkpoint_every, stop=worker_stop())
        outcome = train_until_stopped(configs[0], seeds, device=device,
                                      data_root=Path(spec.data_root),
                                      progress=lambda summary: report((spec.key, summary)),
                                      checkpoint=policy)
        if isinstance(outcome, Stopped):
            return [JobResult("interrupted", reason=f"interrupted: stopped at epoch "
                                                    f"{outcome.epoch + 1}, step {outcome.step}; "
                                                    f"checkpoint saved to {outcome.checkpoint}")
                    ] * cells
        # The checkpoint stays until the runner has stored the records (GridRun.settle): a
        # store write that fails (a full disk) then costs at most the last epoch.
        return [JobResult("ok", record=build_record(config, result, device, started))
                for config, result in zip(configs, outcome, strict=True)]
    except DivergedError as error:
        if cells > 1 and policy is not None:  # its cells rerun alone: never resumed
            policy.path.unlink(missing_ok=True)
        return [JobResult("diverged", reason=str(error))] * cells
    except Exception as error:
        detail = traceback.format_exc(limit=8)
        return [JobResult("error", reason=f"{type(error).__name__}: {error}\n{detail}")] * cells


# -- the grid ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A job whose cells this runner holds, with their trials in the store."""

    job: Job
    trial_ids: tuple[int, ...]


class GridRun:
    """This invocation's work on one grid study: the cells it tried, claimed and settled.

    Its state is explicit and changed only by its methods; `run_grid` drives it.
    """

    def __init__(self, store: RunStore, study_id: int, cells: Sequence[Cell], *,
                 outcome: GridOutcome, progress: Progress, heartbeat: Heartbeat, stack: int,
                 spec: Callable[[Job], JobSpec], retry_failed: bool, grace_s: float,
                 wait_for_others: bool, checkpoint_dir: Path | None,
                 log: Callable[[str], None]) -> None:
        self.store, self.study_id, self.cells = store, study_id, cells
        self.outcome, self.progress, self.heartbeat = outcome, progress, heartbeat
        self.stack, self.spec, self.retry_failed = stack, spec, retry_failed
        self.grace_s, self.wait_for_others = grace_s, wait_for_others
        self.checkpoint_dir, self.log = checkpoint_dir, log
        self.attempted: set[str] = set()  # one attempt per cell per invocation

    def next_jobs(self) -> list[Job]:
        """Cells claimable now (their owner died meanwhile, too), as jobs; waits while only
        cells running elsewhere are left (with wait_for_others)."""
        while True:
            for reaped in reap_cells(self.store, self.study_id, self.grace_s):
                self.log(f"{reaped}: its owner is gone; taking it over")
                self.attempted.discard(reaped)  # tried while its owner held it: claim it now
            claimable, running, _ = scan(self.cells, self.store, self.study_id,
                                         self.retry_failed, self.attempted)
            if claimable or not running or not self.wait_for_others:
                self.progress.pending += len(claimable)
                return plan_jobs(claimable, self.stack)
            time.sleep(min(HEARTBEAT_S, self.grace_s / 4))

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
    return study_id


def _cost_rows(cells: Sequence[Cell]) -> list[tuple[str, int, int | None, int | None]]:
    return [(c.variant, c.config.train.epochs, c.config.data.train_size,
             c.config.data.test_size) for c in cells]


def start_estimate(grid_name: str, profile: str, pending: Sequence[Cell], store: RunStore,
                   study_id: int, workers: int, device: torch.device) -> str:
    """The start line's cost: the pending cells' expected wall time on these workers and this
    device (bench.cost, the model `sslbench plan` uses), and on a CPU, where that is long,
    the smoke profile's few minutes as a first try."""
    finished = ((r.variant, r.record) for r in store.cell_runs(study_id)
                if r.state == "COMPLETE")
    measured = measured_run_seconds(finished, device.type)
    expected = estimate(_cost_rows(pending), workers, device.type, measured)
    text = expected.text()
    if device.type == "cpu" and profile != "smoke" and (expected.seconds or 0) > 10 * 60:
        variants = sorted({c.variant for c in pending})
        smoke = plan_cells(get_grid(grid_name), "smoke", range(2), variants)
        quick_try = estimate(_cost_rows(smoke), workers, "cpu", {})
        text += (f"; to try the grid first: --profile smoke --seeds 2 "
                 f"(about {duration(quick_try.seconds or 0)})")
    return text


def run_grid(grid_name: str, profile: str, seeds: Sequence[int], *, store: RunStore,
             variants: Sequence[str] | None = None, overrides: dict[str, str] | None = None,
             workers: int = 1, device: str = "auto", threads: int | None = None,
             data_root: Path, retry_failed: bool = False,
             checkpoint_dir: Path | None = None, checkpoint_every: int = 1,
             grace_s: float = DEFAULT_GRACE_S, wait_for_others: bool = True,
             stack: int | None = None, settings: str | None = None,
             log: Log = say
             ) -> GridOutcome:
    """Run every unfinished cell of the grid, claiming each in the store (bench.queue).

    `stack`: seeds of a variant trained together as one stacked model (default: all of
    them on CUDA, one on the CPU; see default_stack). Other runners (processes or machines)
    may share the grid through the store: each cell is claimed by exactly one. With
    `wait_for_others`, when only cells running elsewhere are left, this runner waits and
    takes over any whose owner stops beating (`grace_s`), so the grid ends complete.
    A stop (SIGTERM, SIGINT) checkpoints the cells in flight; the outcome says `stopped`.
    """
    git_commit()  # the code this runner loaded, before any cell trains
    cells = plan_cells(get_grid(grid_name), profile, seeds, variants, overrides)
    study_id = open_grid_study(store, grid_name, profile, settings, cells)
    for reaped in reap_cells(store, study_id, grace_s):
        log(f"{reaped}: its process ended before it finished; it will be rerun")
    pending, running, outcome = scan(cells, store, study_id, retry_failed, set())
    if not pending and not (running and wait_for_others):
        log(f"{grid_name}/{profile}: nothing to run: {outcome.already_done} of {len(cells)} "
            f"cells already finished" + _skips(outcome))
        return outcome
    resolved = resolve_device(device)
    stack = stack or default_stack(resolved, len(seeds))
    log(f"{grid_name}/{profile}: {len(pending)} of {len(cells)} cells to run "
        f"({outcome.already_done} already finished{_skips(outcome)}), {workers} worker(s)"
        f"{f', stacks of up to {stack} seeds' if stack > 1 else ''}; "
        f"{start_estimate(grid_name, profile, pending, store, study_id, workers, resolved)}"
        f"; store {store.url}")
    progress = Progress(len(cells), outcome.already_done + len(outcome.skipped_diverged),
                        workers, cells[0].config.train.epochs, stack=stack, pending=len(pending))

    def spec(job: Job) -> JobSpec:
        return JobSpec(job.key, tuple(c.config.to_dict() for c in job.cells), device,
                       str(data_root), str(checkpoint_dir) if checkpoint_dir else None,
                       checkpoint_every)

    threads = threads or default_threads(workers if resolved.type == "cpu" else 1)
    with progress, Heartbeat(store.url, beat_interval(grace_s)) as heartbeat, \
            WorkerPool[Claimed, list[JobResult]](workers, threads,
                                                 lambda m: progress.epoch(*m)) as pool:
        run = GridRun(store, study_id, cells, outcome=outcome, progress=progress,
                      heartbeat=heartbeat, stack=stack, spec=spec, retry_failed=retry_failed,
                      grace_s=grace_s, wait_for_others=wait_for_others,
                      checkpoint_dir=checkpoint_dir, log=log)
        queued = plan_jobs(pending, stack) if pending else run.next_jobs()
        while queued or pool.in_flight:
            while queued and pool.has_room():
                if (claimed := run.claim(queued.pop(0))) is not None:
                    pool.submit(claimed, execute_job, spec(claimed.job))
            for claimed, future in pool.poll():
                run.settle(claimed, _job_results(future, len(claimed.trial_ids)))
            if pool.stop_requested:
                queued.clear()  # start nothing new; the jobs in flight checkpoint and return
            elif not queued and not pool.in_flight:
                queued = run.next_jobs()
        outcome.stopped = pool.stop_requested
    return outcome


def _job_results(future: Future[list[JobResult]], cells: int) -> list[JobResult]:
    error = future.exception()
    if error is not None:  # the worker process itself died
        return [JobResult("error", reason=f"worker process failed: {error}")] * cells
    return future.result()


def _skips(outcome: GridOutcome) -> str:
    parts = []
    if outcome.skipped_running:
        parts.append(f", {len(outcome.skipped_running)} running elsewhere")
    if outcome.skipped_diverged:
        parts.append(f", {len(outcome.skipped_diverged)} diverged (kept; --retry-failed reruns)")
    return "".join(parts)
