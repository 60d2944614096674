"""`sslbench store check`: a store's health, read-only, and a repaired copy on request.

What it reports: for a journal, its lines, the lines that are not operations (by number)
and a torn tail; for SQLite, SQLite's own integrity check; for every store, each grid's
cells (finished, running, failed by kind) and the records quarantined when read
(bench.store.validate). The store itself is never edited: `repaired_copy` writes a new
journal that holds every valid operation and nothing else, which the user may then swap
in by hand.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sslbench.bench.errors import StoreError
from sslbench.bench.store.journal import is_operation, whole_lines
from sslbench.bench.store.runstore import RunStore, latest_by_cell


@dataclass
class Health:
    url: str
    problems: list[str] = field(default_factory=list)  # damage that a repair could remove
    lines: list[str] = field(default_factory=list)  # everything said, in order

    @property
    def healthy(self) -> bool:
        return not self.problems


def _journal_lines(path: Path, health: Health) -> None:
    data = path.read_bytes()
    whole = whole_lines(data)
    bad = [i for i, line in enumerate(whole.splitlines(keepends=True), start=1)
           if not is_operation(line)]
    total = whole.count(b"\n")
    health.lines.append(f"journal: {total:,} lines, {total - len(bad):,} operations")
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        health.problems.append(f"{len(bad)} line(s) not a journal operation: {shown} "
                               f"(skipped when read)")
    if len(whole) < len(data):
        health.problems.append(f"a torn tail of {len(data) - len(whole)} bytes after the last "
                               f"newline (cut before the next append)")


def _sqlite_integrity(path: Path, health: Health) -> None:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        verdict = [row[0] for row in db.execute("PRAGMA integrity_check")]
    if verdict == ["ok"]:
        health.lines.append("sqlite: integrity check ok")
    else:
        health.problems.append("sqlite integrity check: " + "; ".join(verdict[:5]))


def check_store(url: str) -> Health:
    """Read the store (never write it) and say what is in it and what is damaged."""
    health = Health(url)
    store = RunStore(url, read_only=True)  # refuses what is not a store, untouched
    if url.startswith("journal:///"):
        _journal_lines(Path(url.removeprefix("journal:///")).expanduser(), health)
    elif url.startswith("sqlite:///"):
        _sqlite_integrity(Path(url.removeprefix("sqlite:///")).expanduser(), health)
    quarantined = 0
    for name in sorted(store.study_names()):
        if not name.startswith("grid:"):
            continue
        latest = latest_by_cell(store.cell_runs(store.storage.get_study_id_from_name(name)))
        states = Counter(r.state if r.state != "FAIL" else f"failed ({r.failure_kind})"
                         for r in latest.values())
        invalid = [r for r in latest.values() if r.failure_kind == "invalid"]
        quarantined += len(invalid)
        health.lines.append(f"{name}: {len(latest)} cells: " + ", ".join(
            f"{count} {state.lower()}" for state, count in sorted(states.items())))
        health.lines += [f"  {r.cell}: {r.failure}" for r in invalid]
    if quarantined:
        health.lines.append(f"{quarantined} record(s) quarantined: left out of every report; "
                            f"`sslbench ablate` reruns their cells, the bad bytes stay")
    return health


def repaired_copy(url: str, out: Path) -> int:
    """A new journal at `out` with every valid operation of the store's journal, in order,
    and nothing else; the operations written. The store is not touched."""
    if not url.startswith("journal:///"):
        raise StoreError("only a journal store has lines to repair; a SQLite store's bad "
                         "records are quarantined when read, and its file is checked by "
                         "SQLite's integrity check above")
    source = Path(url.removeprefix("journal:///")).expanduser()
    if out.exists():
        raise StoreError(f"{out} exists; give --repair-to a new file name")
    if out.resolve() == source.resolve():
        raise StoreError("--repair-to must be a new file, never the store itself")
    data = source.read_bytes()
    kept = [line for line in whole_lines(data).splitlines(keepends=True)
            if is_operation(line)]
    partial = out.with_name(out.name + ".part")
    partial.write_bytes(b"".join(kept))
    partial.replace(out)
    return len(kept)
