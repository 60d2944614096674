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
def gathered(script):
    return script.gather(ROOT)


@pytest.fixture(scope="module")
def rows(gathered):
    return gathered[0]


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
        for name, ci in (("control", f.control_rate_ci), (f.variant, f.variant_rate_ci)):
            assert ci == pytest.approx((summary.loc[name, "rate_ci_low"],
                                        summary.loc[name, "rate_ci_high"]))
        assert f.collapse_p == pytest.approx(float(paired["collapse_p"]))


def test_collapse_rates_carry_their_interval_and_paired_test(script, rows):
    """By hand: 0 of 11 runs collapsed has the Clopper-Pearson interval 0 to
    1 - 0.025^(1/11) = 28.5%; 2 of 11 against 0 of 11, with the two collapses on seeds where
    the control did not collapse, has the exact McNemar p of 2 discordant pairs both one
    way: 2 * 0.5^2 = 0.5."""
    from sslbench.reports.stats import clopper_pearson, paired_rate_p

    control_ci = tuple(100 * x for x in clopper_pearson(0, 11))
    variant_ci = tuple(100 * x for x in clopper_pearson(2, 11))
    assert control_ci == pytest.approx((0.0, 100 * (1 - 0.025 ** (1 / 11))))
    p = paired_rate_p([False] * 11, [True, True] + [False] * 9)
    assert p == pytest.approx(2 * 0.5 ** 2)
    f = next(r for r in rows if r.variant == "batch_scaling" and r.profile == "quick")
    g = script.Finding(**{**f.__dict__, "control_runs": 11, "variant_runs": 11,
                          "control_collapses": 0, "variant_collapses": 2,
                          "control_rate_ci": control_ci, "variant_rate_ci": variant_ci,
                          "collapse_p": p})
    assert script._collapses(g) == "0/11 (0-28%) / 2/11 (2-52%); McNemar p 0.5"
    assert "McNemar p" in script.render(rows)


def test_the_readme_holds_what_the_script_renders(script, gathered):
    readme = (ROOT / "README.md").read_text()
    block = re.search(re.escape(script.START) + r"\n(.*)" + re.escape(script.END), readme,
                      re.S)
    assert block is not None
    assert block.group(1) == script.render(*gathered)
    assert (SCRIPT.parent / "findings.md").read_text() == \
        "# Findings\n\n" + script.render(*gathered)


def test_the_compute_spent_is_the_reports_runs_time(script, gathered):
    """Core-hours from each committed report's runs.csv, summed here by hand: every run so
    far trained alone (stack 1) on one thread, so its core-seconds are its total_seconds."""
    _, spent = gathered
    for c in spent:
        runs = pd.read_csv(ROOT / "reports" / "results" / f"mnist100-{c.profile}" / "runs.csv")
        assert set(runs["stack"]) == {1} and set(runs["device"]) == {"cpu (x86_64, 1 threads)"}
        assert c.runs == len(runs)
        assert c.core_hours == pytest.approx(runs["total_seconds"].sum() / 3600)
        assert c.gpu_hours == 0


def test_compute_counts_threads_and_shares_a_stack(script):
    """By hand: 2 h on 4 threads is 8 core-hours; three runs of one stack of 3 h share it
    (3 h in all); a GPU run's 0.5 h is GPU time."""
    frame = pd.DataFrame({
        "total_seconds": [7200.0, 10800.0, 10800.0, 10800.0, 1800.0],
        "stack": [1, 3, 3, 3, 1],
        "device": ["cpu (x86_64, 4 threads)"] + ["cpu (x86_64, 1 threads)"] * 3
                  + ["cuda (NVIDIA H200)"]})
    c = script.compute_spent(frame, "p")
    assert (c.runs, c.core_hours, c.gpu_hours) == (5, pytest.approx(11.0), pytest.approx(0.5))
