"""From a store URL to an Optuna storage, or one line saying why not.

SQLite files are checked before SQLAlchemy meets them (a folder, another kind of file, a
missing parent); journals through bench.store.journal; PostgreSQL under an advisory lock while
Optuna creates its tables. Opened read-only (the commands that only read), nothing is ever
written: SQLite in its read-only mode with no table creation, PostgreSQL in read-only
transactions with no table creation, a journal never repaired.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalStorage

from sslbench.bench.errors import StoreError
from sslbench.bench.store.causes import driver_cause, driver_reason, store_advice
from sslbench.bench.store.journal import SafeJournalFileBackend, check_is_journal

# A database server that accepts the TCP connection but never answers (a stuck proxy, a
# wrong port) would otherwise hang the opening forever; libpq's own default is no limit.
CONNECT_TIMEOUT_S = 10
# PostgreSQL advisory lock (any 64-bit key, fixed) held while Optuna creates its tables.
SCHEMA_LOCK_KEY = 0x55_1BE4C4


def _four_slashes(url: str) -> str:
    """The hint for `scheme:///abs/path`, which names a path relative to here, as in
    SQLAlchemy's URLs, where the user most likely meant the absolute one."""
    scheme, _, rest = url.partition(":///")
    if rest and not rest.startswith("/") and Path("/" + rest).exists():
        return (f" (a path after {scheme}:/// is relative to the current folder; the "
                f"absolute /{rest} needs four slashes: {scheme}:////{rest})")
    return ""


def _holds_sqlite(path: Path) -> bool:
    """Whether SQLite reads `path` as a database (an empty file is one, to be), asked of
    SQLite itself and never by a plain open() of the file: closing any descriptor of a
    database file drops every POSIX lock this process holds on it ("How To Corrupt An SQLite
    Database File", 2.2), and a runner opens its store again (the heartbeat's thread, the
    finishing step) while another thread of it may hold the write lock. Another runner could
    then write at the same time. SQLite's own opens keep the locks; `immutable` takes none
    and runs no journal recovery, so checking changes nothing."""
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            db.execute("PRAGMA schema_version").fetchone()  # reads the header and page 1
    except sqlite3.DatabaseError as error:
        if getattr(error, "sqlite_errorname", None) == "SQLITE_NOTADB":
            return False
        raise
    return True


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
        if not _holds_sqlite(path):
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


def _read_only_server(url: str) -> RDBStorage:
    """A database server's run store opened so that nothing can write to it: the database
    must already hold Optuna's tables (nothing is created), and on PostgreSQL every
    transaction of the session is read-only (`default_transaction_read_only`), so that the
    server itself refuses any write this process might attempt."""
    kwargs = _engine_kwargs(url)
    if url.startswith("postgresql"):
        connect_args = {**kwargs.get("connect_args", {}),
                        "options": "-c default_transaction_read_only=on"}
        kwargs = {**kwargs, "connect_args": connect_args}
    engine = sqlalchemy.create_engine(url, **kwargs)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if "studies" not in tables:
        shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
        raise StoreError(f"database {shown} holds no run store's tables; it was left as it is: "
                         f"pass the --storage URL of a store `sslbench ablate` wrote")
    return RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=True)


def open_storage(url: str, create: bool = True, read_only: bool = False) -> BaseStorage:
    """The Optuna storage behind a store URL, or a one-line StoreError saying why not.

    `read_only` (the commands that only read: report, export, plan, status, store check):
    the store must exist, and neither the file nor the database is ever written, not even
    to repair or to create tables."""
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
        if read_only:
            return _read_only_sqlite(url) if url.startswith("sqlite:///") \
                else _read_only_server(url)
        return _rdb_storage(url)
    except StoreError:
        raise
    except Exception as error:  # SQLAlchemy, driver and journal errors vary by backend
        if getattr(driver_cause(error), "sqlite_errorname", None):
            # SQLite found the file and failed on it (a full disk, a read-only folder, an
            # unreadable -journal beside it): the URL is right; say what the file system said.
            raise StoreError(f"cannot open run store {url}: {driver_reason(error)}; "
                             f"{store_advice(error)}") from error
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        raise StoreError(f"cannot open run store {url}: {reason[:200]}; check the --storage "
                         f"URL (sqlite:///file.db, journal:///file.log, postgresql://...) and "
                         f"that the database is reachable") from error


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
