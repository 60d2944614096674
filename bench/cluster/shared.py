"""What every node of a cluster must reach: the store, the checkpoints and the data.

A job runs on another machine, in another folder, maybe days later: a store or folder it
cannot reach, or reaches by another path, would run cells into nothing. So a plain SQLite
file (one machine's lock; SQLite over NFS corrupts) and an in-memory store are refused for
Slurm, and every relative path is made absolute here, before submission.
"""

from __future__ import annotations

from pathlib import Path

from sslbench.bench.errors import UserError

WORKS = ("a PostgreSQL URL (postgresql://user@host/db) or a journal file on a filesystem "
         "every node mounts (journal:////shared/path/runs.log)")


def shared_store_url(url: str, launcher: str) -> str:
    """The store URL as every job will open it: a journal or SQLite path made absolute.

    `launcher` "slurm": only PostgreSQL and journal files are accepted. "local" (this
    machine's processes) also takes a SQLite file, as `--workers` does."""
    if url in ("sqlite://", "sqlite:///") or ":memory:" in url:
        raise UserError(f"--launcher {launcher}: the store {url!r} lives in one process's "
                        f"memory, which no job can reach; use {WORKS}")
    if url.startswith("sqlite") and launcher == "slurm":
        raise UserError(f"--launcher slurm: a SQLite file ({url}) cannot be shared by the jobs "
                        f"of a cluster (its locks do not hold across machines); use {WORKS}")
    for scheme in ("journal:///", "sqlite:///"):
        if url.startswith(scheme):
            path = Path(url.removeprefix(scheme)).expanduser()
            if not path.name:
                raise UserError(f"--storage {url}: no file named; use {WORKS}")
            return scheme + str(path.absolute())  # "journal:///" + "/abs" = four slashes
    if url.startswith("postgresql"):
        return url
    raise UserError(f"--launcher {launcher}: cannot tell whether every node reaches the store "
                    f"{url!r}; use {WORKS}")


def shared_folder(path: Path) -> Path:
    """A folder the jobs use (checkpoints, data, logs), absolute: a job starts elsewhere."""
    return path.expanduser().absolute()
