"""How many seeds, at what cost, would settle each comparison: pure functions on a grid's
paired table and its runs' measured times.

For a comparison whose paired differences have sample sd s over n seeds, the seeds needed
to detect the smallest effect of interest δ with 80% power by a two-sided paired t-test at
the family's level alpha / m (Bonferroni, which Holm's first step uses: conservative) come
from statsmodels' noncentral t (reports.stats.seeds_needed). The sd is uncertain itself: its
95% interval from the chi-square distribution, s sqrt((n-1) / chi2_{0.975, n-1}) to
s sqrt((n-1) / chi2_{0.025, n-1}), gives the range of seeds needed.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from sslbench.ablations.grid import Grid
from sslbench.bench.core.cost import CPU_CELL_OVERHEAD_S, modeled_run_seconds
from sslbench.reports.stats import ALPHA, POWER, seeds_needed

PILOT_SEEDS = 3  # seeds per variant of a pilot: the fewest that give an sd with an interval


def sd_interval(sd: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The chi-square interval of a normal standard deviation from n values."""
    if n < 2 or not math.isfinite(sd):
        return (math.nan, math.nan)
    df = n - 1
    return (sd * math.sqrt(df / stats.chi2.ppf(0.5 + confidence / 2, df)),
            sd * math.sqrt(df / stats.chi2.ppf(0.5 - confidence / 2, df)))


def next_steps(paired: pd.DataFrame, runs: pd.DataFrame, sesoi: float, workers: int,
               alpha: float = ALPHA, power: float = POWER) -> pd.DataFrame:
    """Per comparison of `paired` (reports.tables): its sd of paired differences with an
    interval, the seeds needed to detect `sesoi` points, the seeds to add, and the wall
    hours to add them on `workers` parallel workers from the runs' measured total seconds
    (the median run of the variant and of its baseline; the baseline's cost counts only
    for seeds it does not have yet)."""
    family = max(1, len(paired))
    level = alpha / family
    rows = []
    for row in paired.itertuples():
        low, high = sd_interval(row.sd_diff, row.n)
        needed = seeds_needed(row.sd_diff, sesoi, level, power)
        best = seeds_needed(low, sesoi, level, power) if math.isfinite(low) else None
        worst = seeds_needed(high, sesoi, level, power) if math.isfinite(high) else None
        seconds = {v: float(runs.loc[runs["variant"] == v, "total_seconds"].median())
                   for v in (row.variant, row.baseline)}
        have = {v: int((runs["variant"] == v).sum()) for v in (row.variant, row.baseline)}
        add = max(0, needed - row.n) if needed is not None else None
        hours = (sum(max(0, needed - have[v]) * seconds[v] for v in seconds) / workers / 3600
                 if needed is not None else math.nan)
        rows.append({"variant": row.variant, "baseline": row.baseline, "n": row.n,
                     "sd_diff": row.sd_diff, "sd_low": low, "sd_high": high,
                     "seeds_needed": needed, "seeds_needed_range": f"{best}-{worst}",
                     "seeds_to_add": add, "hours_to_add": hours,
                     "decision": row.decision})
    return pd.DataFrame(rows, columns=["variant", "baseline", "n", "sd_diff", "sd_low",
                                       "sd_high", "seeds_needed", "seeds_needed_range",
                                       "seeds_to_add", "hours_to_add", "decision"])


def _points(value: float) -> str:
    return f"{value:g} point" + ("" if value == 1 else "s")


def pilot_hours(cells: int, epochs: int, train_images: int, workers: int) -> float:
    """Wall hours of `cells` runs on `workers` CPU cores, from the measured speeds (the
    model of bench.cost, which the start line of `sslbench ablate` uses too)."""
    per_run = modeled_run_seconds(epochs, train_images, None) + CPU_CELL_OVERHEAD_S
    return cells * per_run / workers / 3600


def total_hours(steps: pd.DataFrame, runs: pd.DataFrame, workers: int) -> float:
    """Wall hours to bring every open comparison to its seeds needed: each variant to its
    count, each baseline to the largest count of its comparisons, run on `workers`."""
    open_ = steps[steps["decision"].isin(["inconclusive", "undetermined"])].dropna(
        subset=["seeds_needed"])
    target: dict[str, int] = {}
    for row in open_.itertuples():
        for variant in (row.variant, row.baseline):
            target[variant] = max(target.get(variant, 0), int(row.seeds_needed))
    seconds = 0.0
    for variant, count in target.items():
        part = runs[runs["variant"] == variant]
        seconds += max(0, count - len(part)) * float(part["total_seconds"].median())
    return seconds / workers / 3600


