"""A results folder's README quotes no number its report does not hold.

Every decimal number in the README of a folder with a report (report.md and its CSVs, rebuilt
from the folder's store) must appear in report.md, or equal a value of one of its CSVs at
the README's precision. A README written by hand therefore cannot go stale when its store
grows and the report is rebuilt: the test fails and names the number. Facts measured outside
the store are listed here, each with where it comes from."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

RESULTS = Path(__file__).resolve().parent.parent / "reports" / "results"
# A decimal number not part of a version (2.14.1), a hash or a longer number.
NUMBER = re.compile(r"(?<![\w.])[+-]?\d+\.\d+(?![\w.]*\d)")
MEASURED_ELSEWHERE = {
    # the denormal-flush fix: float32's smallest normal, and the speed-up measured then
    "mnist100-paper": {"1.2", "2.1"},
}


def report_values(folder: Path) -> tuple[str, list[float]]:
    values: list[float] = []
    for csv in sorted(folder.glob("*.csv")):
        frame = pd.read_csv(csv)
        for column in frame.columns:
            if pd.api.types.is_numeric_dtype(frame[column]):
                values += [float(v) for v in frame[column].dropna()]
    return (folder / "report.md").read_text(), values


def held(number: str, text: str, values: list[float]) -> bool:
    bare = number.lstrip("+")
    if re.search(r"(?<![\d.])" + re.escape(bare) + r"(?!\d)", text):
        return True
    digits = len(bare.split(".")[1])
    return any(round(v, digits) == float(bare) for v in values)


def test_the_checker_catches_a_stale_number(tmp_path):
    (tmp_path / "report.md").write_text("difference -0.43 points\n")
    pd.DataFrame({"mean": [84.504, 83.6949]}).to_csv(tmp_path / "summary.csv", index=False)
    text, values = report_values(tmp_path)
    assert held("-0.43", text, values) and held("84.50", text, values)
    assert held("83.69", text, values) and not held("83.70", text, values)
    assert not held("-0.81", text, values)  # a number from an earlier build
    assert NUMBER.findall("torch 2.14.1, commit 8592f4b, 97.8 and -1.06 points, 1.2e-38") == [
        "97.8", "-1.06", "1.2"]


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in RESULTS.glob("*/report.md")))
def test_a_results_readme_quotes_only_its_reports_numbers(folder):
    readme = RESULTS / folder / "README.md"
    if not readme.exists():
        pytest.skip(f"{folder} has no README")
    text, values = report_values(RESULTS / folder)
    allowed = MEASURED_ELSEWHERE.get(folder, set())
    stale = [n for n in NUMBER.findall(readme.read_text())
             if n not in allowed and not held(n, text, values)]
    assert stale == [], f"{folder}/README.md quotes numbers its report does not hold: {stale}"


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in RESULTS.glob("*/report.md")))
def test_a_committed_report_opens_with_its_summary_and_keeps_tables_narrow(folder):
    """Rebuilt from its store, a committed report reads in a minute: the summary under the
    title (with the forest plot where there are comparisons), no table over 8 columns."""
    text = (RESULTS / folder / "report.md").read_text()
    assert text.split("\n")[2] == "## Summary", text[:200]
    widths = [line.count("|") - 1 for line in text.splitlines() if line.startswith("|")]
    assert max(widths) <= 8, f"{folder}: a table of {max(widths)} columns"
    if "vs " in text.split("## Protocol")[0]:
        assert "![Paired differences" in text.split("## Protocol")[0]
