"""A full disk, a read-only disk, a file system that fails SQLite's read and a torn journal
line: one error line that says what to do, nothing committed lost, and the next command after
the fault is mended works. A real full disk: a small tmpfs, where the test may
mount one (root on Linux); skipped with the reason otherwise."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.runstore import RunStore

GRID = ["ablate", "--grid", "mnist100", "--profile", "smoke", "--seeds", "1", "--workers", "1",
        "--set", "train.epochs=1"]


def sslbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte."""
    filler = folder / "filler"
    for block in (4096, 1):  # unbuffered: each write reaches the disk or fails
        with contextlib.suppress(OSError), filler.open("ab", buffering=0) as handle:
            while True:
                handle.write(b"\0" * block)
    return filler


def finished(url: str) -> dict[str, float]:
    store = RunStore(url, create=False)
    study = store.find_study(grid_study_name("mnist100", "smoke"))
    cells = {r.cell: r.record["metrics"]["final_test_accuracy"]
             for r in store.cell_runs(study) if r.state == "COMPLETE"}
    engine = getattr(store.storage, "engine", None)
    if engine is not None:  # close the SQLite file: a busy mount cannot be remounted
        engine.dispose()
    return cells


@pytest.mark.parametrize("scheme", ["journal", "sqlite"])
def test_a_full_disk_is_one_line_and_loses_nothing(small_disk, data_root, scheme):
    name = "runs.log" if scheme == "journal" else "runs.db"
    url = f"{scheme}:///{small_disk / name}"
    first = sslbench(*GRID, "--variants", "control", "--storage", url, "--root", str(data_root))
    assert first.returncode == 0, first.stderr[-2000:]
    kept = finished(url)
    assert list(kept) == ["control/seed0"]

    filler = fill(small_disk)
    full = sslbench(*GRID, "--variants", "control", "ramp_none", "--storage", url, "--root",
                    str(data_root))
    assert full.returncode != 0 and "Traceback" not in full.stderr, full.stderr[-3000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, full.stderr[-3000:]
    assert "No space left on device" in errors[0] or "full" in errors[0], errors[0]
    assert "free space" in errors[0] and "permission" not in errors[0], errors[0]
    assert not list(small_disk.rglob("*.part"))

    filler.unlink()
    assert finished(url) == kept  # nothing committed was lost
    again = sslbench(*GRID, "--variants", "control", "ramp_none", "--storage", url, "--root",
                     str(data_root))
    assert again.returncode == 0, again.stderr[-3000:]
    after = finished(url)
    assert sorted(after) == ["control/seed0", "ramp_none/seed0"]
    assert after["control/seed0"] == kept["control/seed0"]


def test_a_torn_last_journal_line_is_cut_back_and_the_store_opens(tmp_path, data_root):
    url = f"journal:///{tmp_path / 'runs.log'}"
    ran = sslbench(*GRID, "--variants", "control", "--storage", url, "--root", str(data_root))
    assert ran.returncode == 0, ran.stderr[-2000:]
    kept = finished(url)
    with (tmp_path / "runs.log").open("ab") as handle:  # a writer killed mid-line
        handle.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "user_attr": {"rec')
    assert finished(url) == kept
    again = sslbench(*GRID, "--variants", "control", "ramp_none", "--storage", url, "--root",
                     str(data_root))
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(finished(url)) == ["control/seed0", "ramp_none/seed0"]


@pytest.mark.parametrize("scheme", ["journal", "sqlite"])
def test_a_read_only_store_reports_and_refuses_writes_in_one_line(small_disk, data_root,
                                                                  tmp_path, scheme):
    name = "runs.log" if scheme == "journal" else "runs.db"
    url = f"{scheme}:///{small_disk / name}"
    first = sslbench(*GRID, "--variants", "control", "--storage", url, "--root", str(data_root))
    assert first.returncode == 0, first.stderr[-2000:]
    kept = finished(url)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True,
                             text=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount read-only here: {remount.stderr.strip()}")
    report = sslbench("report", "--grid", "mnist100", "--storage", url, "--out",
                      str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-2000:]  # reading needs no write
    refused = sslbench(*GRID, "--variants", "control", "ramp_none", "--storage", url, "--root",
                       str(data_root))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "run store" in errors[0], refused.stderr[-3000:]
    assert "writable" in errors[0] and "free space" not in errors[0], errors[0]
    assert finished(url) == kept


def test_a_file_system_that_fails_sqlites_read_is_named_and_loses_nothing(tmp_path, data_root):
    """A real SQLITE_IOERR: a folder where SQLite looks for its rollback journal (a hot
    journal check reads it) makes every read of the store a "disk I/O error". The line names
    SQLite's extended code and the file system, not the URL, space or permissions; once the
    folder is gone the same command finishes and the first cell is kept."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first = sslbench(*GRID, "--variants", "control", "--storage", url, "--root", str(data_root))
    assert first.returncode == 0, first.stderr[-2000:]
    kept = finished(url)
    (tmp_path / "runs.db-journal").mkdir()
    failed = sslbench(*GRID, "--variants", "control", "ramp_none", "--storage", url, "--root",
                      str(data_root))
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, failed.stderr[-3000:]
    assert "disk I/O error (SQLITE_IOERR_READ)" in errors[0], errors[0]
    assert "-journal" in errors[0] and "local disk" in errors[0], errors[0]
    assert "check the --storage URL" not in errors[0] and "free space" not in errors[0]

    (tmp_path / "runs.db-journal").rmdir()
    assert finished(url) == kept
    again = sslbench(*GRID, "--variants", "control", "ramp_none", "--storage", url, "--root",
                     str(data_root))
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(finished(url)) == ["control/seed0", "ramp_none/seed0"]
    assert finished(url)["control/seed0"] == kept["control/seed0"]


def test_store_failure_advice_follows_sqlites_own_code(tmp_path):
    """By hand, on real SQLite errors: a full database (its page limit), a read-only one,
    a folder in place of the journal and damaged bytes each get their own advice and code."""
    import sqlite3

    from sslbench.bench.store.causes import driver_reason, store_advice

    path = tmp_path / "a.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (x)")
        db.commit()

    def error_of(action) -> sqlite3.Error:
        with pytest.raises(sqlite3.Error) as caught:
            action()
        return caught.value

    def fill_page_limit() -> None:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA max_page_count = 2")
            db.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 50)

    def write_read_only() -> None:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            db.execute("INSERT INTO t VALUES (1)")

    def read_beside_a_journal_folder() -> None:
        (tmp_path / "a.db-journal").mkdir()
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("SELECT * FROM t").fetchall()

    def read_damaged() -> None:
        (tmp_path / "a.db-journal").rmdir()
        data = bytearray(path.read_bytes())
        data[100:400] = b"\xff" * 300  # the schema page, after the 100-byte file header
        path.write_bytes(bytes(data))
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("SELECT * FROM t").fetchall()

    full, read_only, io_error, damaged = (
        error_of(fill_page_limit), error_of(write_read_only),
        error_of(read_beside_a_journal_folder), error_of(read_damaged))
    assert driver_reason(full) == "database or disk is full (SQLITE_FULL)"
    assert store_advice(full) == ("free space, then run the same command again (finished "
                                  "cells are kept)")
    assert driver_reason(read_only) == "attempt to write a readonly database (SQLITE_READONLY)"
    assert store_advice(read_only).startswith("make the store and its folder writable")
    assert driver_reason(io_error) == "disk I/O error (SQLITE_IOERR_READ)"
    assert "-journal" in store_advice(io_error) and "local disk" in store_advice(io_error)
    assert driver_reason(damaged) == "database disk image is malformed (SQLITE_CORRUPT)"
    assert "sslbench store check" in store_advice(damaged)
    assert "cells are kept" not in store_advice(damaged)  # a damaged file may have lost some
    no_space = OSError(errno.ENOSPC, "No space left on device")
    assert driver_reason(no_space) == "No space left on device"
    assert store_advice(no_space).startswith("free space, then")
