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
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sslbench.bench.core.legacy import relabel_legacy
from sslbench.bench.errors import StoreError
from sslbench.bench.store.journal import SafeJournalFileBackend, check_is_journal
from sslbench.bench.store.validate import INVALID, record_problem

DEFAULT_URL = "sqlite:///sslbench.db"
SQLITE_MAGIC = b"SQLite format 3\x00"

# Names the worker in the store; set it where several machines share a host name.
ENV_WORKER_HOST = "SSLBENCH_WORKER_HOST"
# A database server that accepts the TCP connection but never answers (a stuck proxy, a
# wrong port) would otherwise hang the opening forever; libpq's own default is no limit.
CONNECT_TIMEOUT_S = 10
# PostgreSQL advisory lock (any 64-bit key, fixed) held while Optuna creates its tables.
SCHEMA_LOCK_KEY = 0x55_1BE4C4

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


def _four_slashes(url: str) -> str:
    """The hint for `scheme:///abs/path`, which names a path relative to here, as in
    SQLAlchemy's URLs, where the user most likely meant the absolute one."""
    scheme, _, rest = url.partition(":///")
    if rest and not rest.startswith("/") and Path("/" + rest).exists():
        return (f" (a path after {scheme}:/// is relative to the current folder; the "
                f"absolute /{rest} needs four slashes: {scheme}:////{rest})")
    return ""


def _check_sqlite_file(url: str, create: bool) -> None:
    """A clear error before SQLAlchemy meets a file that is not a SQLite database."""
    if not url.startswith("sqlite:///"):
        return
    path = Path(url.removeprefix("sqlite:///")).expanduser()
    if not create and not path.exists():
        raise StoreError(f"run store {path} does not exist{_four_slashes(url)}; run "
                         f"`sslbench ablate` first or pass the --storage URL of an existing "
                         f"store")
    if path.exists():
        if path.is_dir():
            raise StoreError(f"run store {path} is a directory, not a SQLite file; "
                             f"pass --storage sqlite:///path/to/file.db")
        with path.open("rb") as handle:
            header = handle.read(16)
        if header and header != SQLITE_MAGIC:
            raise StoreError(f"run store {path} is not a SQLite database; "
                             f"move it away or pass another --storage URL")
    elif not path.parent.exists() or not os.access(path.parent, os.W_OK):
        raise StoreError(f"cannot create run store {path}: folder {path.parent} "
                         f"does not exist or is not writable; pass another --storage URL")


def _check_journal_file(url: str, create: bool) -> Path:
    path = Path(url.removeprefix("journal:///")).expanduser()
    if not url.startswith("journal:///") or not path.name:
        raise StoreError(f"journal store URL {url!r} must look like journal:///path/file.log")
    if path.is_dir():
        raise StoreError(f"journal store {path} is a directory; pass "
                         f"--storage journal:///path/file.log")
    if not path.exists():
        if not create:
            raise StoreError(f"run store {path} does not exist{_four_slashes(url)}; run "
                             f"`sslbench ablate` first or pass the --storage URL of an "
                             f"existing store")
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise StoreError(f"cannot create journal store {path}: folder {path.parent} does "
                             f"not exist or is not writable; pass another --storage URL")
    return path


def _read_only_sqlite(url: str) -> RDBStorage:
    """An existing SQLite run store opened so that nothing can write to it: the file is
    checked to hold Optuna's tables first (an empty or foreign database is refused, not
    given a schema), then opened in SQLite's read-only mode, with no table creation."""
    import sqlite3

    path = Path(url.removeprefix("sqlite:///")).expanduser().resolve()
    if path.stat().st_size == 0:
        raise StoreError(f"run store {path} is an empty file, not a run store; it was left as "
                         f"it is: pass the --storage URL of a store `sslbench ablate` wrote")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as error:
        raise StoreError(f"cannot read run store {path}: {error}; check the file") from None
    if "studies" not in tables:
        raise StoreError(f"{path} is a SQLite database without a run store's tables; it was "
                         f"left as it is: pass the --storage URL of a store `sslbench "
                         f"ablate` wrote")
    return RDBStorage(f"sqlite:///file:{path}?mode=ro&uri=true",
                      engine_kwargs=_engine_kwargs(url), skip_table_creation=True)


def open_storage(url: str, create: bool = True, read_only: bool = False) -> BaseStorage:
    """The Optuna storage behind a store URL, or a one-line StoreError saying why not.

    `read_only` (the commands that only read: report, export, plan): the store must exist,
    and neither the file nor the database is ever written, not even to repair or to create
    tables."""
    create = create and not read_only
    if url in ("sqlite://", "sqlite:///") or ":memory:" in url:
        raise StoreError(f"run store {url!r} is an in-memory database: nothing would be kept "
                         f"when the command ends; pass a file, e.g. --storage sqlite:///runs.db")
    try:
        if url.startswith("journal:"):
            path = _check_journal_file(url, create)
            if path.exists():
                check_is_journal(str(path))
            return JournalStorage(SafeJournalFileBackend(str(path), read_only=read_only))
        _check_sqlite_file(url, create)
        if read_only and url.startswith("sqlite:///"):
            return _read_only_sqlite(url)
        return _rdb_storage(url)
    except StoreError:
        raise
    except Exception as error:  # SQLAlchemy, driver and journal errors vary by backend
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        raise StoreError(f"cannot open run store {url}: {reason[:200]}; check the --storage "
                         f"URL (sqlite:///file.db, journal:///file.log, postgresql://...) and "
                         f"that the database is reachable") from error


