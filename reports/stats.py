"""Statistics as pure functions on arrays of per-seed scores.

Shapes: `values` is (n_seeds,); paired functions take two (n_seeds,) arrays whose entries
are matched by seed (same labeled subset, same init stream). A point estimate always
travels with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample std (ddof=1); nan for n < 2
    ci_low: float  # 95% percentile-bootstrap CI of the mean
    ci_high: float
    median: float
    min: float
    max: float


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                      n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, seeded so a report is reproducible.

    n < 2 gives (nan, nan): one value says nothing about spread. With few seeds the
    percentile interval is narrower than it should be; the paired t interval is the
    honest one for differences.
    """
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return (math.nan, math.nan)
    if np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    result = stats.bootstrap((data,), np.mean, confidence_level=confidence,
                             n_resamples=n_resamples, method="percentile",
                             rng=np.random.default_rng(seed))
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def summarize(values: Sequence[float] | np.ndarray) -> Summary:
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        nan = math.nan
        return Summary(0, nan, nan, nan, nan, nan, nan, nan)
    low, high = bootstrap_mean_ci(data)
    return Summary(n=int(data.size), mean=float(data.mean()),
                   std=float(data.std(ddof=1)) if data.size > 1 else math.nan,
                   ci_low=low, ci_high=high, median=float(np.median(data)),
                   min=float(data.min()), max=float(data.max()))


@dataclass(frozen=True)
class PairedComparison:
    n: int  # seeds present in both
    mean_diff: float  # variant - control
    ci_low: float  # 95% t interval of the mean difference
    ci_high: float
    t_p: float  # paired t-test, two-sided
    wilcoxon_p: float  # Wilcoxon signed-rank, two-sided (exact for small n)
    d_z: float  # Cohen's d_z = mean(d) / sd(d)


def paired_comparison(control: Sequence[float], variant: Sequence[float],
                      confidence: float = 0.95) -> PairedComparison:
    """Compare matched per-seed scores. Undefined quantities are nan, never guessed.

    With n < 2, or differences without spread, the t interval, t-test and d_z are nan.
    """
    a = np.asarray(control, dtype=float)
    b = np.asarray(variant, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must match by seed: shapes {a.shape} and {b.shape}")
    d = b - a
    n = int(d.size)
    nan = math.nan
    if n == 0:
        return PairedComparison(0, nan, nan, nan, nan, nan, nan)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else nan
    if n < 2 or sd == 0:
        ci_low = ci_high = t_p = d_z = nan
    else:
        half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
        ci_low, ci_high = mean - half, mean + half
        t_p = float(stats.ttest_rel(b, a).pvalue)
        d_z = mean / sd
    # All-zero differences: no evidence of any difference (scipy would warn and give nan).
    wilcoxon_p = (1.0 if np.all(d == 0)
                  else float(stats.wilcoxon(b, a, zero_method="wilcox").pvalue))
    return PairedComparison(n, mean, ci_low, ci_high, t_p, wilcoxon_p, d_z)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values; nan entries stay nan and are not counted."""
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(p.shape, math.nan)
    m = valid.size
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def verdict(mean_diff: float, p_adjusted: float, n: int, alpha: float = ALPHA) -> str:
    """Plain words: better / worse than control, or no detectable difference."""
    if math.isnan(p_adjusted):
        return f"undetermined (n={n}: too few seeds or no spread)"
    if p_adjusted < alpha:
        return f"{'better' if mean_diff > 0 else 'worse'} (p_holm={p_adjusted:.3g}, n={n})"
    return f"no detectable difference at {alpha} (n={n})"
