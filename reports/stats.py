"""Statistics as pure functions on arrays of per-seed scores.

Shapes: `values` is (n_seeds,); paired functions take two (n_seeds,) arrays whose entries
are matched by seed (same labeled subset, same init stream). A point estimate always
travels with its interval.
"""

from __future__ import annotations

import functools
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


# ---------------------------------------------------------------------------------------
# Intervals, rates, power and verdicts that say what the seeds can show.
# Power, TOST and exact binomial intervals come from statsmodels; the tests check them by
# hand on small arrays.

POWER = 0.8
DEFAULT_SESOI = 1.0  # points of accuracy: the smallest effect of interest, `--sesoi`


def t_interval(values: Sequence[float] | np.ndarray,
               confidence: float = 0.95) -> tuple[float, float]:
    """The t interval of the mean; (nan, nan) for n < 2, the point itself without spread."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return (math.nan, math.nan)
    sd = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=data.size - 1)) * sd / math.sqrt(data.size)
    return (float(data.mean()) - half, float(data.mean()) + half)


def clopper_pearson(successes: int, trials: int,
                    confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a rate, as fractions; (nan, nan) for 0 trials."""
    from statsmodels.stats.proportion import proportion_confint

    if trials == 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="beta")
    return (float(low), float(high))


def tail_median(curve: Sequence[float], fraction: float = 0.1, minimum: int = 3) -> float:
    """The median of the last `fraction` of a per-epoch curve (at least `minimum` epochs,
    at most all of them): a per-run figure that is not one noisy epoch."""
    if not curve:
        return math.nan
    count = min(len(curve), max(minimum, math.ceil(fraction * len(curve))))
    return float(np.median(np.asarray(curve[-count:], dtype=float)))


# Gauss-Legendre nodes over the chi-square's quantiles (paired_t_power): 256 match scipy's
# adaptive quadrature to 1e-7 in power across n = 2 ... 10,000 and alpha down to 0.05 / 7.
POWER_NODES = 256