T = TypeVar("T")
BUSY_RETRIES = 8  # waits of 0.05 s doubling with jitter: up to about 20 s in all


def is_busy(error: BaseException) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY), as SQLAlchemy or Optuna (which wraps it
    as "An exception is raised during the commit") raise it."""
    cause = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) \
        else error
    return isinstance(cause, sqlalchemy.exc.OperationalError) and "locked" in str(cause)


def when_not_busy(write: Callable[[], T]) -> T:
    """Run one store write, again after a short wait while SQLite says the file is busy.

    SQLite waits out another writer's lock (the busy timeout, 60 s), except when a
    transaction that has read must upgrade its lock while another runner holds the write
    lock: then it refuses at once, to avoid a deadlock. Runners starting together on a fresh
    file met it while claiming their first cell. The refused transaction was rolled back, so
    the write is safe to repeat. Other errors pass through at once."""
    for attempt in range(BUSY_RETRIES):
        try:
            return write()
        except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError) as error:
            if not is_busy(error) or attempt == BUSY_RETRIES - 1:
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def writing(url: str, what: str) -> Iterator[None]:
    """Turn a failed store write (a full disk, a read-only file or folder, a lost server)
    into one line. What was committed before stays: a journal append is cut back, and an
    RDB transaction is rolled back."""
    try:
        yield
    except (UpdateFinishedTrialError, optuna.exceptions.DuplicatedStudyError):
        raise
    except (OSError, sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError) as error:
        text = (getattr(error, "strerror", None) or str(error).strip() or type(error).__name__)
        reason = text.splitlines()[0][:160]
        raise StoreError(f"cannot write to run store {url} ({what}): {reason}; free space or "
                         f"fix its permissions, then run the same command again (finished "
                         f"cells are kept)") from None


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
                study_id = when_not_busy(
                    lambda: self.storage.create_new_study([StudyDirection.MAXIMIZE], name))
            except optuna.exceptions.DuplicatedStudyError:
                study_id = self.storage.get_study_id_from_name(name)
            for key, value in (attrs or {}).items():
                when_not_busy(functools.partial(self.storage.set_study_user_attr, study_id,
                                                key, value))
        return study_id

    def find_study(self, name: str) -> int | None:
        try:
            return self.storage.get_study_id_from_name(name)
        except KeyError:
            return None

    def study_names(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]

    # -- cells (bench.queue claims, reaps and settles them) ---------------------------
    def beat(self, trial_id: int) -> None:
        """A sign of life for a running cell or trial."""
        when_not_busy(lambda: self.storage.set_trial_user_attr(trial_id, "heartbeat",
                                                               time.time()))

    def finish_cell(self, trial_id: int, record: dict[str, Any]) -> bool:
        """Store the record; False if the attempt had already ended: another runner
        took the cell over (this one sent no heartbeat for the grace period)."""
        with writing(self.url, f"storing the record of {record['run_id']}"):
            return self._finish_cell(trial_id, record)

    def _finish_cell(self, trial_id: int, record: dict[str, Any]) -> bool:
        try:
            when_not_busy(lambda: self.storage.set_trial_user_attr(trial_id, "record", record))
            when_not_busy(lambda: self.storage.set_trial_state_values(
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
            when_not_busy(lambda: self.storage.set_trial_user_attr(trial_id, "failure",
                                                                   reason[-4000:]))
            when_not_busy(lambda: self.storage.set_trial_user_attr(trial_id, "failure_kind",
                                                                   kind))
            when_not_busy(lambda: self.storage.set_trial_state_values(trial_id,
                                                                      TrialState.FAIL))
        except UpdateFinishedTrialError:
            return False
        return True

    def cell_runs(self, study_id: int) -> list[CellRun]:
        return [_cell_run(t) for t in self.storage.get_all_trials(study_id, deepcopy=False)
                if "cell" in t.user_attrs]

    def trial_id(self, study_name: str, number: int) -> int:
        """The storage's id of trial `number` of a study (Optuna keeps it private on
        trials; heartbeats and reaping address trials by it)."""
        study_id = self.storage.get_study_id_from_name(study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Wait for a lock instead of failing at once when a reader holds the file.
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql") and "connect_timeout" not in url:
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def _rdb_storage(url: str) -> RDBStorage:
    """Optuna's RDB storage; on PostgreSQL under a lock while it creates its tables.

    Optuna creates its tables on first use (CREATE TABLE after a check, not atomic):
    several runners opening a fresh PostgreSQL database at once fail with a duplicate key
    in pg_type. An advisory lock (released when its connection closes) lets one create
    them while the others wait, then find them.
    """
    kwargs = _engine_kwargs(url)
    if url.startswith("sqlite"):
        # Several runners opening a fresh SQLite file at once race to create Optuna's
        # tables (`UNIQUE constraint failed: alembic_version`); the losers find them made
        # a moment later.
        for attempt in range(5):
            try:
                return RDBStorage(url, engine_kwargs=kwargs)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                    optuna.exceptions.StorageInternalError):
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    if not url.startswith("postgresql"):
        return RDBStorage(url, engine_kwargs=kwargs)
    engine = sqlalchemy.create_engine(url, **kwargs)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"),
                               {"key": SCHEMA_LOCK_KEY})
            try:
                return RDBStorage(url, engine_kwargs=kwargs)
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"),
                                   {"key": SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


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
