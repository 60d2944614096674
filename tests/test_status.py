"""`sslbench status`: each grid's cells by state, on real stores, read-only.

A grid study made the way `sslbench ablate` makes it (open_grid_study records the cells
asked for), with cells claimed, failed and left through the real queue; the committed pilot
store (finished cells, written before the record of cells asked for); and the command line
on both, with the store's bytes compared before and after."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sslbench.ablations import get_grid
from sslbench.bench.runs.cells import plan_cells
from sslbench.bench.runs.runner import open_grid_study
from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.queue import DEFAULT_GRACE_S, claim_cell
from sslbench.bench.store.runstore import RunStore, host_name
from sslbench.bench.store.status import grid_status, status_lines

PILOT = Path(__file__).resolve().parent / "fixtures" / "mnist100-quick-pilot.db"


def sslbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def smoke_store(tmp_path: Path) -> tuple[RunStore, int]:
    """4 cells asked for: one running (stale heartbeat), one crashed, one diverged, one
    never attempted."""
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    cells = plan_cells(get_grid("mnist100"), "smoke", range(2), ["control", "pixelwise"])
    study = open_grid_study(store, "mnist100", "smoke", None, cells)
    by_key = {c.key: c for c in cells}
    trials = {key: claim_cell(store, study, key, by_key[key].variant, by_key[key].seed,
                              by_key[key].config.to_dict())
              for key in ("control/seed0", "control/seed1", "pixelwise/seed0")}
    store.fail_cell(trials["control/seed1"], "error: out of memory", "error")
    store.fail_cell(trials["pixelwise/seed0"], "diverged at epoch 3", "diverged")
    silent = time.time() - DEFAULT_GRACE_S - 60
    store.storage.set_trial_user_attr(trials["control/seed0"], "heartbeat", silent)
    return store, study


def test_each_cell_is_counted_once_in_its_state(tmp_path):
    store, _ = smoke_store(tmp_path)
    status = grid_status(store, grid_study_name("mnist100", "smoke"))
    assert (status.asked, status.done, status.left, status.retried) == (4, 0, 1, 1)
    assert status.failed == {"error": 1, "diverged": 1}
    assert [r.cell for r in status.running] == ["control/seed0"]
    lines = status_lines(store)
    # left to run: the one never attempted and the crashed one (`ablate` retries it); the
    # diverged one is kept unless --retry-failed
    assert lines[0] == ("mnist100/smoke: 4 cells asked for: 0 finished, 1 running, "
                        "2 failed (1 diverged, 1 error), 2 left to run")
    assert lines[1].startswith(f"  running control/seed0 on {host_name()}:")
    assert "silent past the grace period" in lines[1]
    assert status_lines(store, grid="other") == ["nothing stored yet for grid other"]


def test_asking_again_for_more_seeds_grows_the_cells_asked_for(tmp_path):
    store, study = smoke_store(tmp_path)
    more = plan_cells(get_grid("mnist100"), "smoke", range(3), ["control", "pixelwise"])
    open_grid_study(store, "mnist100", "smoke", None, more)
    assert store.asked_cells(study) == {c.key for c in more}
    assert grid_status(store, grid_study_name("mnist100", "smoke")).left == 3


def test_the_command_reads_without_writing_and_refuses_bad_input_in_one_line(tmp_path):
    shutil.copyfile(PILOT, tmp_path / "pilot.db")
    before = digest(tmp_path / "pilot.db")
    result = sslbench("status", "--storage", "sqlite:///pilot.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-800:]
    # the pilot store predates the record of cells asked for: finished counted, left unknown
    assert "mnist100/quick: 24 finished, 0 running, ? left" in result.stdout, result.stdout
    assert digest(tmp_path / "pilot.db") == before
    (tmp_path / "notes.txt").write_text("my notes\n")
    for args, says in ((["--storage", "journal:///notes.txt"], "is not an Optuna journal"),
                       (["--storage", "sqlite:///missing.db"], "does not exist"),
                       (["--storage", "sqlite:///pilot.db", "--grid", "nope"], "nope")):
        result = sslbench("status", *args, cwd=tmp_path)
        assert result.returncode == 2 and says in result.stderr, result.stderr[-800:]
        assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"
    assert not (tmp_path / "missing.db").exists()


def test_reading_commands_open_postgresql_read_only(tmp_path, postgres_url):
    """An empty database is refused and gets no tables; on a store, status reads and the
    server itself refuses any write through a read-only opening."""
    import pytest
    import sqlalchemy

    from sslbench.bench.errors import StoreError

    def tables() -> set[str]:
        engine = sqlalchemy.create_engine(postgres_url)
        try:
            return set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()

    result = sslbench("status", "--storage", postgres_url, cwd=tmp_path)
    assert result.returncode == 2 and "holds no run store's tables" in result.stderr
    assert tables() == set()
    store = RunStore(postgres_url)
    cells = plan_cells(get_grid("mnist100"), "smoke", range(1), ["control"])
    open_grid_study(store, "mnist100", "smoke", None, cells)
    result = sslbench("status", "--storage", postgres_url, cwd=tmp_path)
    assert "mnist100/smoke: 1 cells asked for: 0 finished, 0 running, 1 left to run" \
        in result.stdout, result.stdout + result.stderr
    reader = RunStore(postgres_url, read_only=True)
    with pytest.raises(StoreError, match="read-only transaction"):
        reader.study_id(grid_study_name("mnist100", "quick"))
    assert reader.find_study(grid_study_name("mnist100", "quick")) is None
