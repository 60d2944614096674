"""Why a store call failed, in the words of the driver or the file system under Optuna's and
SQLAlchemy's wrappers, and what the user can do about it: one line each."""

from __future__ import annotations

import errno

import optuna
import sqlalchemy


def driver_cause(error: BaseException) -> BaseException:
    """The driver's or the file system's own error under Optuna's and SQLAlchemy's wrappers:
    Optuna wraps a failed commit in a generic sentence ("... invalid data in the commit, e.g.
    exceeding max length") whatever the cause."""
    cause: BaseException = error
    if isinstance(cause, optuna.exceptions.StorageInternalError):
        cause = cause.__cause__ or cause.__context__ or cause
    if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.orig is not None:
        cause = cause.orig
    return cause


def driver_reason(error: BaseException) -> str:
    """What the database or the file system said, in one short line, with SQLite's
    extended result code (SQLITE_IOERR_FSYNC, ...), which names the operation that failed
    where the text ("disk I/O error") does not."""
    cause = driver_cause(error)
    text = getattr(cause, "strerror", None) or str(cause).strip() or type(cause).__name__
    text = text.splitlines()[0][:160]
    code = getattr(cause, "sqlite_errorname", None)
    return f"{text} ({code})" if code and code not in text else text


def store_advice(error: BaseException) -> str:
    """What to do about a failed store call, from its cause, ending in how to go on: the
    advice for a full disk does not fit a file system that failed a read, nor a read-only
    folder, and a damaged file may have lost finished cells too."""
    advice, cells_kept = _advice(error)
    if cells_kept:
        return advice + ", then run the same command again (finished cells are kept)"
    return advice + ", then run the same command again"


def _advice(error: BaseException) -> tuple[str, bool]:
    """The advice, and whether what was committed is certainly still there."""
    cause = driver_cause(error)
    code = str(getattr(cause, "sqlite_errorname", None) or "")
    number = getattr(cause, "errno", None)
    if code == "SQLITE_FULL" or number == errno.ENOSPC:
        return "free space", True
    if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) \
            or number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the store and its folder writable, or pass another --storage URL", True
    if code.startswith("SQLITE_IOERR"):
        # The OS failed a read, write, lock or sync of the file: a failing or remote disk
        # (SQLite's locks are unreliable on network file systems), not space or permissions.
        return ("the file system failed SQLite's read, write or lock of the file or of its "
                "-journal beside it: check the disk and that the -journal is a readable file "
                "(not a folder), keep a SQLite store on a local disk, and for several "
                "machines pass a journal:/// or postgresql:// store"), True
    if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return ("its bytes are damaged: `sslbench store check` runs SQLite's integrity check on "
                "it; restore the file from a copy (the sqlite3 shell's .recover salvages "
                "rows)"), False
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return ("another process held its lock past the wait: give concurrent runners a "
                "journal:/// or postgresql:// store"), True
    return "free space or fix its permissions", True