@functools.lru_cache(maxsize=64)
def _variance_nodes(df: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights and sqrt(V / df) at the Gauss-Legendre nodes of V's quantiles in (0, 1)."""
    x, w = np.polynomial.legendre.leggauss(POWER_NODES)
    quantiles = (x + 1) / 2
    return w / 2, np.sqrt(stats.chi2.ppf(quantiles, df) / df)


def paired_t_power(effect_size: float, n: int, alpha: float = ALPHA) -> float:
    """The probability that a two-sided paired t-test at `alpha` on n pairs rejects when the
    true mean difference is `effect_size` standard deviations: the noncentral t's two tails,
    computed as an integral over the chi-square of the sample variance.

    With T = (Z + nc) / sqrt(V / df), Z normal, V chi-square(df), nc = effect_size sqrt(n):
    P(|T| > c) = E_V[Phi(nc - c s) + Phi(-nc - c s)], s = sqrt(V / df), integrated over V's
    quantiles u in (0, 1), a bounded, smooth integrand. scipy's and statsmodels' noncentral
    t return nan at large noncentrality with few degrees of freedom, and statsmodels' root
    finder then settles on effects with as little as 65% power (n = 4 at alpha / 7); this
    stays exact there (tests/test_stats.py checks it against adaptive quadrature, against
    statsmodels where it is sound, and against a simulation)."""
    if n < 2:
        return math.nan
    weights, spread = _variance_nodes(n - 1)
    critical = float(stats.t.ppf(1 - alpha / 2, n - 1))
    shift = abs(effect_size) * math.sqrt(n)
    rejects = stats.norm.cdf(shift - critical * spread) + stats.norm.cdf(-shift - critical * spread)
    return min(1.0, max(0.0, float(np.sum(weights * rejects))))


def detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test at `alpha` detects with
    probability `power` from n pairs whose differences have standard deviation `sd`, solved
    on the exact power (paired_t_power); nan when n < 2 or sd is unknown."""
    from scipy import optimize

    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    high = 1.0  # in standard deviations; doubled until it has the power
    while paired_t_power(high, n, alpha) < power:
        high *= 2
        if high > 1e6:
            return math.nan
    size = optimize.brentq(lambda d: paired_t_power(d, n, alpha) - power, 0.0, high,
                           xtol=1e-9)
    return float(size) * sd


def seeds_needed(sd: float, effect: float, alpha: float = ALPHA, power: float = POWER,
                 max_seeds: int = 10_000) -> int | None:
    """The fewest pairs (at least 2) with which a two-sided paired t-test at `alpha` detects
    `effect` with `power`, by bisection over the exact power (paired_t_power, which grows
    with n); None when more than `max_seeds` are needed or the spread is unknown."""
    if not (math.isfinite(sd) and sd > 0 and effect > 0):
        return None
    size = effect / sd

    def enough(n: int) -> bool:
        return paired_t_power(size, n, alpha) >= power

    if enough(2):
        return 2
    low, high = 2, 4
    while not enough(high):
        if high >= max_seeds:
            return None
        low, high = high, min(2 * high, max_seeds)
    while high - low > 1:  # enough(high), not enough(low)
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def tost_paired(baseline: Sequence[float], variant: Sequence[float], delta: float) -> float:
    """Two one-sided tests of equivalence within +-delta points of the mean paired
    difference: the larger one-sided p (small: equivalent). nan for n < 2 or no spread."""
    from statsmodels.stats.weightstats import ttost_paired

    a = np.asarray(baseline, dtype=float)
    b = np.asarray(variant, dtype=float)
    d = b - a
    if d.size < 2:
        return math.nan
    if float(d.std(ddof=1)) == 0:
        return 0.0 if abs(float(d.mean())) < delta else 1.0
    p, _, _ = ttost_paired(b, a, -delta, delta)
    return float(p)


def probability_of_improvement(diffs: Sequence[float] | np.ndarray, n_resamples: int = 10_000,
                               seed: int = 0) -> tuple[float, float, float]:
    """P(variant beats its baseline on a seed), ties count half, with a seeded percentile
    bootstrap interval over seeds (95%). (nan, nan, nan) without seeds."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return (math.nan, math.nan, math.nan)
    scores = (d > 0) + 0.5 * (d == 0)
    rng = np.random.default_rng(seed)
    resampled = scores[rng.integers(0, d.size, size=(n_resamples, d.size))].mean(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return (float(scores.mean()), float(low), float(high))


def paired_rate_p(baseline_failed: Sequence[bool], variant_failed: Sequence[bool]) -> float:
    """Exact McNemar test of a paired difference in failure (collapse) rates: a binomial
    test on the seeds where exactly one of the two failed. 1.0 when none differ."""
    a = np.asarray(baseline_failed, dtype=bool)
    b = np.asarray(variant_failed, dtype=bool)
    only_variant, only_baseline = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    if only_variant + only_baseline == 0:
        return 1.0
    return float(stats.binomtest(only_variant, only_variant + only_baseline, 0.5).pvalue)


@dataclass(frozen=True)
class Decision:
    word: str  # better | worse | equivalent | inconclusive | undetermined
    text: str


def decision_word(mean_diff: float, p_adjusted: float, tost_adjusted: float, n: int,
                  alpha: float = ALPHA) -> str:
    """better | worse | equivalent | inconclusive | undetermined (see `decide`)."""
    if n < 2 or math.isnan(p_adjusted):
        return "undetermined"
    if p_adjusted < alpha:
        return "better" if mean_diff > 0 else "worse"
    if not math.isnan(tost_adjusted) and tost_adjusted < alpha:
        return "equivalent"
    return "inconclusive"


def decide(mean_diff: float, p_adjusted: float, tost_adjusted: float, n: int, sd: float,
           delta: float, family_size: int, alpha: float = ALPHA) -> Decision:
    """The verdict of one comparison, claiming no more than its seeds show.

    better / worse: the adjusted p of the paired t-test is under alpha. equivalent: the
    adjusted TOST p at +-delta is under alpha. Otherwise inconclusive, with the effect the
    seeds could have detected at 80% power (at alpha, and at the family's alpha / m that
    Holm's first step uses).
    """
    word = decision_word(mean_diff, p_adjusted, tost_adjusted, n, alpha)
    if word == "undetermined":
        return Decision(word, f"undetermined: n={n} seeds, too few or no spread")
    if word in ("better", "worse"):
        return Decision(word, f"{word} (p_holm={p_adjusted:.3g}, n={n})")
    if word == "equivalent":
        return Decision(word, f"equivalent within ±{delta:g} points "
                              f"(TOST p_holm={tost_adjusted:.3g}, n={n})")
    plain = detectable_effect(sd, n, alpha)
    adjusted = detectable_effect(sd, n, alpha / max(1, family_size))
    extra = f" ({adjusted:.1f} at alpha/{family_size})" if family_size > 1 else ""
    return Decision("inconclusive", f"inconclusive (n={n}): could have detected "
                                    f"{plain:.1f} points at 80% power{extra}")
