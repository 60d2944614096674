"""Committed results name no machine's paths: a store inside the repository is shown by its
path from the repository root (reports.build.shown_store_url)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from sslbench.reports.build import shown_store_url

ROOT = Path(__file__).resolve().parent.parent
MACHINE_PATH = re.compile(r"/work/|/tmp/|/root/|/home/")


def test_a_store_inside_the_work_tree_is_shown_from_its_root(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    out = repo / "reports" / "results" / "grid-quick"
    out.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    absolute = f"journal:///{out / 'runs.log'}"  # journal:////abs/... as a user types it
    assert shown_store_url(absolute, out) == (
        "`journal:///reports/results/grid-quick/runs.log` (from the repository root)")
    monkeypatch.chdir(repo)  # a relative URL is relative to where the command runs
    assert shown_store_url("sqlite:///reports/results/grid-quick/store.db", out) == (
        "`sqlite:///reports/results/grid-quick/store.db` (from the repository root)")


def test_a_store_elsewhere_or_on_a_server_is_shown_as_given(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    elsewhere = f"sqlite:///{tmp_path.parent / 'other.db'}"
    assert shown_store_url(elsewhere, out) == f"`{elsewhere}`"
    server = "postgresql://bench@db.example/sslbench"
    assert shown_store_url(server, out) == f"`{server}`"
    # Outside any work tree, a store in the report's own folder is shown from that folder.
    assert shown_store_url(f"sqlite:///{out / 'store.db'}", out) == (
        "`sqlite:///store.db` (from the report's folder)")


def test_no_committed_report_names_a_machine_path():
    reports = sorted((ROOT / "reports" / "results").glob("**/report.md"))
    assert reports, "no committed reports found"
    offending = [f"{path.relative_to(ROOT)}: {line.strip()}" for path in reports
                 for line in path.read_text().splitlines() if MACHINE_PATH.search(line)]
    assert offending == []


def test_a_failure_reason_shows_a_checkpoint_by_its_file_name():
    from sslbench.bench.store.runstore import CellRun
    from sslbench.reports.tables import failures_frame

    run = CellRun(trial_id=1, number=0, cell="control/seed0", variant="control", seed=0,
                  state="FAIL", failure="interrupted: stopped at epoch 2, step 267; checkpoint "
                  "saved to /work/longstore/paper.checkpoints/9209f360b4c0ccd5.pt\ndetail",
                  failure_kind="interrupted", record=None, config=None, owner=None,
                  heartbeat=None)
    assert failures_frame([run])["reason"].tolist() == [
        "interrupted: stopped at epoch 2, step 267; checkpoint saved to .../9209f360b4c0ccd5.pt"]
