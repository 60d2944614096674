"""The cluster launcher's own parts, without Slurm: sbatch's time and option forms, the shared
store check, the task's signals, and `--launcher local` (submitit's local executor: the same
tasks as this machine's processes) running a grid and a search end to end. Against a real
Slurm: tests/test_slurm.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest

from sslbench.bench.cluster.entry import requeue_this_task, stop_then_requeue
from sslbench.bench.cluster.grid import default_log_dir, task_settings
from sslbench.bench.cluster.launch import ClusterOptions, parse_extra, time_minutes
from sslbench.bench.cluster.shared import shared_store_url
from sslbench.bench.errors import UserError
from sslbench.bench.runs.settings import GridSettings
from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.runstore import RunStore

SMOKE = ["ablate", "--grid", "mnist100", "--profile", "smoke", "--threads", "1"]


def sslbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.parametrize(("text", "minutes"), [
    ("90", 90), ("1:30", 2), ("0:59", 1), ("1:30:00", 90), ("2-12", 3600),
    ("1-0:30", 1470), ("1-00:00:30", 1441)])
def test_slurm_time_forms_in_minutes(text, minutes):
    assert time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "1:2:3:4", "-5", "0", "0:00:00"])
def test_a_bad_time_is_one_line(text):
    with pytest.raises(UserError, match="--time"):
        time_minutes(text)


def test_sbatch_options_from_key_value():
    assert parse_extra(["constraint=a100", "mail-type=END", "exclude=n1,n2"]) == (
        ("constraint", "a100"), ("mail_type", "END"), ("exclude", "n1,n2"))
    for bad in ("constraint", "=a100", "--constraint=a100"):
        with pytest.raises(UserError, match="KEY=VALUE"):
            parse_extra([bad])


def test_the_store_every_node_reaches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shared_store_url("journal:///runs.log", "slurm") == f"journal:///{tmp_path}/runs.log"
    assert shared_store_url("journal:////abs/runs.log", "slurm") == "journal:////abs/runs.log"
    assert shared_store_url("postgresql://u@db/x", "slurm") == "postgresql://u@db/x"
    # One machine's processes share a SQLite file, as --workers does; a cluster cannot.
    assert shared_store_url("sqlite:///r.db", "local") == f"sqlite:///{tmp_path}/r.db"
    with pytest.raises(UserError, match="SQLite file"):
        shared_store_url("sqlite:///r.db", "slurm")
    for memory in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(UserError, match="memory"):
            shared_store_url(memory, "local")
    with pytest.raises(UserError, match="cannot tell"):
        shared_store_url("mysql://u@db/x", "slurm")


def test_each_task_runs_one_worker_on_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = GridSettings("smoke", (0, 1), data_root=Path("data"),
                            checkpoint_dir=Path("runs.log.checkpoints"), workers=2)
    task = task_settings(settings, ClusterOptions("slurm", cpus_per_job=4))
    assert (task.workers, task.threads, task.wait_for_others) == (1, 4, False)
    assert task.data_root == tmp_path / "data"
    assert task.checkpoint_dir == tmp_path / "runs.log.checkpoints"
    assert default_log_dir("journal:////s/runs.log") == Path("/s/runs.log.jobs")
    assert default_log_dir("postgresql://u@db/x") == Path("sslbench-jobs")


def test_the_preemption_signal_stops_the_runner_and_marks_the_task_preempted():
    stops = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stops.append("SIGTERM"))
    try:
        with stop_then_requeue() as preempted:
            assert not preempted.is_set()
            os.kill(os.getpid(), signal.SIGUSR2)  # as Slurm's --signal=USR2@90 sends it
        assert preempted.is_set()
        assert stops == ["SIGTERM"]  # the runner's own stop: save and release the cells
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # put back on the way out
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_slurm_a_preempted_task_is_not_requeued(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert requeue_this_task() == "not under Slurm: run the same command again to resume"


def test_cluster_flags_are_refused_in_one_line_before_the_store_is_made(tmp_path):
    store = tmp_path / "runs.log"
    for extra, message in (
            (["--until-decided"], "error: --until-decided looks at the results between its "
                                  "rounds, here; with --launcher local, submit a round with "
                                  "--seeds, then `sslbench report` (or drop --launcher)"),
            (["--time", "soon"], "error: --time 'soon': give minutes, MM:SS, HH:MM:SS, D-HH, "
                                 "D-HH:MM or D-HH:MM:SS (Slurm's forms)"),
            (["--slurm-extra", "a100"], "error: --slurm-extra 'a100': give KEY=VALUE, an "
                                        "sbatch option without its dashes (constraint=a100, "
                                        "exclude=node3)")):
        done = sslbench(*SMOKE, "--storage", f"journal:///{store}", "--launcher", "local",
                        *extra)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [message]
        assert not store.exists()


def test_a_scheduler_flag_without_a_launcher_is_refused_not_ignored(tmp_path):
    for extra in (["--jobs", "4"], ["--partition", "gpu"], ["--wait"]):
        done = sslbench(*SMOKE, "--storage", f"journal:///{tmp_path / 'r.log'}", *extra)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"error: {extra[0]} is for a job array: add --launcher slurm (or --launcher "
            f"local), or drop {extra[0]}"]
    search = sslbench("search", "--space", "supervised", "--profile", "smoke", "--jobs", "2")
    assert search.returncode == 2 and "--jobs is for a job array" in search.stderr
    assert not (tmp_path / "r.log").exists()


def test_a_grid_through_the_local_launcher_runs_each_cell_once(tmp_path, data_root):
    done = sslbench(*SMOKE, "--variants", "control", "--seeds", "2", "--storage",
                    "journal:///runs.log", "--launcher", "local", "--jobs", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "submitted local job array" in done.stderr and "with 2 task(s)" in done.stderr
    assert "0 already finished, 2 run now, 0 failed (2 cells)" in done.stdout
    store = RunStore(f"journal:///{tmp_path / 'runs.log'}", read_only=True)
    study = store.find_study(grid_study_name("mnist100", "smoke"))
    assert study is not None
    runs = store.cell_runs(study)
    assert sorted((r.cell, r.state) for r in runs) == [("control/seed0", "COMPLETE"),
                                                        ("control/seed1", "COMPLETE")]
    assert len(Counter(r.owner for r in runs)) == 2  # one cell in each task's process
    # Nothing is left to run: the same command submits nothing.
    again = sslbench(*SMOKE, "--variants", "control", "--seeds", "2", "--storage",
                     "journal:///runs.log", "--launcher", "local", cwd=tmp_path)
    assert again.returncode == 0
    assert "nothing to submit: 2 of 2 cells finished" in again.stderr


def test_a_search_through_the_local_launcher_runs_the_trials_asked(tmp_path, data_root):
    url = f"journal:///{tmp_path / 'search.log'}"
    done = sslbench("search", "--space", "supervised", "--profile", "smoke", "--trials", "2",
                    "--trial-seeds", "1", "--storage", url, "--launcher", "local",
                    "--jobs", "2", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert "with 2 task(s)" in done.stderr
    store = RunStore(url, read_only=True)
    (name,) = store.study_names()
    trials = optuna.load_study(study_name=name, storage=store.storage).get_trials()
    assert [t.state.name for t in trials].count("COMPLETE") == 2
    assert len(trials) == 2  # exactly the trials asked, across both tasks
