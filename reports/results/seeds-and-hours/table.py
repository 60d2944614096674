"""Seeds and hours to detect 1 and 2 points at the quick and the paper profile, on this CPU.

Reads the committed stores (copies, so they stay byte-identical) and writes table.md beside
this file. Run from the repository root:  .venv/bin/python reports/results/seeds-and-hours/table.py
"""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

from sslbench.ablations import get_grid
from sslbench.bench.store.runstore import RunStore
from sslbench.reports import tables
from sslbench.reports.build import comparisons, load_runs
from sslbench.reports.planning import sd_interval
from sslbench.reports.sequential import seeds_for_power
from sslbench.reports.stats import seeds_needed

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
FAMILY = 6  # the mnist100 tweak comparisons that the quick store holds (Holm/Bonferroni m)
BLOG_SD = float(np.std([97.99, 98.13, 96.58, 97.81, 98.38], ddof=1))  # the blog's 5 seeds
WORKERS = 2
GRID_VARIANTS = len(get_grid("mnist100").variants)


def frame_of(relative: str, scheme: str, profile: str):
    folder = Path(tempfile.mkdtemp())
    copy = folder / Path(relative).name
    shutil.copy(RESULTS / relative, copy)
    runs = load_runs(RunStore(f"{scheme}:///{copy}", read_only=True), "mnist100", profile)
    return runs, tables.runs_frame(runs)


def rows_for(name: str, sd: float, sd_source: str, run_hours: float) -> list[str]:
    out = []
    for delta in (1.0, 2.0):
        fixed = seeds_needed(sd, delta, alpha=0.05 / FAMILY)
        single = seeds_needed(sd, delta, alpha=0.05)
        budget = seeds_for_power(sd, delta, 3, FAMILY)
        # one comparison: the variant and its baseline, `fixed` seeds each, on 2 workers
        hours = fixed * 2 * run_hours / WORKERS if fixed else math.nan
        grid_hours = fixed * GRID_VARIANTS * run_hours / WORKERS if fixed else math.nan
        out.append(f"| {name} | {delta:g} | {sd:.2f} ({sd_source}) | {single} | {fixed} | "
                   f"{budget} | {hours:.1f} h | {grid_hours:.0f} h |")
    return out


def evidence(quick_runs: int, quick_hours: float, paper_runs: int, paper_hours: float,
             ratio: float, sd_classic: float) -> list[str]:
    """The table's evidence and caveats, with the figures they quote."""
    return [
        "",
        "Evidence and caveats:",
        f"- quick: {quick_runs} runs of the committed quick store (seeds 0-2), headline "
        f"`tail_median`; median run {quick_hours * 60:.1f} min on one core beside one other.",
        f"- paper: {paper_runs} runs of the committed paper store (TE control and the classic "
        f"supervised baseline, seeds 0-2); median run {paper_hours * 60:.0f} min on one core "
        "beside other work (45 min uncontended). No tweak was run at the paper protocol, so "
        "its sd of paired differences is estimated from the spread of single runs: "
        "sd(a - b) = sqrt 2 x sd(a) for unpaired noise. At quick the measured ratio "
        f"sd(paired differences) / sd(control runs) is {ratio:.2f}, against the 1.41 of "
        "unpaired noise: pairing by seed (same labeled subset, same initialization) "
        "removes about half the variance there, so the sqrt 2 rows may overstate the "
        "seeds a paired paper comparison needs; the row with quick's ratio assumes the "
        "same correlation at 300 epochs. "
        + (f"The classic baseline's 3 paper runs have sd {sd_classic:.2f}. "
           if math.isfinite(sd_classic) else ""),
        "- With 3 seeds an sd is known only within a wide interval (a factor of about 0.5 "
        "to 6): the seed counts are planning figures, and `sslbench plan` recomputes them "
        "as runs arrive.",
        "- No GPU was measured: none was lent to this task.",
        "",
    ]


def main() -> None:
    quick_runs, quick = frame_of("mnist100-quick/store.db", "sqlite", "quick")
    grid = get_grid("mnist100")
    order = [v.name for v in grid.variants if v.name in set(quick["variant"])]
    baselines, family = comparisons(grid, quick_runs, order)
    paired = tables.paired_against_baselines(quick, order, baselines, family, 1.0)
    sds = paired["sd_diff"].dropna().to_numpy()
    pooled = float(math.sqrt(np.mean(sds ** 2)))  # root mean square over the comparisons
    pooled_n = int(paired["n"].sum() - len(paired))  # degrees of freedom pooled
    low, high = sd_interval(pooled, pooled_n + 1)
    quick_control = quick[(quick["variant"] == "control") & ~quick["collapsed"]]["accuracy"]
    quick_hours = statistics.median(quick["total_seconds"]) / 3600

    _, paper = frame_of("mnist100-paper/runs.log", "journal", "paper")
    control = paper[(paper["variant"] == "control") & ~paper["collapsed"]]
    classic = paper[(paper["variant"] == "supervised") & ~paper["collapsed"]]
    paper_hours = statistics.median(paper["total_seconds"]) / 3600
    sd_control = float(np.std(control["accuracy"], ddof=1))
    sd_classic = float(np.std(classic["accuracy"], ddof=1)) if len(classic) > 1 else math.nan
    ratio = pooled / float(np.std(quick_control, ddof=1))

    lines = [
        "# Seeds and hours to detect 1 and 2 points: quick against paper, this CPU",
        "",
        "Made by `table.py` beside this file from the committed stores. Paired t-test, "
        "two-sided, 80% power (statsmodels' noncentral t); `fixed` is at the family's "
        f"Bonferroni level 0.05/{FAMILY} (the six tweak comparisons of the quick store), "
        "`single` at 0.05 for one comparison alone, `--until-decided` the `--max-seeds` "
        "budget of rounds of 3 that reaches 80% power under its stopping rule "
        "(reports/sequential.py). Hours: the median run's measured wall time (training and "
        f"evaluation) in its store, on {WORKERS} workers of one core each; one comparison "
        f"trains a variant and its baseline, the grid all {GRID_VARIANTS} variants.",
        "",
        "| profile | δ (points) | sd of paired differences | single | fixed | "
        "--until-decided budget | hours, one comparison (fixed) | hours, whole grid (fixed) |",
        "|---|---|---|---|---|---|---|---|",
        *rows_for("quick (30 epochs)", pooled,
                  f"measured: root mean square over {len(sds)} comparisons, 95% "
                  f"[{low:.2f}, {high:.2f}]", quick_hours),
        *rows_for("paper (300 epochs)", math.sqrt(2) * sd_control,
                  f"estimated: sqrt 2 x the sd {sd_control:.2f} of our {len(control)} "
                  f"control runs", paper_hours),
        *rows_for("paper (300 epochs)", ratio * sd_control,
                  f"estimated: quick's measured ratio {ratio:.2f} x the sd {sd_control:.2f} "
                  f"of our control runs", paper_hours),
        *rows_for("paper (300 epochs)", math.sqrt(2) * BLOG_SD,
                  f"estimated: sqrt 2 x the sd {BLOG_SD:.2f} of the blog's 5 runs",
                  paper_hours),
        *evidence(len(quick), quick_hours, len(paper), paper_hours, ratio, sd_classic),
    ]
    (HERE / "table.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
