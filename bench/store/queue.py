"""The work queue: claim, heartbeat, reap and settle units of work held in a run store.

Both kinds of work live as trials of Optuna studies in the store (bench.store): a grid's
cells, and a search's trials. This module is the one place that decides who runs what:

- **Claim** (grid cells): a runner claims attempt n of a cell by creating a study named
  `claim:<grid study>:<cell>:<run id>:<n>`. Study names are unique in every storage
  (SQLite, PostgreSQL, the journal file), so of two runners racing for the name exactly one
  wins, whatever the engine's isolation. The winner checks that attempt n is still the next
  one, creates the cell's trial, and deletes the claim study: claims never stay in the
  store that users browse. Deleting is safe because a runner that later wins the same name
  (from a stale read) sees on its check that attempt n exists and backs off.
  Searches pop their trials with Optuna's own `study.ask()`, which also takes queued
  (`enqueue_trial`) parameters first.
- **Heartbeat**: a thread writes the time into each owned trial every HEARTBEAT_S seconds.
  Optuna's own heartbeat (RDBStorage's heartbeat_interval and fail_stale_trials) exists
  only for RDB storages and only inside `study.optimize`; the journal file store has none,
  and grid cells are not run by `optimize`. One mechanism for every storage and both kinds
  of work keeps one code path to test.
- **Reap**: a running trial whose owner is gone (a dead process on this host, or no
  heartbeat for the grace period) is marked failed ("interrupted") and retried. Marking it
  failed is the mutex: the storage refuses to end a trial twice, so of several runners
  noticing the same dead owner exactly one reaps it (and, for a search, queues its
  parameters again).
- **Settle**: a job's typed JobResult is written back; False when the trial had already
  ended (this runner was silent too long and another took the work over).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sslbench.bench.store.names import claim_prefix
from sslbench.bench.store.runstore import CellRun, RunStore, host_name, with_store_retries, writing

# Heartbeats of running cells and trials: written every HEARTBEAT_S seconds; an owner
# silent for longer than the grace period is taken for dead and its work is retried.
HEARTBEAT_S = 10.0
DEFAULT_GRACE_S = 120.0

Status = Literal["ok", "diverged", "error", "interrupted", "invalid"]
# Failure kinds: a crash, an interruption or a record quarantined when read
# (bench.store.validate) is retried on the next invocation; a divergence is deterministic
# for its config and seed, so it is kept unless asked.
RETRIED_FAILURES: tuple[Status, ...] = ("error", "interrupted", "invalid")


@dataclass(frozen=True)
class JobResult:
    """What training one cell gave: its record when "ok", else the reason it has none."""

    status: Status
    record: dict[str, Any] | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# -- claim -------------------------------------------------------------------------------


def claim_cell(store: RunStore, study_id: int, cell: str, variant: str, seed: int,
               config: dict[str, Any]) -> int | None:
    """Start a new attempt at `cell` (its trial id) unless it is finished or running,
    atomically across processes and machines; None when another runner has it."""
    with writing(store.url, f"claiming {cell}"):
        return _claim_cell(store, study_id, cell, variant, seed, config)


def _claim_cell(store: RunStore, study_id: int, cell: str, variant: str, seed: int,
                config: dict[str, Any]) -> int | None:
    from sslbench.bench.store.identity import stored_run_id

    # The run id keeps a cell of another config under the same key (the classic
    # `supervised` beside the legacy pipeline cells it replaced) apart from their attempts.
    run_id = stored_run_id(config) or "unreadable"
    attempts = _attempts(store, study_id, cell, run_id)
    if any(r.state in ("COMPLETE", "RUNNING") for r in attempts):
        return None
    study_name = with_store_retries(lambda: store.storage.get_study_name_from_id(study_id))
    name = f"{claim_prefix(study_name)}{cell}:{run_id}:" \
           f"{len(attempts)}"
    try:
        claim_id = with_store_retries(
            lambda: store.storage.create_new_study([StudyDirection.MAXIMIZE], name))
    except optuna.exceptions.DuplicatedStudyError:
        return None
    try:
        if len(_attempts(store, study_id, cell, run_id)) != len(attempts):
            return None  # another runner made this attempt and freed the name since our read
        # Created with its attributes in one write: a runner scanning the store never meets
        # a half-written attempt (a cell without its seed or owner).
        attrs = {"cell": cell, "variant": variant, "seed": seed, "config": config,
                 "owner": store.owner, "started_at": _now(), "heartbeat": time.time()}
        template = FrozenTrial(number=0, state=TrialState.RUNNING, value=None,
                               datetime_start=dt.datetime.now(), datetime_complete=None,
                               params={}, distributions={}, user_attrs=attrs,
                               system_attrs={}, intermediate_values={}, trial_id=0)
        return with_store_retries(
            lambda: store.storage.create_new_trial(study_id, template_trial=template))
    finally:
        # It has done its job. Deleting is tidiness, not safety: should it still fail, a
        # claim whose attempt exists is removed later by tidy_claims.
        with contextlib.suppress(Exception):
            with_store_retries(lambda: store.storage.delete_study(claim_id))


def _attempts(store: RunStore, study_id: int, cell: str, run_id: str) -> list[CellRun]:
    from sslbench.bench.store.identity import stored_run_id

    return [r for r in store.cell_runs(study_id)
            if r.cell == cell and (stored_run_id(r.config or {}) or "unreadable") == run_id]


def tidy_claims(store: RunStore, study_id: int) -> int:
    """Delete the spent claim studies of a grid (its attempt exists) that older versions
    left in the store; returns how many. A claim without its attempt is kept: its runner
    may be between the two writes."""
    prefix = claim_prefix(store.storage.get_study_name_from_id(study_id))
    claims = [s for s in store.storage.get_all_studies() if s.study_name.startswith(prefix)]
    if not claims:
        return 0
    made: dict[str, int] = {}  # attempts per cell key as written (before any relabeling)
    for trial in store.storage.get_all_trials(study_id, deepcopy=False):
        if "cell" in trial.user_attrs:
            made[trial.user_attrs["cell"]] = made.get(trial.user_attrs["cell"], 0) + 1
    deleted = 0
    for claim in claims:
        cell, _, attempt = claim.study_name.removeprefix(prefix).rpartition(":")
        cell = cell.split(":")[0]  # claims name the cell, then (newer ones) the run id
        if attempt.isdigit() and made.get(cell, 0) > int(attempt):
            with writing(store.url, "deleting spent claims"), \
                    contextlib.suppress(KeyError):  # another runner deleted it first
                store.storage.delete_study(store.storage.get_study_id_from_name(
                    claim.study_name))
                deleted += 1
    return deleted


# -- heartbeat and reaping ---------------------------------------------------------------


class Heartbeat:
    """A thread that beats, every `interval_s` seconds, for the trials this runner owns.

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


