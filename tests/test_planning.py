"""Planning seeds before the compute: hand-checked arithmetic and the command on real stores."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from sslbench.reports.planning import (
    next_step_line,
    next_steps,
    pilot_hours,
    sd_interval,
    total_hours,
)
from sslbench.reports.stats import seeds_needed

QUICK_STORE = Path(__file__).resolve().parent / "fixtures" / "mnist100-quick-pilot.db"


def test_sd_interval_hand_computed():
    # n = 3, df = 2: chi2 quantiles 0.0506356 and 7.3777589
    assert stats.chi2.ppf([0.025, 0.975], 2) == pytest.approx([0.0506356, 7.3777589], rel=1e-6)
    low, high = sd_interval(2.0, 3)
    assert low == pytest.approx(2.0 * math.sqrt(2 / 7.3777589), rel=1e-6)
    assert high == pytest.approx(2.0 * math.sqrt(2 / 0.0506356), rel=1e-5)
    assert all(math.isnan(v) for v in sd_interval(2.0, 1))


def test_next_steps_arithmetic():
    paired = pd.DataFrame({"variant": ["a", "b"], "baseline": ["c", "c"], "n": [3, 3],
                           "sd_diff": [2.0, 0.5], "decision": ["inconclusive", "inconclusive"]})
    runs = pd.DataFrame({"variant": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
                         "total_seconds": [100.0] * 3 + [200.0] * 3 + [300.0] * 3})
    steps = next_steps(paired, runs, sesoi=1.0, workers=2).set_index("variant")
    # two comparisons: each at alpha / 2
    assert steps.loc["a", "seeds_needed"] == seeds_needed(2.0, 1.0, 0.025)
    assert steps.loc["b", "seeds_needed"] == seeds_needed(0.5, 1.0, 0.025)
    n_a, n_b = steps.loc["a", "seeds_needed"], steps.loc["b", "seeds_needed"]
    assert steps.loc["a", "hours_to_add"] == pytest.approx(
        ((n_a - 3) * 100 + (n_a - 3) * 300) / 2 / 3600)
    # the shared baseline is brought to the larger count once
    expected = ((n_a - 3) * 100 + (n_b - 3) * 200 + (max(n_a, n_b) - 3) * 300) / 2 / 3600
    assert total_hours(steps.reset_index(), runs, 2) == pytest.approx(expected)
    line = next_step_line(steps.reset_index(), runs, 1.0, 2)
    assert f"need {int(n_b)} to {int(n_a)} paired seeds" in line and f"{expected:.1f} h" in line


def test_pilot_hours_from_the_measured_speed():
    # 30 runs of 30 epochs on 60,000 images, 2 workers: 30 * (30 * (8.7 + 0.5) + 3) / 2 s
    assert pilot_hours(30, 30, 60_000, 2) == pytest.approx(30 * (30 * 9.2 + 3) / 2 / 3600)


def test_the_plan_command_on_a_pilot_store_and_without_one(tmp_path):
    shutil.copy(QUICK_STORE, tmp_path / "store.db")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    result = subprocess.run([sys.executable, "-m", "sslbench.bench.cli", "plan",
                             "--grid", "mnist100", "--storage", url, "--profile", "quick", "smoke",
                             "--workers", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "mnist100/quick: 24 pilot runs" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("ramp_slow vs control"))
    seeds = int(line.split("-> ")[1].split(" seeds")[0])
    hours = float(line.split("), ")[1].split(" h")[0])
    assert 2 < seeds < 10_000 and 0 < hours < 1_000
    # The --until-decided budget: a multiple of its round, at least the fixed-n count (its
    # looks spend alpha over rounds), and the smallest whose stated power reaches 80%.
    budget = int(line.split("--max-seeds ")[1].split()[0])
    assert budget % 3 == 0 and budget >= seeds
    sd = float(line.split("differences ")[1].split()[0])
    from sslbench.reports.sequential import stated_power

    assert stated_power(sd, 1.0, budget, 3, 6) >= 0.8 > stated_power(sd, 1.0, budget - 3, 3, 6)
    assert "mnist100/smoke: no pilot runs" in text and "--seeds 3" in text
    assert "Recommendation: profile quick" in text
