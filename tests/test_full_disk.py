"""A full disk and a torn journal line: one error line, nothing committed lost, and the next
command after space is freed works. A real full disk: a small tmpfs, where the test may
mount one (root on Linux); skipped with the reason otherwise."""

from __future__ import annotations

import contextlib
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
    assert finished(url) == kept
