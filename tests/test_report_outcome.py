"""build_report: report.md's path and its next-step line, without reading the file back;
gather_report writes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sslbench.bench.store.runstore import RunStore
from sslbench.reports.build import build_report, gather_report

ROOT = Path(__file__).resolve().parent.parent
QUICK_STORE = ROOT / "tests" / "fixtures" / "mnist100-quick-pilot.db"


@pytest.fixture
def quick_store(tmp_path: Path) -> str:
    copy = tmp_path / "store.db"
    shutil.copy(QUICK_STORE, copy)  # a report only reads, but never risk the committed one
    return f"sqlite:///{copy}"


def test_the_outcome_holds_the_next_step_line_of_report_md(quick_store, tmp_path):
    out = tmp_path / "report"
    outcome = build_report(RunStore(quick_store, create=False), "mnist100", "quick", out)
    assert outcome.path == out / "report.md"
    lines = [line for line in outcome.path.read_text().splitlines()
             if line.startswith("Next step:")]
    assert outcome.next_step is not None and lines == [outcome.next_step]


def test_gathering_writes_nothing(quick_store, tmp_path):
    out = tmp_path / "report"
    data = gather_report(RunStore(quick_store, create=False), "mnist100", None)
    assert not out.exists()
    assert data.profile == "quick" and data.order[0] == "control"
    assert data.next_step is not None and data.next_step.startswith("Next step:")
