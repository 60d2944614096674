"""The run store: a real database, built on Optuna's storage.

Each grid (and profile) is an Optuna study; each (variant, seed) cell run is a trial whose
user attributes hold the cell key, the full config and, once finished, the whole record
(metrics, per-epoch curves, throughput, device, versions, git commit). Grids and searches
share one store, chosen by URL:
    sqlite:///file.db                 one process at a time (the default)
    journal:///path/file.log          Optuna's journal file: several processes, one machine
                                      (or a shared file system with working locks)
    postgresql://user@host/db         many processes on many machines
optuna-dashboard can browse any of them.

Cell states: COMPLETE (finished; never run again), RUNNING (owned by a live process),
FAIL (crashed, interrupted or diverged; the reason is kept, and the first two are retried).

Several runners may work on one grid: bench.queue claims cells, beats for them, reaps those
whose owner is gone and settles their results; this module reads and writes the storage.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sslbench.bench.core.legacy import relabel_legacy
from sslbench.bench.errors import StoreError
from sslbench.bench.store.causes import driver_reason, store_advice
from sslbench.bench.store.opening import open_storage
from sslbench.bench.store.validate import INVALID, record_problem

DEFAULT_URL = "sqlite:///sslbench.db"

# Names the worker in the store; set it where several machines share a host name.
ENV_WORKER_HOST = "SSLBENCH_WORKER_HOST"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def default_checkpoint_dir(url: str) -> Path:
    """Checkpoints of unfinished cells: beside a SQLite or journal file, else
    ./sslbench-checkpoints."""
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme):
            return Path(url.removeprefix(scheme) + ".checkpoints")
    return Path("sslbench-checkpoints")


def host_name() -> str:
    return os.environ.get(ENV_WORKER_HOST) or socket.gethostname()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


@dataclass(frozen=True)
class CellRun:
    """One attempt at a cell, as stored."""

    trial_id: int
    number: int
    cell: str
    variant: str
    seed: int
    state: str  # "COMPLETE", "RUNNING", "FAIL"
    failure: str | None
    failure_kind: str | None
    record: dict[str, Any] | None
    config: dict[str, Any] | None  # the config the attempt was claimed with, as stored
    owner: str | None  # "host:pid" of the process running it
    heartbeat: float | None  # seconds since the epoch of its owner's last sign of life


T = TypeVar("T")
# The study attribute that lists every cell a grid was asked to run (`sslbench status`).
ASKED_ATTR = "asked_cells"
BUSY_RETRIES = 8  # waits of 0.05 s doubling with jitter: up to about 20 s in all


def is_busy(error: BaseException) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY), as SQLAlchemy or Optuna (which wraps it
    as "An exception is raised during the commit") raise it."""
    cause = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) \
        else error
    return isinstance(cause, sqlalchemy.exc.OperationalError) and "locked" in str(cause)


# A store server that restarts (PostgreSQL's own restart takes a second or two; a failover
# longer) is waited out for this long, retrying with backoff, before a runner gives up with
# a line that names the lost connection (`ablate --store-grace`).
STORE_GRACE_S = 60.0
_grace = {"seconds": STORE_GRACE_S}
# What drivers say when the server is gone, restarting or refusing connections.
CONNECTION_LOST = ("server closed the connection", "connection refused", "could not connect",
                   "terminating connection", "connection to server", "the database system is",
                   "connection is closed", "no connection to the server", "ssl syscall",
                   "broken pipe", "connection reset")


class StoreUnreachable(StoreError):
    """The store's server stayed unreachable for the whole store grace: one line."""

    def __init__(self, error: BaseException) -> None:
        lost = getattr(error, "__cause__", None) or error
        reason = (str(lost).strip() or type(lost).__name__).splitlines()[0][:160]
        self.reason = reason
        super().__init__(f"lost the connection to the run store's server for more than "
                         f"{_grace['seconds']:g} s: {reason}; check that it is up, then run "
                         f"the same command again (finished cells are kept)")


def set_store_grace(seconds: float) -> None:
    """How long store calls in this process wait out a lost server (`--store-grace`)."""
    _grace["seconds"] = seconds


def is_connection_lost(error: BaseException) -> bool:
    """A database server that is gone or restarting, as SQLAlchemy or Optuna raise it."""
    # Optuna wraps the driver's error, as the cause or (raised in its handler) the context.
    cause = (error.__cause__ or error.__context__) \
        if isinstance(error, optuna.exceptions.StorageInternalError) else error
    if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated:
        return True
    return isinstance(cause, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError) \
        and any(text in str(cause).lower() for text in CONNECTION_LOST)


