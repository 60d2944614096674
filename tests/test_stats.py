import math

import numpy as np
import pytest

from reports.stats import bootstrap_mean_ci, holm, paired_comparison, summarize, verdict


def test_paired_comparison_hand_computed():
    control = [90.0, 92.0, 94.0]
    variant = [91.0, 94.0, 97.0]  # differences 1, 2, 3: mean 2, sd 1
    c = paired_comparison(control, variant)
    assert c.n == 3 and c.mean_diff == pytest.approx(2.0)
    assert c.d_z == pytest.approx(2.0)
    # t = 2 / (1 / sqrt 3) = 3.4641; two-sided p with 2 df = 0.074180
    assert c.t_p == pytest.approx(0.074180, abs=1e-5)
    # 95% CI: 2 +- 4.302653 / sqrt 3 = [-0.484138, 4.484138]
    assert (c.ci_low, c.ci_high) == pytest.approx((-0.484138, 4.484138), abs=1e-5)
    # Wilcoxon exact, all 3 positive: p = 2 / 2^3 = 0.25
    assert c.wilcoxon_p == pytest.approx(0.25)


def test_paired_comparison_undefined_cases_are_nan():
    one = paired_comparison([90.0], [91.0])
    assert one.n == 1 and math.isnan(one.t_p) and math.isnan(one.ci_low)
    flat = paired_comparison([90.0, 91.0], [91.0, 92.0])  # no spread in the differences
    assert math.isnan(flat.t_p) and math.isnan(flat.d_z) and flat.mean_diff == 1.0
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0], [1.0])


def test_holm_hand_computed():
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.02, float("nan"), 0.5])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.5)


def test_summary_and_bootstrap():
    s = summarize([97.0, 98.0, 99.0, 96.0, 100.0])
    assert (s.n, s.mean, s.median, s.min, s.max) == (5, 98.0, 98.0, 96.0, 100.0)
    assert s.std == pytest.approx(np.std([97, 98, 99, 96, 100], ddof=1))
    assert 96.0 <= s.ci_low < 98.0 < s.ci_high <= 100.0
    assert bootstrap_mean_ci([1.0, 2.0, 3.0]) == bootstrap_mean_ci([1.0, 2.0, 3.0])  # seeded
    assert all(math.isnan(v) for v in bootstrap_mean_ci([5.0]))


def test_verdicts():
    assert verdict(1.5, 0.01, 5).startswith("better")
    assert verdict(-1.5, 0.01, 5).startswith("worse")
    assert verdict(0.3, 0.4, 5) == "no detectable difference at 0.05 (n=5)"
    assert verdict(0.3, float("nan"), 1).startswith("undetermined")