def next_step_line(steps: pd.DataFrame, runs: pd.DataFrame, sesoi: float, workers: int) -> str:
    """One plain line: what more seeds would settle the open comparisons, and their cost."""
    open_ = steps[steps["decision"].isin(["inconclusive", "undetermined"])]
    if open_.empty:
        return "Next step: every comparison of the question is decided."
    known = open_.dropna(subset=["seeds_needed"])
    if known.empty:
        return (f"Next step: {len(open_)} comparison(s) open, with too few seeds to estimate "
                f"their spread; run at least {PILOT_SEEDS} seeds of each variant first.")
    most = int(known["seeds_needed"].max())
    least = int(known["seeds_needed"].min())
    hours = total_hours(steps, runs, workers)
    return (f"Next step: {len(open_)} comparison(s) open; to detect {_points(sesoi)} with 80% "
            f"power at the family's alpha they need {least} to {most} paired seeds (they have "
            f"{int(known['n'].min())} to {int(known['n'].max())}): about {hours:.1f} h more on "
            f"{workers} worker(s) at this profile, on this store's measured run times. "
            f"`sslbench plan` gives each comparison's range.")


def _pilot_line(grid: Grid, profile: str, url: str, workers: int) -> str:
    """Where a profile has no runs yet: the pilot to run, and its modeled cost."""
    from sslbench.bench.core.overrides import build_config

    config = build_config(grid.variants[0].method, 0, profile,
                          variant_overrides=grid.variants[0].overrides)
    images = config.data.train_size or 60_000
    hours = pilot_hours(PILOT_SEEDS * len(grid.variants), config.train.epochs, images, workers)
    return (f"{grid.name}/{profile}: no pilot runs in {url}, so no spread to plan from. "
            f"Pilot: `sslbench ablate --grid {grid.name} --profile {profile} --seeds "
            f"{PILOT_SEEDS} --storage {url}`: {PILOT_SEEDS * len(grid.variants)} runs, about "
            f"{hours:.1f} h on {workers} CPU worker(s) (estimated from this machine's measured "
            f"8.7 s per epoch of 60,000 images and core).")


def plan_text(store, grid_name: str, profiles: list[str], sesoi: float, workers: int,
              alpha: float = ALPHA, power: float = POWER, round_size: int = 3) -> str:
    """`sslbench plan`: per profile, each comparison's sd, seeds needed and hours, from the
    pilot runs the store holds, with the seed budget `ablate --until-decided` would need;
    a recommendation; or, without pilot runs, the pilot to run and its cost."""
    from sslbench.ablations import get_grid
    from sslbench.bench.core.profiles import get_profile
    from sslbench.reports import tables
    from sslbench.reports.build import comparisons, load_runs, stored_profiles
    from sslbench.reports.sequential import seeds_for_power

    grid = get_grid(grid_name)
    stored = set(stored_profiles(store, grid_name))
    lines: list[str] = []
    costs: dict[str, float] = {}
    for profile in profiles:
        get_profile(profile)
        if profile not in stored:
            lines += [_pilot_line(grid, profile, store.url, workers), ""]
            continue
        runs = load_runs(store, grid_name, profile)
        frame = tables.runs_frame(runs)
        order = [v.name for v in grid.variants if v.name in set(frame["variant"])]
        order += sorted(set(frame["variant"]) - set(order))
        baselines, family = comparisons(grid, runs, order)
        paired = tables.paired_against_baselines(frame, order, baselines, family, sesoi,
                                                 alpha)
        steps = next_steps(paired, frame, sesoi, workers, alpha, power)
        costs[profile] = total_hours(steps, frame, workers)
        lines.append(f"{grid_name}/{profile}: {len(frame)} pilot runs; δ = {_points(sesoi)}, "
                     f"alpha {alpha} / {max(1, len(paired))} comparisons, power {power:.0%}")
        for row in steps.itertuples():
            needed = "over 10,000" if row.seeds_needed is None or row.seeds_needed != \
                row.seeds_needed else f"{int(row.seeds_needed)}"
            budget = seeds_for_power(row.sd_diff, sesoi, round_size, max(1, len(paired)),
                                     alpha, power)
            adaptive = (f"--until-decided --round {round_size} --max-seeds {budget}"
                        if budget else "--until-decided: over 2,000 seeds")
            lines.append(f"  {row.variant} vs {row.baseline}: sd of paired differences "
                         f"{row.sd_diff:.2f} [{row.sd_low:.2f}, {row.sd_high:.2f}] from "
                         f"{row.n} seeds -> {needed} seeds (range {row.seeds_needed_range}), "
                         f"{row.hours_to_add:.1f} h more; now {row.decision}; or {adaptive}")
        lines += [f"  all open comparisons: about {costs[profile]:.1f} h on {workers} "
                  f"worker(s)", ""]
    if costs:
        best = min(costs, key=lambda p: costs[p])
        lines.append(f"Recommendation: profile {best} answers the question at the least "
                     f"compute of those with pilot runs ({costs[best]:.1f} h); profiles "
                     f"without pilots are not compared.")
    return "\n".join(lines).rstrip()
