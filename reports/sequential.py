"""Seeds in rounds until each comparison is decided: a valid stopping rule.

`sslbench ablate --until-decided` looks at the grid after every round of seeds. Looking
after every round and stopping when a test passes would inflate false positives (five looks
at alpha = 0.05 give about 14% false "better" or "worse" under no effect). The rule here
keeps the family's error rates at alpha whatever the number of looks:

- **Looks.** After round r, at n_r = min(r K, N) seeds (K: --round, N: --max-seeds).
- **Alpha spending.** Lan and DeMets' O'Brien-Fleming-type function
  alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), at the information fraction t = n_r / N.
  Look r spends Delta_r = alpha(t_r) - alpha(t_{r-1}); the increments sum to alpha. Early
  looks, on few seeds, spend almost nothing, so a decision there needs an overwhelming effect.
- **Per comparison.** The family's m comparisons share each increment (Bonferroni): at look
  r a comparison is decided
    better / worse  when its paired t-test (seeds where neither run collapsed) or its exact
                    McNemar test of collapse rates has p < Delta_r / (2 m); the sign says which;
    equivalent      when its TOST at +-delta has p < Delta_r / m;
  and stays open otherwise. Open comparisons get the next round; decided ones get no more
  seeds, and a baseline grows while any of its comparisons is open.

Why this one: every look's test is exact for its seeds (t, TOST, binomial), and the union
bound over looks and comparisons holds for any dependence between them, so
P(any false better/worse) <= sum of the levels = alpha, and likewise for false equivalence.

What it guarantees, exactly (tests/test_sequential.py simulates each case):
- **A variant exchangeable with its control** (it changes nothing: the paired differences
  are symmetric about 0, whatever their shape): false better/worse stay under alpha. The
  paired t-test is exact for normal differences and conservative for the symmetric ones
  simulated (heavy tails, t with 3 df; a rare large loss or gain of either sign), where the
  rule's false verdicts are a fraction of alpha.
- **A variant with the same mean but a skewed spread of differences** (a small gain on most
  seeds and a rare large loss, or the reverse) is not covered: the t-test's level is then
  only approximate, and with tens of seeds it can be far off. With differences of +0.5 on
  95% of seeds and -9.5 on 5% (mean 0), 3 comparisons and 12 seeds in rounds of 3, the rule
  calls "better" in about half of the simulated families (a lognormal skew: "worse" in about
  a quarter). No test of a mean can hold its level for every shape at a fixed number of
  seeds (Bahadur and Savage, 1956): a rare loss that the seeds have not met yet is invisible
  to any of them. A minimum number of seeds before a decision does not help here (fewer
  early "equivalent" stops leave more families to a false "better"), and an exact sign-flip
  test answers the symmetric question, not this one. The report therefore shows, beside
  each verdict, the seeds won (and, in paired.csv, the probability of improvement): a
  "better" with a few seeds lost by much is the pattern to distrust, and more seeds, not
  another test, settle it.
A group-sequential design with exact joint boundaries (Pocock, O'Brien-Fleming) would spend
less conservatively, but needs the joint law of the looks' t statistics under an unknown
variance; confidence sequences need a bound on the differences' spread. This rule needs
neither, and tests/test_sequential.py checks its error rate by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from sslbench.reports.stats import ALPHA, POWER, paired_rate_p, paired_t_power

DECIDED = ("better", "worse", "equivalent")

RULE = ("O'Brien-Fleming-type alpha spending (Lan-DeMets) over the rounds, Bonferroni over "
        "looks and comparisons: at look r a comparison is better/worse when its paired "
        "t-test or collapse-rate McNemar test has p < Delta_r/(2m), equivalent when its "
        "TOST at +-delta has p < Delta_r/m")
# What the rule guarantees, as the report states it (the module's docstring has the detail).
GUARANTEE = ("False better/worse stay under the family's alpha when a variant is exchangeable "
             "with its control (no effect on any seed), whatever the shape of the paired "
             "differences; with equal means but skewed differences (a rare large loss) the "
             "t-test's level is only approximate and can be far off at tens of seeds "
             "(simulated in tests/test_sequential.py): distrust a verdict whose seeds "
             "include a few large losses or gains against the rest.")


@dataclass(frozen=True)
class Look:
    round: int  # from 1
    seeds: int  # n_r: seeds 0..n_r-1 are in every open comparison
    spent: float  # Delta_r: the alpha this look may spend over the family


def obrien_fleming_spent(alpha: float, fraction: float) -> float:
    """Alpha spent by information fraction t in (0, 1]: 2 - 2 Phi(z_{1-alpha/2} / sqrt t)."""
    z = stats.norm.ppf(1 - alpha / 2)
    return float(2 - 2 * stats.norm.cdf(z / math.sqrt(fraction)))


def looks(max_seeds: int, round_size: int, alpha: float = ALPHA) -> list[Look]:
    """The looks of a budget of `max_seeds` seeds added `round_size` at a time."""
    if round_size < 2 or max_seeds < round_size:
        raise ValueError(f"--round must be >= 2 and --max-seeds >= --round, got round "
                         f"{round_size}, max seeds {max_seeds}")
    sizes = list(range(round_size, max_seeds + 1, round_size))
    if sizes[-1] != max_seeds:
        sizes.append(max_seeds)
    spent_before, result = 0.0, []
    for index, seeds in enumerate(sizes, start=1):
        spent = obrien_fleming_spent(alpha, seeds / max_seeds)
        result.append(Look(index, seeds, spent - spent_before))
        spent_before = spent
    return result


def paired_decisions(diffs: np.ndarray, level: float, delta: float) -> np.ndarray:
    """better | worse | equivalent | open per row of paired differences (rows, n) in points:
    the t-test two-sided at level / 2, then TOST at +-delta at `level` (both exact t tests;
    the same p-values as scipy's ttest_rel and statsmodels' ttost_paired). Vectorized, so
    the simulation runs the very rule the grid runs."""
    d = np.atleast_2d(np.asarray(diffs, dtype=float))
    words = np.full(d.shape[0], "open", dtype=object)
    n = d.shape[1]
    if n < 2:
        return words
    mean, sd = d.mean(axis=1), d.std(axis=1, ddof=1)
    spread = sd > 0
    se = np.where(spread, sd, 1.0) / math.sqrt(n)
    t = mean / se
    p_two = 2 * stats.t.sf(np.abs(t), n - 1)
    significant = spread & (p_two < level / 2)
    words[significant & (mean > 0)] = "better"
    words[significant & (mean < 0)] = "worse"
    p_tost = np.maximum(stats.t.sf((mean + delta) / se, n - 1),
                        stats.t.cdf((mean - delta) / se, n - 1))
    p_tost = np.where(spread, p_tost, np.where(np.abs(mean) < delta, 0.0, 1.0))
    words[~significant & (p_tost < level)] = "equivalent"
    return words


def decide_look(baseline: np.ndarray, variant: np.ndarray, baseline_collapsed: np.ndarray,
                variant_collapsed: np.ndarray, spent: float, family_size: int,
                delta: float) -> str:
    """better | worse | equivalent | open, for one comparison at one look.

    Arrays are per seed (the look's seeds where both runs finished), accuracies in points;
    the paired tests use the seeds where neither run collapsed, the collapse test all."""
    level = spent / max(1, family_size)
    ok = ~(baseline_collapsed | variant_collapsed)
    word = str(paired_decisions((variant[ok] - baseline[ok])[None, :], level, delta)[0])
    if word in ("better", "worse"):
        return word
    if paired_rate_p(baseline_collapsed.tolist(), variant_collapsed.tolist()) < level / 2:
        more = int(variant_collapsed.sum()) > int(baseline_collapsed.sum())
        return "worse" if more else "better"
    return word


def stated_power(sd: float, delta: float, max_seeds: int, round_size: int,
                 family_size: int = 1, alpha: float = ALPHA) -> float:
    """A lower bound on the rule's power to call a true effect of `delta` better: the power
    of its last look alone, less the alpha the rule may lose to a false "equivalent" at an
    earlier look (at a true effect of exactly delta, equivalence is false but possible)."""
    return max(0.0, final_look_power(sd, delta, max_seeds, round_size, family_size, alpha)
               - alpha)


def final_look_power(sd: float, delta: float, max_seeds: int, round_size: int,
                     family_size: int = 1, alpha: float = ALPHA) -> float:
    """A lower bound on the rule's power to call a true effect of `delta` better: the power
    of its last look alone (two-sided paired t at that look's level, the exact noncentral t
    of reports.stats.paired_t_power)."""
    last = looks(max_seeds, round_size, alpha)[-1]
    if not (math.isfinite(sd) and sd > 0):
        return math.nan
    return paired_t_power(delta / sd, max_seeds, last.spent / max(1, family_size) / 2)


def seeds_for_power(sd: float, delta: float, round_size: int, family_size: int = 1,
                    alpha: float = ALPHA, power: float = POWER,
                    limit: int = 2000) -> int | None:
    """The smallest --max-seeds (a multiple of the round) whose stated power (the lower
    bound of `stated_power`) reaches `power`; None above `limit`."""
    if not (math.isfinite(sd) and sd > 0 and delta > 0):
        return None
    for budget in range(round_size, limit + 1, round_size):
        if stated_power(sd, delta, budget, round_size, family_size, alpha) >= power:
            return budget
    return None


Draw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


def simulate(effect: float, sd: float, max_seeds: int, round_size: int, family_size: int,
             delta: float, trials: int, seed: int = 0,
             alpha: float = ALPHA, draw: Draw | None = None) -> dict[str, float]:
    """Run the rule on `trials` simulated families of `family_size` comparisons whose paired
    differences are normal(effect, sd), or `draw(rng, shape)` in points (another shape of
    differences: heavy tails, skew, a rare large loss); the fraction of families with any
    comparison decided better / worse / equivalent, and the mean seeds a comparison used."""
    rng = np.random.default_rng(seed)
    shape = (trials * family_size, max_seeds)
    diffs = rng.normal(effect, sd, size=shape) if draw is None else draw(rng, shape)
    words = np.full(len(diffs), "open", dtype=object)
    used = np.full(len(diffs), max_seeds)
    for look in looks(max_seeds, round_size, alpha):
        still = words == "open"
        now = paired_decisions(diffs[still, :look.seeds], look.spent / family_size, delta)
        rows = np.flatnonzero(still)
        words[rows] = now
        used[rows[now != "open"]] = look.seeds
    per_family = words.reshape(trials, family_size)
    result = {word: float((per_family == word).any(axis=1).mean()) for word in DECIDED}
    result["mean_seeds"] = float(used.mean())
    return result
