"""`--launcher slurm` against a real one-node Slurm cluster (`.ci/slurm start`, which CI runs):
every cell exactly once across the array, the same report as a local run, and nothing lost
or run twice when a task is cancelled, requeued or preempted mid-cell.

    export SSLBENCH_TEST_SLURM=$(.ci/slurm start)   # the cluster's slurm.conf
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.runstore import CellRun, RunStore

ROOT = Path(__file__).resolve().parent.parent
SLURM_CONF = os.environ.get("SSLBENCH_TEST_SLURM", "")
pytestmark = pytest.mark.skipif(not SLURM_CONF, reason=(
    "no Slurm: run `export SSLBENCH_TEST_SLURM=$(.ci/slurm start)` (`.ci/slurm stop` after)"))

SMOKE = ["ablate", "--grid", "mnist100", "--profile", "smoke", "--threads", "1"]
# One cell long enough to be interrupted after its first checkpoint (smoke: ~1-4 s an epoch).
LONG_CELL = ["--variants", "control", "--seeds", "1", "--set", "train.epochs=14"]


def sslbench(*args: str, cwd: Path | None = None, timeout_s: float = 600,
             **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args],
                          capture_output=True, text=True, timeout=timeout_s, cwd=cwd,
                          env={**os.environ, "SLURM_CONF": SLURM_CONF, **env})


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          env={**os.environ, "SLURM_CONF": SLURM_CONF}).stdout


def array_id(output: str) -> str:
    found = re.search(r"submitted Slurm job array (\d+)", output)
    assert found, output
    return found.group(1)


def in_queue(job: str) -> bool:
    return bool(slurm("squeue", "-h", "-j", job, "-o", "%i").strip())


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(1)


def attempts(url: str) -> dict[str, list[CellRun]]:
    """Every stored attempt at each cell of the smoke grid, in order."""
    store = RunStore(url, read_only=True)
    study = store.find_study(grid_study_name("mnist100", "smoke"))
    assert study is not None
    by_cell: dict[str, list[CellRun]] = {}
    for run in sorted(store.cell_runs(study), key=lambda r: r.number):
        by_cell.setdefault(run.cell, []).append(run)
    return by_cell


def report_tables(url: str, out: Path) -> dict[str, pd.DataFrame]:
    done = sslbench("report", "--grid", "mnist100", "--profile", "smoke", "--storage", url,
                    "--out", str(out))
    assert done.returncode == 0, done.stderr
    # The accuracies and their statistics; throughput and run times differ by nature.
    return {name: pd.read_csv(out / f"{name}.csv")
            for name in ("per_seed", "summary", "paired")}


def readme_commands(shared: Path) -> list[list[str]]:
    """The README's "On a Slurm cluster" commands, its shared folder replaced by `shared`."""
    text = (ROOT / "README.md").read_text().split("## On a Slurm cluster", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    block = block.replace("/shared/sslbench", str(shared))
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert all(c[0] == "sslbench" for c in commands), commands
    return [c[1:] for c in commands]


def test_the_readme_grid_through_slurm_runs_each_cell_once_and_reports_as_a_local_run(
        tmp_path):
    ablate, status, report = readme_commands(tmp_path)
    assert ablate[:1] == ["ablate"] and "--launcher" in ablate and "--wait" in ablate
    done = sslbench(*ablate, "--threads", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    url = f"journal:///{tmp_path / 'runs.log'}"
    assert f"store {url}" in done.stderr
    job = array_id(done.stderr)
    assert "with 2 task(s)" in done.stderr
    assert "4 run now, 0 failed (4 cells)" in done.stdout
    runs = attempts(url)
    assert sorted(runs) == ["control/seed0", "control/seed1", "pixelwise/seed0",
                            "pixelwise/seed1"]
    assert all([r.state for r in tries] == ["COMPLETE"] for tries in runs.values())
    # Both tasks of the array worked, and their logs are where the command said.
    owners = Counter(tries[0].owner for tries in runs.values())
    assert len(owners) == 2, owners
    logs = sorted((tmp_path / "runs.log.jobs").glob(f"{job}_*_0_log.err"))
    assert len(logs) == 2
    assert all("task ends:" in log.read_text() for log in logs)
    shown = sslbench(*status, cwd=tmp_path)
    assert "mnist100/smoke: 4 cells asked for: 4 finished, 0 running, 0 left to run" \
        in shown.stdout, shown.stdout
    assert sslbench(*report, cwd=tmp_path).returncode == 0
    assert (tmp_path / "report" / "smoke" / "report.md").exists()

    local = f"sqlite:///{tmp_path / 'local.db'}"
    here = sslbench(*SMOKE, "--variants", "control", "pixelwise", "--seeds", "2",
                    "--storage", local, "--workers", "1")
    assert here.returncode == 0, here.stderr
    on_slurm = report_tables(url, tmp_path / "slurm-report")
    on_here = report_tables(local, tmp_path / "local-report")
    for name, table in on_slurm.items():
        pd.testing.assert_frame_equal(table, on_here[name], obj=name)


def _interrupt_mid_cell(tmp_path: Path, interrupt: Callable[[str], None]
                        ) -> tuple[str, str, Path]:
    """Submit the one long cell, wait for its first checkpoint, interrupt the task."""
    url = f"journal:///{tmp_path / 'runs.log'}"
    done = sslbench(*SMOKE, *LONG_CELL, "--storage", url, "--launcher", "slurm")
    assert done.returncode == 0, done.stderr
    job = array_id(done.stderr)
    checkpoints = tmp_path / "runs.log.checkpoints"
    wait_for(lambda: any(checkpoints.glob("*.pt")), 180, "the cell's first checkpoint")
    interrupt(job)
    return url, job, checkpoints


def _resumed_once(url: str) -> dict:
    """The cell's attempts: interrupted once, then finished once from its checkpoint."""
    tries = attempts(url)["control/seed0"]
    assert [(t.state, t.failure_kind) for t in tries] == [("FAIL", "interrupted"),
                                                          ("COMPLETE", None)]
    record = tries[-1].record
    assert record is not None
    segments = record["segments"]
    assert len(segments) == 2, segments
    assert segments[1]["from_epoch"] > 0  # resumed, not trained again from epoch 0
    assert record["config"]["train"]["epochs"] == 14
    return record


def test_scancel_mid_cell_then_the_same_command_resumes_from_the_checkpoint(tmp_path):
    url, job, checkpoints = _interrupt_mid_cell(tmp_path, lambda job: slurm("scancel", job))
    wait_for(lambda: not in_queue(job), 120, "the cancelled task to end")
    tries = attempts(url)["control/seed0"]
    assert [(t.state, t.failure_kind) for t in tries] == [("FAIL", "interrupted")]
    assert any(checkpoints.glob("*.pt"))  # kept for the next task

    again = sslbench(*SMOKE, *LONG_CELL, "--storage", url, "--launcher", "slurm", "--wait")
    assert again.returncode == 0, again.stderr
    assert "1 run now, 0 failed (1 cells)" in again.stdout
    _resumed_once(url)
    second = array_id(again.stderr)
    log = (tmp_path / "runs.log.jobs" / f"{second}_0_log.err").read_text()
    assert "resuming from its checkpoint" in log
    assert not any(checkpoints.glob("*.pt"))  # spent once the record is stored


def test_scontrol_requeue_mid_cell_finishes_the_cell_once(tmp_path):
    url, job, _ = _interrupt_mid_cell(tmp_path, lambda job: slurm("scontrol", "requeue", job))
    wait_for(lambda: [t.state for t in attempts(url)["control/seed0"]][-1] == "COMPLETE",
             240, "the requeued task to finish the cell")
    _resumed_once(url)
    log = (tmp_path / "runs.log.jobs" / f"{job}_0_log.err").read_text()
    assert log.count("task on ") == 2  # the same task id ran twice: before and after requeue
    assert "resuming from its checkpoint" in log


def test_preemption_signal_checkpoints_and_requeues_the_task(tmp_path):
    # Slurm's warning before a preemption or the time limit: submitit's USR2 (--signal).
    url, job, _ = _interrupt_mid_cell(
        tmp_path, lambda job: slurm("scancel", "--signal=USR2", job))
    wait_for(lambda: [t.state for t in attempts(url)["control/seed0"]][-1] == "COMPLETE",
             240, "the requeued task to finish the cell")
    _resumed_once(url)
    log = (tmp_path / "runs.log.jobs" / f"{job}_0_log.err").read_text()
    assert f"preempted: requeued as job {job}" in log


def test_refusals_are_one_line(tmp_path):
    sqlite = sslbench(*SMOKE, "--storage", f"sqlite:///{tmp_path / 'runs.db'}",
                      "--launcher", "slurm")
    assert sqlite.returncode == 2
    assert sqlite.stderr.strip().splitlines() == [
        f"error: --launcher slurm: a SQLite file (sqlite:///{tmp_path / 'runs.db'}) cannot be "
        f"shared by the jobs of a cluster (its locks do not hold across machines); use a "
        f"PostgreSQL URL (postgresql://user@host/db) or a journal file on a filesystem every "
        f"node mounts (journal:////shared/path/runs.log)"]
    assert not (tmp_path / "runs.db").exists()

    # Slurm not reachable: no sbatch on PATH, and a controller that does not answer.
    no_sbatch = sslbench(*SMOKE, "--storage", f"journal:///{tmp_path / 'a.log'}",
                         "--launcher", "slurm", PATH=str(Path(sys.executable).parent))
    assert no_sbatch.returncode == 2
    assert no_sbatch.stderr.strip().splitlines() == [
        "error: --launcher slurm: sbatch is not on PATH; run on a Slurm login node, or use "
        "--launcher local on this machine"]
    dead = tmp_path / "dead.conf"
    dead.write_text(re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=9", Path(SLURM_CONF).read_text()))
    unreachable = sslbench(*SMOKE, "--storage", f"journal:///{tmp_path / 'b.log'}",
                           "--launcher", "slurm", SLURM_CONF=str(dead), timeout_s=300)
    assert unreachable.returncode == 2
    lines = unreachable.stderr.strip().splitlines()
    assert lines == ["error: --launcher slurm: the Slurm controller does not answer (scontrol "
                     "ping: Slurmctld(primary) at " + os.uname().nodename.split(".")[0]
                     + " is DOWN); check SLURM_CONF and `sinfo`, or use --launcher local"]
    assert not (tmp_path / "b.log").exists()  # refused before the store was created
