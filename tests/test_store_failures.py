"""Store and runner edge cases that used to end in a traceback or a wrong line."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest

from sslbench.bench.runs.progress import Progress
from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.queue import claim_cell
from sslbench.bench.store.runstore import RunStore, host_name
from sslbench.reports.markdown import running_cells


def test_the_progress_counter_never_passes_the_total():
    stream = io.StringIO()
    progress = Progress(total=2, done=1, workers=1, epochs_per_cell=1, stream=stream)
    for cell in ("a/seed0", "a/seed0", "b/seed0", "c/seed0"):
        progress.cell_done(cell, "done")
    counts = [line.split("]")[0] for line in stream.getvalue().splitlines()]
    assert counts == ["[2/2 cells", "[2/2 cells", "[2/2 cells", "[2/2 cells"]


def test_a_terminal_gets_live_bars_and_a_log_gets_plain_lines():
    from sslbench.bench.core.train import EpochSummary

    summary = EpochSummary(epoch=2, epochs=30, weight=0.5, supervised_loss=[0.1],
                           unsupervised_loss=[0.2], train_loss=[0.2], test_accuracy=[0.9123],
                           val_accuracy=None, epoch_seconds=9.0, eval_seconds=1.0,
                           train_images_per_s=6000.0, elapsed_seconds=30.0)
    plain, terminal = io.StringIO(), io.StringIO()
    for stream, live in ((plain, False), (terminal, True)):
        with Progress(total=4, done=1, workers=2, epochs_per_cell=30, stream=stream,
                      pending=2, live=live) as progress:
            progress.epoch("control/seed0", summary)
            progress.cell_done("control/seed0", "test acc 91.23%")
    # 27 epochs left in flight + 2 pending cells of 30, at 10 s an epoch, over 2 workers
    assert plain.getvalue().splitlines() == [
        "[1/4 cells] control/seed0 epoch 3/30 test acc 91.23% w 0.5000 6,000 img/s | "
        "~7 min left",
        "[2/4 cells] control/seed0: test acc 91.23%"]
    shown = terminal.getvalue()
    assert "\r" in shown  # redrawn in place
    assert "cells 1/4" in shown and "~7 min left" in shown  # the grid's bar
    assert "control/seed0" in shown and "3/30" in shown and "91.23%" in shown  # the job's
    assert "[2/4 cells] control/seed0: test acc 91.23%\n" in shown  # kept above the bars


def test_time_left_is_not_thrown_by_one_paused_epoch():
    """By hand: 9 epochs of 10 s and one of 1,800 s (the process was stopped for half an
    hour), 30 epochs left on 1 worker: 30 x 10 s = 5 min, where the mean (189 s an epoch)
    would say 1.6 h."""
    progress = Progress(total=2, done=0, workers=1, epochs_per_cell=30, stream=io.StringIO())
    progress.epoch_seconds = [10.0] * 5 + [1800.0] + [10.0] * 4
    progress.epochs_left_in_flight = {"control/seed0": 30}
    assert progress.time_left_s() == pytest.approx(300.0)


def test_the_report_tells_running_cells_from_stale_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = RunStore(url)
    study = store.study_id(grid_study_name("mnist100", "smoke"))
    claim_cell(store, study, "control/seed0", "control", 0, {})  # this live process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    store.owner = f"{host_name()}:{dead}"  # a runner that has exited
    claim_cell(store, study, "control/seed1", "control", 1, {})
    text = running_cells(store.cell_runs(study))
    assert text.startswith("1 running: control/seed0")
    assert "1 stale, their runner gone" in text and "control/seed1" in text


def test_three_runners_on_a_fresh_sqlite_file_all_finish(tmp_path, data_root):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    command = [sys.executable, "-m", "sslbench.bench.cli", "ablate", "--grid", "mnist100",
               "--profile", "smoke", "--seeds", "1", "--variants", "control", "ramp_none",
               "supervised",
               "--workers", "1", "--set", "train.epochs=1", "--storage", url, "--root",
               str(data_root)]
    runners = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(3)]
    deadline = time.monotonic() + 600
    outputs = [r.communicate(timeout=max(1.0, deadline - time.monotonic())) for r in runners]
    for runner, (_, err) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, err[-2000:]
        assert "Traceback" not in err
    store = RunStore(url, create=False)
    runs = store.cell_runs(store.find_study(grid_study_name("mnist100", "smoke")))
    done = sorted(r.cell for r in runs if r.state == "COMPLETE")
    assert done == ["control/seed0", "ramp_none/seed0", "supervised/seed0"]  # each once


def test_a_claim_leaves_no_study_and_a_stale_racer_backs_off(tmp_path, monkeypatch):
    """The claim study is deleted once the attempt exists. A runner that read the store
    before that attempt was made wins the freed name later, and must then see the attempt
    and back off rather than start the cell a second time."""
    from sslbench.bench.store import queue

    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    study = store.study_id(grid_study_name("mnist100", "smoke"))
    first = claim_cell(store, study, "control/seed0", "control", 0, {})
    assert first is not None
    assert store.study_names() == [grid_study_name("mnist100", "smoke")]  # no claim left

    real = queue._attempts
    reads = iter([[]])  # the racer's first read predates the first attempt

    def stale_then_real(*args):
        return next(reads, None) or real(*args)

    monkeypatch.setattr(queue, "_attempts", stale_then_real)
    assert claim_cell(store, study, "control/seed0", "control", 0, {}) is None
    assert [r.trial_id for r in store.cell_runs(study)] == [first]  # no second attempt
    assert store.study_names() == [grid_study_name("mnist100", "smoke")]


def test_spent_claims_of_older_versions_are_tidied_and_pending_ones_kept(tmp_path):
    import optuna

    from sslbench.bench.store.queue import tidy_claims

    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    study = store.study_id(grid_study_name("mnist100", "smoke"))
    claim_cell(store, study, "control/seed0", "control", 0, {})
    direction = [optuna.study.StudyDirection.MAXIMIZE]
    spent = ["claim:grid:mnist100:smoke:control/seed0:0",  # the oldest form: cell, attempt
             "claim:grid:mnist100:smoke:control/seed0:abc123:0"]  # cell, run id, attempt
    pending = "claim:grid:mnist100:smoke:control/seed1:0"  # its runner may be mid-claim
    for name in (*spent, pending, "claim:grid:other:smoke:control/seed0:0"):
        store.storage.create_new_study(direction, name)
    assert tidy_claims(store, study) == 2
    assert sorted(store.study_names()) == sorted([grid_study_name("mnist100", "smoke"), pending,
                                                  "claim:grid:other:smoke:control/seed0:0"])


def test_a_busy_sqlite_file_is_waited_out_and_other_errors_are_not(tmp_path):
    """A write that SQLite refuses at once as busy (here: another connection holds the
    file's exclusive lock and the busy timeout is 0) is repeated until the lock is gone;
    any other error is raised at once."""
    import sqlite3
    import threading

    import optuna
    from optuna.storages import RDBStorage
    from optuna.study import StudyDirection

    from sslbench.bench.store.runstore import is_busy, with_store_retries

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 0}})
    holder = sqlite3.connect(tmp_path / "busy.db", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")

    def create() -> int:
        return storage.create_new_study([StudyDirection.MAXIMIZE], "waited")

    with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
        create()
    assert is_busy(refused.value)
    threading.Timer(0.4, lambda: holder.execute("COMMIT")).start()
    started = time.monotonic()
    study_id = with_store_retries(create)  # refused while the lock is held, then made
    assert time.monotonic() - started >= 0.3
    assert storage.get_study_name_from_id(study_id) == "waited"

    calls = []

    def duplicate() -> int:
        calls.append(1)
        return create()

    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        with_store_retries(duplicate)
    assert len(calls) == 1  # not a busy file: no second try


def test_opening_the_store_again_keeps_this_processs_sqlite_write_lock(tmp_path):
    """A runner opens its store a second time (the heartbeat's thread, the finishing step)
    while another of its threads may hold SQLite's write lock. The check that the file is a
    database read its header with a plain open(); closing that descriptor dropped every
    POSIX lock the process held on the file, so another runner could write at the same time
    (a likely cause, not a shown one, of the "disk I/O error" once seen with three runners
    on a fresh file under heavy load)."""
    import contextlib
    import sqlite3

    path = tmp_path / "runs.db"
    RunStore(f"sqlite:///{path}")  # the file, with Optuna's tables
    probe = ("import sqlite3, sys\n"
             "db = sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None)\n"
             "db.execute('BEGIN IMMEDIATE')\n")  # a writer's first lock (RESERVED)

    def another_process_can_write() -> bool:
        return subprocess.run([sys.executable, "-c", probe, str(path)],
                              capture_output=True).returncode == 0

    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")  # this process's write lock; readers may go on
        assert not another_process_can_write()
        RunStore(f"sqlite:///{path}")  # as the heartbeat's thread opens it
        RunStore(f"sqlite:///{path}", create=False)  # as the finishing step does
        assert not another_process_can_write()  # the lock is still this process's
        holder.execute("ROLLBACK")
    assert another_process_can_write()  # the probe itself can take the lock
