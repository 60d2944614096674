"""The README's Findings are built from the committed stores, never typed: every number in
them equals the committed report's, and the README holds exactly what the script renders."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "reports" / "results" / "findings" / "findings.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("findings", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["findings"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(script):
    return script.findings(ROOT)


def test_every_claim_has_a_finding_at_the_quick_profile(script, rows):
    assert {f.variant for f in rows if f.profile == "quick"} == {v for v, _, _ in script.CLAIMS}


def test_the_numbers_are_the_reports(script, rows):
    for f in rows:
        folder = ROOT / "reports" / "results" / f.folder
        report = (folder / "report.md").read_text()
        assert f"δ = {script.SESOI:g} points" in report, f"{f.folder} was built at another δ"
        paired = pd.read_csv(folder / "paired.csv").set_index("variant").loc[f.variant]
        assert int(paired["n"]) == f.n
        for column in ("mean_diff", "ci_low", "ci_high"):
            ours, theirs = getattr(f, column), float(paired[column])
            assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs)
        assert paired["verdict"] == f.verdict
        summary = pd.read_csv(folder / "summary.csv").set_index("variant")
        assert (int(summary.loc["control", "n"]), int(summary.loc[f.variant, "n"])) == \
            (f.control_runs, f.variant_runs)
        assert (int(summary.loc["control", "collapses"]),
                int(summary.loc[f.variant, "collapses"])) == \
            (f.control_collapses, f.variant_collapses)


def test_the_readme_holds_what_the_script_renders(script, rows):
    readme = (ROOT / "README.md").read_text()
    block = re.search(re.escape(script.START) + r"\n(.*)" + re.escape(script.END), readme,
                      re.S)
    assert block is not None
    assert block.group(1) == script.render(rows)
    assert (SCRIPT.parent / "findings.md").read_text() == "# Findings\n\n" + script.render(rows)