def with_store_retries(call: Callable[[], T]) -> T:
    """Run one store call, again after a short wait while SQLite says the file is busy, and
    with backoff while the store's server is unreachable, up to the store grace.

    SQLite waits out another writer's lock (the busy timeout, 60 s), except when a
    transaction that has read must upgrade its lock while another runner holds the write
    lock: then it refuses at once, to avoid a deadlock. Runners starting together on a fresh
    file met it while claiming their first cell. The refused transaction was rolled back, so
    the write is safe to repeat. A lost server (a PostgreSQL restart) rolls back the
    transaction in flight too; the pool's pre-ping replaces the dead connections once it is
    back. Other errors pass through at once."""
    busy, lost, deadline = 0, 0, None
    while True:
        try:
            return call()
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
            if is_busy(error) and busy < BUSY_RETRIES - 1:
                time.sleep(0.05 * 2**busy * (1 + random.random()))
                busy += 1
                continue
            # Once the server was lost, any error of the store is retried until the grace
            # ends: the first calls after it returns may still meet the dead session.
            if deadline is None and not is_connection_lost(error):
                raise
            deadline = deadline or time.monotonic() + _grace["seconds"]
            if time.monotonic() >= deadline:
                raise StoreUnreachable(error) from error
            time.sleep(min(5.0, 0.25 * 2**lost))
            lost += 1


@contextlib.contextmanager
def writing(url: str, what: str) -> Iterator[None]:
    """Turn a failed store write (a full disk, a read-only file or folder, a lost server)
    into one line. What was committed before stays: a journal append is cut back, and an
    RDB transaction is rolled back."""
    try:
        yield
    except (UpdateFinishedTrialError, optuna.exceptions.DuplicatedStudyError):
        raise
    except StoreUnreachable as error:
        raise StoreError(f"lost the connection to run store {url} ({what}) for more than "
                         f"{_grace['seconds']:g} s: {error.reason}; check that its server is "
                         f"up, then run the same command again (finished cells are kept)"
                         ) from None
    except (OSError, sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError) as error:
        raise StoreError(f"cannot write to run store {url} ({what}): {driver_reason(error)}; "
                         f"{store_advice(error)}") from None


