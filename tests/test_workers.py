"""Many runners on one grid through one store: real processes, real PostgreSQL, real kills.

PostgreSQL tests need a server: `export SSLBENCH_TEST_POSTGRES=$(.ci/postgres start)`
(CI does this). Each test gets a fresh database on it, dropped afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.runstore import RunStore, host_name, latest_by_cell
from tests.test_grid import sslbench, wait_for

# A small real grid: 2 seeds x 3 variants of the smoke profile, cut to 600 training images.
SMALL = ["--grid", "mnist100", "--profile", "smoke", "--workers", "1", "--threads", "1",
         "--set", "data.train_size=600", "--set", "data.test_size=500"]
CELLS_6 = [*SMALL, "--seeds", "2", "--variants", "control", "supervised", "ramp_none",
           "--set", "train.epochs=2"]
# 3 epochs with a checkpoint after each: a cell holding a checkpoint is mid-run.
CELLS_4 = [*SMALL, "--seeds", "2", "--variants", "control", "supervised", "--set",
           "train.epochs=3"]
# The shortest grace the CLI takes (it must exceed the 10 s between heartbeats).
GRACE_S = "12"


@pytest.fixture(params=["postgres", "journal"])
def store_url(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"journal:///{tmp_path / 'runs.log'}"


@pytest.fixture
def runners():
    """Start `sslbench ablate` processes, output to a log file each; killed if left over."""
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
        with log.open("w") as out:
            process = subprocess.Popen([sys.executable, "-m", "sslbench.bench.cli", "ablate",
                                        *args], stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, "OMP_NUM_THREADS": "1", **env})
        started.append((process, log))
        return process

    yield start
    for process, _ in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def finish(process: subprocess.Popen, log: Path, timeout_s: float = 240) -> str:
    """Wait for a runner; fail with its output unless it exits 0. Returns the output."""
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"runner {process.pid} still running after {timeout_s} s:\n"
                    f"{log.read_text()[-3000:]}")
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    return output


def grid_runs(store: RunStore) -> list:
    study = store.find_study(grid_study_name("mnist100", "smoke"))
    return store.cell_runs(study) if study is not None else []


def expected_cells(seeds: int, variants: list[str]) -> list[str]:
    return sorted(f"{v}/seed{s}" for s in range(seeds) for v in variants)


def test_runners_started_at_once_run_every_cell_exactly_once(store_url, runners, tmp_path,
                                                              data_root):
    """3 runners on PostgreSQL (2 on the journal file), all opening a fresh store at once."""
    count = 3 if store_url.startswith("postgresql") else 2
    processes = [runners([*CELLS_6, "--storage", store_url, "--root", str(data_root),
                          "--checkpoints", str(tmp_path / f"ckpt{i}")], tmp_path / f"r{i}.log")
                 for i in range(count)]
    outputs = [finish(p, tmp_path / f"r{i}.log") for i, p in enumerate(processes)]

    store = RunStore(store_url, create=False)
    runs = grid_runs(store)
    cells = expected_cells(2, ["control", "supervised", "ramp_none"])
    assert sorted(r.cell for r in runs) == cells, [(r.cell, r.state, r.owner) for r in runs]
    assert all(r.state == "COMPLETE" for r in runs)  # none failed, none lost
    # The cells each runner says it ran add up to the grid: none ran twice.
    ran = [int(n) for output in outputs for n in re.findall(r"(\d+) run now", output)]
    assert len(ran) == count and sum(ran) == len(cells), outputs
    # Every claim study was deleted once its attempt was made: the store holds the grid alone.
    assert store.study_names() == [grid_study_name("mnist100", "smoke")]


@pytest.mark.parametrize(("store_url", "killed_host"), [
    ("postgres", "other-machine"),
    ("journal", "other-machine"),
    ("postgres", None),
    ("journal", None),
], indirect=["store_url"], ids=["postgres-heartbeat", "journal-heartbeat", "postgres-dead-pid",
                                "journal-dead-pid"])
def test_a_killed_runners_cell_is_taken_over_and_nothing_is_rerun(
        store_url, killed_host, runners, tmp_path, data_root):
    """Two runners share the grid; one is killed (SIGKILL) while it holds a running cell.
    The other finishes its own cells, then takes the dead one's cell over: by its silent
    heartbeat when the dead runner was on another machine, by its dead process id when it
    was on this one."""
    store = RunStore(store_url)
    common = [*CELLS_4, "--storage", store_url, "--root", str(data_root),
              "--heartbeat-grace", GRACE_S]
    killed_checkpoints = tmp_path / "ckpt-killed"
    env = {"SSLBENCH_WORKER_HOST": killed_host} if killed_host else {}
    killed = runners([*common, "--checkpoints", str(killed_checkpoints)],
                     tmp_path / "killed.log", **env)
    survivor = runners([*common, "--checkpoints", str(tmp_path / "ckpt-survivor")],
                       tmp_path / "survivor.log")
    killed_owner = f"{killed_host or host_name()}:{killed.pid}"

    def killed_runner_is_mid_cell_and_a_cell_is_done() -> bool:
        runs = grid_runs(store) if killed.poll() is None else []
        return (any(r.state == "COMPLETE" for r in runs)
                and any(r.state == "RUNNING" and r.owner == killed_owner for r in runs)
                and any(killed_checkpoints.glob("*.pt")))  # removed when a cell finishes

    wait_for(killed_runner_is_mid_cell_and_a_cell_is_done,
             "the runner to kill to hold a running cell, with one cell finished",
             timeout_s=180, poll_s=0.1)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    before = grid_runs(store)
    held = [r for r in before if r.owner == killed_owner and r.state == "RUNNING"]
    assert len(held) == 1, [(r.cell, r.state, r.owner) for r in before]
    finished_before = {r.cell: r.trial_id for r in before if r.state == "COMPLETE"}
    output = finish(survivor, tmp_path / "survivor.log")

    runs = grid_runs(store)
    latest = latest_by_cell(runs)
    assert sorted(latest) == expected_cells(2, ["control", "supervised"])
    assert all(r.state == "COMPLETE" for r in latest.values()), output[-3000:]
    for cell, trial_id in finished_before.items():  # kept, not rerun
        assert latest[cell].trial_id == trial_id
    # One failed attempt, the dead runner's, then one that completed; no other rerun.
    assert Counter(r.cell for r in runs) == Counter([*latest, held[0].cell])
    taken = sorted((r for r in runs if r.cell == held[0].cell), key=lambda r: r.number)
    assert [r.state for r in taken] == ["FAIL", "COMPLETE"]
    assert taken[0].failure_kind == "interrupted"
    if killed_host:
        assert f"{killed_owner} sent no heartbeat for {GRACE_S} s" in taken[0].failure
    else:
        assert f"process {killed_owner} ended" in taken[0].failure
    assert taken[1].owner == f"{host_name()}:{survivor.pid}"


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (a stuck server or proxy)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_an_unreachable_postgres_store_is_a_one_line_error_quickly(kind, tmp_path, data_root,
                                                                    request):
    port = 1 if kind == "refused" else request.getfixturevalue("silent_server")
    started = time.monotonic()
    result = sslbench("ablate", *CELLS_6, "--root", str(data_root),
                      "--storage", f"postgresql://postgres@127.0.0.1:{port}/nothing",
                      cwd=tmp_path)
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open run store"), lines
    assert not any(tmp_path.iterdir())  # nothing written


def test_other_settings_are_refused_and_kept_apart_on_every_shared_store(store_url, data_root,
                                                                         tmp_path):
    """The identity check on the stores several runners share (PostgreSQL, journal)."""
    base = ["ablate", *SMALL, "--seeds", "1", "--variants", "control", "--storage", store_url,
            "--checkpoints", str(tmp_path / "ckpt"), "--root", str(data_root)]
    first = sslbench(*base, "--set", "train.epochs=1")
    assert first.returncode == 0, first.stderr[-2000:]
    refused = sslbench(*base, "--set", "train.epochs=2")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip().splitlines()[0]]
    assert "train.epochs 1 stored, 2 now" in refused.stderr
    apart = sslbench(*base, "--set", "train.epochs=2", "--settings", "two")
    assert apart.returncode == 0, apart.stderr[-2000:]
    store = RunStore(store_url, create=False)
    for name, epochs in (("grid:mnist100:smoke", 1), ("grid:mnist100:smoke@two", 2)):
        runs = store.cell_runs(store.find_study(name))
        assert [r.record["config"]["train"]["epochs"] for r in runs] == [epochs]


def test_a_store_server_restart_mid_grid_loses_nothing_and_kills_no_runner(
        postgres_url, runners, tmp_path, data_root):
    """The PostgreSQL server goes down for 8 s (every connection cut, then refused) while two
    runners train: both ride it out (--store-grace), and every cell ends once."""
    script = Path(__file__).resolve().parent.parent / ".ci" / "postgres"
    processes = [runners([*CELLS_6, "--storage", postgres_url, "--root", str(data_root),
                          "--store-grace", "60", "--checkpoints", str(tmp_path / f"ckpt{i}")],
                         tmp_path / f"r{i}.log") for i in range(2)]
    store = RunStore(postgres_url, create=False)
    deadline = time.monotonic() + 120
    while not any(r.state == "COMPLETE" for r in grid_runs(store)):  # mid-grid, for sure
        assert time.monotonic() < deadline, "no cell finished within 120 s"
        time.sleep(0.5)
    restart = subprocess.run([str(script), "outage", "8"], capture_output=True, text=True,
                             timeout=120)
    assert restart.returncode == 0, restart.stderr[-2000:]
    outputs = [finish(p, tmp_path / f"r{i}.log") for i, p in enumerate(processes)]
    store = RunStore(postgres_url, create=False)
    runs = grid_runs(store)
    assert sorted(r.cell for r in runs if r.state == "COMPLETE") == expected_cells(
        2, ["control", "supervised", "ramp_none"]), [(r.cell, r.state) for r in runs]
    ran = [int(n) for output in outputs for n in re.findall(r"(\d+) run now", output)]
    assert sum(ran) == 6, outputs