def beat_interval(grace_s: float) -> float:
    """At least three beats per grace period, so a live owner is never taken for dead."""
    return min(HEARTBEAT_S, grace_s / 3)


def owner_gone(owner: str | None, heartbeat: float | None, grace_s: float) -> str | None:
    """Why the owner of a running cell or trial is taken for dead, or None if it lives."""
    if owner:
        owner_host, _, pid = owner.rpartition(":")
        if owner_host == host_name() and pid.isdigit() and not _pid_alive(int(pid)):
            return f"process {owner} ended"
    if heartbeat is not None and time.time() - heartbeat > grace_s:
        return f"{owner or 'its owner'} sent no heartbeat for {grace_s:.0f} s"
    return None


def reap_cells(store: RunStore, study_id: int, grace_s: float = DEFAULT_GRACE_S) -> list[str]:
    """Mark running cells whose owner is gone as interrupted; returns the cells."""
    reaped = []
    for run in store.cell_runs(study_id):
        why = owner_gone(run.owner, run.heartbeat, grace_s) if run.state == "RUNNING" else None
        if why and store.fail_cell(run.trial_id, f"interrupted: {why} before the cell "
                                                 f"finished", "interrupted"):
            reaped.append(run.cell)
    return reaped


def reap_trials(store: RunStore, study: optuna.Study, grace_s: float) -> list[str]:
    """Fail running search trials whose worker is gone and queue their parameters again,
    once (the reaper that ended the trial queues it); returns why, per trial."""
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = owner_gone(trial.user_attrs.get("owner"), trial.user_attrs.get("heartbeat"),
                         grace_s)
        trial_id = store.trial_id(study.study_name, trial.number)
        if why and store.fail_cell(trial_id, f"interrupted: {why}", "interrupted"):
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            reaped.append(f"trial {trial.number}: {why}; its parameters are queued again")
    return reaped


# -- settle ------------------------------------------------------------------------------


def settle(store: RunStore, trial_id: int, result: JobResult) -> bool:
    """Store a cell's result; False if its attempt had already ended (taken over)."""
    if result.ok:
        assert result.record is not None
        return store.finish_cell(trial_id, result.record)
    return store.fail_cell(trial_id, result.reason, result.status)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