class RunStore:
    def __init__(self, url: str = DEFAULT_URL, create: bool = True,
                 read_only: bool = False) -> None:
        """Open the store at `url`; with create=False a missing SQLite or journal file is an
        error (reading commands never leave an empty database behind); read_only: the file
        is never written either (bench.store.runstore.open_storage)."""
        self.url = url
        self.storage = open_storage(url, create, read_only)
        self.owner = f"{host_name()}:{os.getpid()}"

    # -- studies ---------------------------------------------------------------------
    def study_id(self, name: str, attrs: dict[str, Any] | None = None) -> int:
        with writing(self.url, f"creating study {name}"):
            return self._study_id(name, attrs)

    def _study_id(self, name: str, attrs: dict[str, Any] | None) -> int:
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            try:
                study_id = with_store_retries(
                    lambda: self.storage.create_new_study([StudyDirection.MAXIMIZE], name))
            except optuna.exceptions.DuplicatedStudyError:
                study_id = self.storage.get_study_id_from_name(name)
            for key, value in (attrs or {}).items():
                with_store_retries(functools.partial(self.storage.set_study_user_attr, study_id,
                                                key, value))
        return study_id

    def find_study(self, name: str) -> int | None:
        try:
            return with_store_retries(lambda: self.storage.get_study_id_from_name(name))
        except KeyError:
            return None

    def study_names(self) -> list[str]:
        return [s.study_name for s in with_store_retries(self.storage.get_all_studies)]

    def ask_for_cells(self, study_id: int, cells: list[str]) -> None:
        """Add `cells` to those the grid's study was ever asked to run (what `sslbench
        status` counts as left). Written only when it grows; two runners asking at once
        may each write their union, and the last one wins: the cells they ask for are, in
        practice, the same grid's."""
        asked = self.asked_cells(study_id) or set()
        if not set(cells) <= asked:
            value = sorted(asked | set(cells))
            with writing(self.url, "recording the cells asked for"):
                with_store_retries(lambda: self.storage.set_study_user_attr(study_id, ASKED_ATTR,
                                                                       value))

    def asked_cells(self, study_id: int) -> set[str] | None:
        """The cells a grid's study was asked to run, None where its store predates the
        record (older stores keep only the cells attempted)."""
        attrs = with_store_retries(lambda: self.storage.get_study_user_attrs(study_id))
        value = attrs.get(ASKED_ATTR)
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            return None
        return set(value)

    # -- cells (bench.queue claims, reaps and settles them) ---------------------------
    def beat(self, trial_id: int) -> None:
        """A sign of life for a running cell or trial."""
        with_store_retries(lambda: self.storage.set_trial_user_attr(trial_id, "heartbeat",
                                                               time.time()))

    def finish_cell(self, trial_id: int, record: dict[str, Any]) -> bool:
        """Store the record; False if the attempt had already ended: another runner
        took the cell over (this one sent no heartbeat for the grace period)."""
        with writing(self.url, f"storing the record of {record['run_id']}"):
            return self._finish_cell(trial_id, record)

    def _finish_cell(self, trial_id: int, record: dict[str, Any]) -> bool:
        try:
            with_store_retries(lambda: self.storage.set_trial_user_attr(trial_id, "record", record))
            with_store_retries(lambda: self.storage.set_trial_state_values(
                trial_id, TrialState.COMPLETE, [record["metrics"]["final_test_accuracy"]]))
        except UpdateFinishedTrialError:
            return False
        return True

    def fail_cell(self, trial_id: int, reason: str, kind: str) -> bool:
        """Mark the attempt failed; False if it had already ended (finished by its owner,
        or reaped by another runner first)."""
        with writing(self.url, "marking a cell failed"):
            return self._fail_cell(trial_id, reason, kind)

    def _fail_cell(self, trial_id: int, reason: str, kind: str) -> bool:
        try:
            with_store_retries(lambda: self.storage.set_trial_user_attr(trial_id, "failure",
                                                                   reason[-4000:]))
            with_store_retries(lambda: self.storage.set_trial_user_attr(trial_id, "failure_kind",
                                                                   kind))
            with_store_retries(lambda: self.storage.set_trial_state_values(trial_id,
                                                                      TrialState.FAIL))
        except UpdateFinishedTrialError:
            return False
        return True

    def cell_runs(self, study_id: int) -> list[CellRun]:
        try:
            trials = with_store_retries(
                lambda: self.storage.get_all_trials(study_id, deepcopy=False))
        except ValueError:  # an attribute that is not JSON (a damaged row): trial by trial
            if not isinstance(self.storage, RDBStorage):
                raise
            return self._cell_runs_one_by_one(self.storage, study_id)
        return [_cell_run(t) for t in trials if "cell" in t.user_attrs]

    def _cell_runs_one_by_one(self, storage: RDBStorage, study_id: int) -> list[CellRun]:
        """The study's cells read trial by trial from the database, a trial whose stored
        attribute is not JSON quarantined (bench.store.validate) instead of failing all."""
        import json

        engine = storage.engine
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text(
                "SELECT trial_id, number FROM trials WHERE study_id = :study ORDER BY number"),
                {"study": study_id}).fetchall()
        runs = []
        for trial_id, number in rows:
            try:
                trial = storage.get_trial(trial_id)
            except ValueError as error:
                with engine.connect() as connection:
                    stored = connection.execute(sqlalchemy.text(
                        "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = :t"),
                        {"t": trial_id}).fetchall()
                attrs, broken = {}, []
                for key, text in stored:
                    try:
                        attrs[key] = json.loads(text)
                    except ValueError:
                        broken.append(key)
                if {"cell", "variant", "seed"} <= set(attrs):
                    runs.append(CellRun(
                        trial_id=trial_id, number=number, cell=attrs["cell"],
                        variant=attrs["variant"], seed=int(attrs["seed"]), state="FAIL",
                        failure=f"invalid record: stored attribute(s) {', '.join(broken)} not "
                                f"valid JSON ({error})", failure_kind=INVALID, record=None,
                        config=attrs.get("config"), owner=attrs.get("owner"),
                        heartbeat=attrs.get("heartbeat")))
                continue
            if "cell" in trial.user_attrs:
                runs.append(_cell_run(trial))
        return runs

    def trial_id(self, study_name: str, number: int) -> int:
        """The storage's id of trial `number` of a study (Optuna keeps it private on
        trials; heartbeats and reaping address trials by it)."""
        study_id = self.storage.get_study_id_from_name(study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)


def _cell_run(trial: FrozenTrial) -> CellRun:
    attrs = trial.user_attrs
    state, failure, kind = trial.state.name, attrs.get("failure"), attrs.get("failure_kind")
    stored = attrs.get("record")
    problem = record_problem(stored) if state == "COMPLETE" else None
    if problem is not None:  # quarantined: read as a failed attempt, its bytes left alone
        state, failure, kind, stored = "FAIL", f"invalid record: {problem}", INVALID, None
    cell, variant, record = relabel_legacy(attrs["cell"], attrs["variant"], attrs.get("config"),
                                            stored)
    return CellRun(trial_id=trial._trial_id, number=trial.number, cell=cell,
                   variant=variant, seed=int(attrs["seed"]), state=state, failure=failure,
                   failure_kind=kind, record=record, config=attrs.get("config"),
                   owner=attrs.get("owner"), heartbeat=attrs.get("heartbeat"))


def latest_by_cell(runs: list[CellRun]) -> dict[str, CellRun]:
    """Per cell, the finished run if there is one, else the latest attempt."""
    chosen: dict[str, CellRun] = {}
    for run in sorted(runs, key=lambda r: r.number):
        current = chosen.get(run.cell)
        if current is None or current.state != "COMPLETE":
            chosen[run.cell] = run
    return chosen
