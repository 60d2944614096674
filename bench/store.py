"""The run store: a real database, built on Optuna's storage.

Each grid (and profile) is an Optuna study; each (variant, seed) cell run is a trial whose
user attributes hold the cell key, the full config and, once finished, the whole record
(metrics, per-epoch curves, throughput, device, versions, git commit). Grids and searches
share one store; any SQLAlchemy URL works (SQLite file by default, PostgreSQL for many
machines), and optuna-dashboard can browse it.

Cell states: COMPLETE (finished; never run again), RUNNING (owned by a live process),
FAIL (crashed, interrupted or diverged; the reason is kept, and the first two are retried).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from bench.errors import StoreError

DEFAULT_URL = "sqlite:///sslbench.db"
SQLITE_MAGIC = b"SQLite format 3\x00"

# Failure kinds: a crash or an interruption is retried on the next invocation; a
# divergence is deterministic for its config and seed, so it is kept unless asked.
RETRIED_FAILURES = ("error", "interrupted")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def default_checkpoint_dir(url: str) -> Path:
    """Checkpoints of unfinished cells: beside a SQLite store, else ./sslbench-checkpoints."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///") + ".checkpoints")
    return Path("sslbench-checkpoints")


def grid_study_name(grid: str, profile: str) -> str:
    return f"grid:{grid}:{profile}"


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
    owner: str | None  # "host:pid" of the process running it


def _check_sqlite_file(url: str, create: bool) -> None:
    """A clear error before SQLAlchemy meets a file that is not a SQLite database."""
    if not url.startswith("sqlite:///"):
        return
    path = Path(url.removeprefix("sqlite:///"))
    if not create and not path.exists():
        raise StoreError(f"run store {path} does not exist; run `sslbench ablate` first or "
                         f"pass the --storage URL of an existing store")
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


class RunStore:
    def __init__(self, url: str = DEFAULT_URL, create: bool = True) -> None:
        """Open the store at `url`; with create=False a missing SQLite file is an error
        (reading commands never leave an empty database behind)."""
        _check_sqlite_file(url, create)
        self.url = url
        try:
            self.storage = RDBStorage(url, engine_kwargs=_engine_kwargs(url))
        except Exception as error:  # SQLAlchemy/driver errors vary by backend
            text = str(error).strip()
            reason = text.splitlines()[0] if text else type(error).__name__
            raise StoreError(f"cannot open run store {url}: {reason[:200]}; "
                             f"check the --storage URL and that the database is reachable"
                             ) from error
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    # -- studies ---------------------------------------------------------------------
    def study_id(self, name: str, attrs: dict[str, Any] | None = None) -> int:
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            try:
                study_id = self.storage.create_new_study([StudyDirection.MAXIMIZE], name)
            except optuna.exceptions.DuplicatedStudyError:
                study_id = self.storage.get_study_id_from_name(name)
            for key, value in (attrs or {}).items():
                self.storage.set_study_user_attr(study_id, key, value)
        return study_id

    def find_study(self, name: str) -> int | None:
        try:
            return self.storage.get_study_id_from_name(name)
        except KeyError:
            return None

    def study_names(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]

    # -- cells -----------------------------------------------------------------------
    def start_cell(self, study_id: int, cell: str, variant: str, seed: int,
                   config: dict[str, Any]) -> int:
        trial_id = self.storage.create_new_trial(study_id)
        for key, value in (("cell", cell), ("variant", variant), ("seed", seed),
                           ("config", config), ("owner", self.owner),
                           ("started_at", _now())):
            self.storage.set_trial_user_attr(trial_id, key, value)
        return trial_id

    def finish_cell(self, trial_id: int, record: dict[str, Any]) -> None:
        self.storage.set_trial_user_attr(trial_id, "record", record)
        self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE,
                                            [record["metrics"]["final_test_accuracy"]])

    def fail_cell(self, trial_id: int, reason: str, kind: str) -> None:
        self.storage.set_trial_user_attr(trial_id, "failure", reason[-4000:])
        self.storage.set_trial_user_attr(trial_id, "failure_kind", kind)
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)

    def cell_runs(self, study_id: int) -> list[CellRun]:
        return [_cell_run(t) for t in self.storage.get_all_trials(study_id, deepcopy=False)
                if "cell" in t.user_attrs]

    def reap_interrupted(self, study_id: int) -> list[str]:
        """Mark RUNNING cells whose owner process on this host is gone as interrupted.

        Returns the cells reaped. Cells owned by live processes or other hosts are left.
        """
        host = socket.gethostname()
        reaped = []
        for run in self.cell_runs(study_id):
            if run.state != "RUNNING" or not run.owner:
                continue
            owner_host, _, pid = run.owner.rpartition(":")
            if owner_host == host and not _pid_alive(int(pid)):
                self.fail_cell(run.trial_id, f"interrupted: process {run.owner} ended "
                                             f"before the cell finished", "interrupted")
                reaped.append(run.cell)
        return reaped


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Wait for a lock instead of failing at once when a reader holds the file.
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def _cell_run(trial: FrozenTrial) -> CellRun:
    attrs = trial.user_attrs
    return CellRun(trial_id=trial._trial_id, number=trial.number, cell=attrs["cell"],
                   variant=attrs["variant"], seed=int(attrs["seed"]), state=trial.state.name,
                   failure=attrs.get("failure"), failure_kind=attrs.get("failure_kind"),
                   record=attrs.get("record"), owner=attrs.get("owner"))


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


def latest_by_cell(runs: list[CellRun]) -> dict[str, CellRun]:
    """Per cell, the finished run if there is one, else the latest attempt."""
    chosen: dict[str, CellRun] = {}
    for run in sorted(runs, key=lambda r: r.number):
        current = chosen.get(run.cell)
        if current is None or current.state != "COMPLETE":
            chosen[run.cell] = run
    return chosen
