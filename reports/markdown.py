"""report.md: the markdown of one grid's report, rendered from its gathered data (build.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.bench.core.cost import duration
from sslbench.bench.core.schema import Record
from sslbench.bench.store.queue import DEFAULT_GRACE_S, owner_gone
from sslbench.bench.store.runstore import CellRun
from sslbench.reports import tables
from sslbench.reports.sequential import GUARANTEE
from sslbench.reports.stats import ALPHA

if TYPE_CHECKING:
    from sslbench.reports.build import ReportData

FOREST_FILE = "paired.png"  # the forest plot (reports.figures), shown under the summary


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) < 10 ** -digits and value != 0:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, formats: dict[str, int] | None = None,
                   index: bool = False) -> str:
    """A GitHub markdown table; `formats` gives decimals per float column (default 2)."""
    formats = formats or {}
    data = frame.reset_index() if index else frame
    header = "| " + " | ".join(str(c) for c in data.columns) + " |"
    rule = "|" + "|".join("---" for _ in data.columns) + "|"
    lines = [header, rule]
    # Column by column, so integer columns stay integers (iterrows would upcast them).
    columns = [data[c].tolist() for c in data.columns]
    for row in zip(*columns, strict=True):
        cells = [_fmt(v, formats.get(str(c), 2)) for c, v in zip(data.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval(low: float, high: float, digits: int = 2, signed: bool = False) -> str:
    """`[low, high]`, or – when either end is unknown."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    form = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    return f"[{form.format(low)}, {form.format(high)}]"


def _signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}" if math.isfinite(value) else "–"


# Markdown tables stay narrow (at most 8 columns, plain names); the CSVs keep every column.
def _accuracy_table(summary: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "variant": summary["variant"], "runs": summary["n"], "collapses": summary["collapses"],
        "collapse % [95% CI]": [f"{_fmt(r, 1)} {_interval(lo, hi, 1)}" for r, lo, hi in zip(
            summary["collapse_rate"], summary["rate_ci_low"], summary["rate_ci_high"],
            strict=True)],
        "mean": summary["mean"],
        "95% CI": [_interval(lo, hi) for lo, hi in zip(summary["t_ci_low"],
                                                        summary["t_ci_high"], strict=True)],
        "sd": summary["std"], "median": summary["median"]})


def _comparison_table(paired: pd.DataFrame, adjusted: bool) -> pd.DataFrame:
    return pd.DataFrame({
        "comparison": [f"{v} vs {b}" for v, b in zip(paired["variant"], paired["baseline"],
                                                      strict=True)],
        "seeds": paired["n"],
        "difference": [_signed(v) for v in paired["mean_diff"]],
        "95% CI": [_interval(lo, hi, signed=True) for lo, hi in zip(
            paired["ci_low"], paired["ci_high"], strict=True)],
        "p (Holm)" if adjusted else "p": paired["holm_p"],
        "wins": paired["wins"],
        "collapses": paired["collapses"],
        "verdict": paired["verdict"]})


def _plain_table(table: pd.DataFrame, adjusted: bool) -> str:
    return markdown_table(_comparison_table(table, adjusted),
                          {"seeds": 0, "p (Holm)": 4, "p": 4})


def running_cells(runs: Sequence[CellRun]) -> str:
    """Running cells by name, told apart from stale ones whose owner is gone (a dead
    process on this host, or no heartbeat for the default grace period)."""
    live: list[str] = []
    stale: list[str] = []
    for run in runs:
        if run.state == "RUNNING":
            gone = owner_gone(run.owner, run.heartbeat, DEFAULT_GRACE_S)
            (stale if gone else live).append(run.cell)
    text = f"{len(live)} running" + (f": {', '.join(sorted(live))}" if live else "")
    if stale:
        text += (f"; {len(stale)} stale, their runner gone, resumed by the next `ablate`: "
                 f"{', '.join(sorted(stale))}")
    return text


def _protocol(runs: Sequence[CellRun], grid: str, profile: str, store_shown: str
              ) -> list[str]:
    records = [r.record for r in runs if r.record is not None]
    env = [rec["environment"] for rec in records]
    configs = [rec["config"] for rec in records]
    commits = sorted({v for rec in records for v in Record.from_dict(rec).code_versions})
    started = min((rec["started_at"] for rec in records), default="–")
    finished = max((rec["finished_at"] for rec in records), default="–")
    compute_h = sum(rec["throughput"]["total_seconds"] for rec in records) / 3600
    epochs = sorted({c["train"]["epochs"] for c in configs})

    def values(key: str) -> str:
        found = sorted({str(c["data"][key] or "all") for c in configs}, key=lambda v: (len(v), v))
        return ", ".join(found) or "–"

    return [
        f"- grid: `{grid}`, profile: `{profile}`, epochs: {', '.join(map(str, epochs))}",
        f"- data: {values('dataset')}; labels: {values('num_labels')}; train images: "
        f"{values('train_size')}; test images: {values('test_size')}",
        f"- seeds: {', '.join(map(str, sorted({r.seed for r in runs})))} "
        f"({len(records)} finished runs, "
        f"{sum(r.state == 'FAIL' and r.failure_kind != 'interrupted' for r in runs)} failed, "
        f"{sum(r.failure_kind == 'interrupted' for r in runs if r.state == 'FAIL')} "
        f"interrupted and resumable, {running_cells(runs)})",
        f"- device: {'; '.join(sorted({e['device'] for e in env}))}",
        f"- torch {', '.join(sorted({e['torch'] for e in env}))}, torchvision "
        f"{', '.join(sorted({e['torchvision'] for e in env}))}, python "
        f"{', '.join(sorted({e['python'] for e in env}))}",
        f"- git commit: {', '.join(commits)} (every stretch of training; `(dirty)`: with "
        f"uncommitted changes)",
        f"- runs from {started} to {finished}; total training and evaluation time "
        f"{compute_h:.2f} h (summed over runs)",
        f"- store: {store_shown}",
    ]


PAIRED_NOTE = (
    "Pairs are the seeds where both runs finished and neither collapsed. `difference`: the "
    "mean of variant - baseline in points, with its 95% paired t interval; `p`: the paired "
    "t-test{holm}; `wins`: seeds on which the variant beat its baseline; `collapses`: "
    "variant vs baseline runs at chance, compared apart by an exact McNemar test. Verdict: "
    "better or worse when p < alpha, equivalent when the two one-sided tests within ±{sesoi:g} "
    "points give p < alpha{holm}, else inconclusive with the effect these seeds could have "
    "detected with 80% power. Every column (Wilcoxon, d_z, TOST p, the probability of "
    "improvement with its interval, the McNemar p, the seeds dropped): `{csv}`.")


def _stopping_section(stored: dict | None) -> list[str]:
    """The rule and each comparison's stopping round, when the grid ran --until-decided
    (`stored`: the study's `until_decided` attribute)."""
    if stored is None:
        return []
    lines = ["## Stopping rule (`ablate --until-decided`)", "",
             f"Seeds were added {stored['round']} per round, up to {stored['max_seeds']}, "
             f"only to comparisons still open. Rule: {stored['rule']} (family alpha "
             f"{stored['alpha']}, δ = {stored['sesoi']:g} points; see reports/sequential.py). "
             f"{GUARANTEE}",
             "", "| comparison | decision | stopped at round | seeds |", "|---|---|---|---|"]
    if not stored.get("finished", True):
        lines[2] += (f" In progress: {stored.get('looks_done', 0)} of {stored.get('looks', '?')}"
                     f" looks judged so far; the open comparisons' verdicts wait for the rule.")
    for c in stored["comparisons"]:
        open_where = ("budget spent", str(stored["max_seeds"])) if stored.get("finished", True) \
            else (f"open after look {stored.get('looks_done', 0)}", "–")
        where = (str(c["round"]), str(c["seeds"])) if c["round"] else open_where
        lines.append(f"| {c['variant']} vs {c['baseline']} | {c['decision']} | {where[0]} "
                     f"| {where[1]} |")
    return [*lines, ""]


def _to_decide(steps: pd.DataFrame | None, variant: str, decision: str) -> str:
    """What it would take to decide an open comparison, from the Next step table."""
    if decision not in ("inconclusive", "undetermined") or steps is None:
        return ""
    row = steps[steps["variant"] == variant]
    if row.empty:
        return ""
    step = row.iloc[0]
    needed = step["seeds_needed"]
    if not math.isfinite(float(step["sd_diff"])):
        return "; to decide: a second paired seed first (one pair has no spread to plan from)"
    if needed is None or not math.isfinite(float(needed)):
        return "; to decide: more seeds than the planner searches (10,000)"
    add = int(step["seeds_to_add"])
    return (f"; to decide: {add} more seed{'s' if add != 1 else ''} "
            f"(about {duration(float(step['hours_to_add']) * 3600)} on 2 workers)")


def _versions(versions: Any) -> list[str]:
    return [v for v in str(versions if isinstance(versions, str) else "").split(" + ") if v]


def _mixed_code(versions: Any) -> str:
    """A flag where a comparison's pairs were trained by more than one code version."""
    found = _versions(versions)
    return f"; **mixes {len(found)} code versions**" if len(found) > 1 else ""


def _decide_by(data: ReportData, variant: str, decision: str) -> str:
    return _next_look(data, decision) or _to_decide(data.steps, variant, decision)


def _next_look(data: ReportData, decision: str) -> str:
    """What would decide an open comparison: the stopping rule's next look where the grid
    runs under it (a fixed-seed plan would not keep its level), else the planner's seeds."""
    rule = data.until_decided
    if rule is None:
        return ""
    if decision != "inconclusive":
        return ""
    if rule.get("finished", True):
        return "; to decide: a new budget, as a new grid (the rule's budget is spent)"
    return "; to decide: the rule's next look (run the same `ablate --until-decided` again)"


def _mixed_code_lines(table: pd.DataFrame) -> list[str]:
    """Under a comparisons table: the comparisons whose pairs mix code versions, named."""
    if "code_versions" not in table:
        return []
    mixed = [(f"{r.variant} vs {r.baseline}", _versions(r.code_versions))
             for r in table.itertuples()]
    mixed = [(name, found) for name, found in mixed if len(found) > 1]
    if not mixed:
        return []
    return ["Pairs trained by more than one code version (a change between them may move a "
            "seed by itself; `sslbench ablate --pin-code` keeps a grid to one): "
            + "; ".join(f"{name}: {', '.join(found)}" for name, found in mixed) + ".", ""]


def _summary_section(data: ReportData, forest: Path | None) -> list[str]:
    """One sentence per comparison of the declared family, by effect, then the forest plot:
    what a reader needs in one minute, before the protocol."""
    lines = ["## Summary", ""]
    total = len(data.paired) + len(data.unrun)
    if data.paired.empty:
        lines.append(f"None of the grid's {total} comparisons has paired seeds yet.")
    else:
        lines.append(f"The grid's question, {total} comparisons, each variant against its "
                     f"baseline (δ = {data.sesoi:g} points, alpha {ALPHA}, Holm over the "
                     f"family), largest effect first:")
        lines.append("")
        for row in data.paired.sort_values("mean_diff", ascending=False).itertuples():
            interval = _interval(row.ci_low, row.ci_high, signed=True)
            lines.append(f"- **{row.variant}** vs {row.baseline}: {_signed(row.mean_diff)} "
                         f"points{'' if interval == '–' else ' ' + interval}; "
                         f"{row.verdict}{_decide_by(data, row.variant, row.decision)}"
                         f"{_mixed_code(row.code_versions)}.")
    if data.unrun:
        lines.append(f"- not run yet: {', '.join(data.unrun)}")
    if not data.paired.empty and (mixed := _mixed_code_lines(data.paired)):
        lines += ["", *mixed[:1]]
    if forest is not None:
        lines += ["", f"![Paired differences: effects, 95% intervals, the ±δ band, verdicts]"
                      f"({forest.name})"]
    return [*lines, ""]


def _header(data: ReportData, store_shown: str, forest: Path | None) -> list[str]:
    """The title, the summary, the grid, the preamble, the stopping rule and the protocol."""
    return [
        f"# Grid `{data.grid_name}`, profile `{data.profile}`",
        "",
        *_summary_section(data, forest),
        data.grid.description + ".",
        "",
        *data.preamble,
        *_stopping_section(data.until_decided),
        "## Protocol",
        *_protocol(data.runs, data.grid_name, data.profile, store_shown),
        "",
        f"- headline per run: `{data.metric}`, {tables.METRICS[data.metric]}; smallest effect "
        f"of interest δ = {data.sesoi:g} points (`--sesoi`); alpha {ALPHA}, power 80%",
        "",
        "Accuracy is % of the test images. A run collapses when its last-epoch accuracy is "
        "under twice chance: it is counted as a failure, its rate given with an exact "
        "interval, and it enters no mean, interval or paired test below.",
        "",
    ]


def _variants(data: ReportData) -> str:
    """Each variant the grid defines, then those the store holds under another meaning."""
    stored = set(data.frame["variant"])
    grid = data.grid
    variants = "\n".join(
        f"- `{v.name}` ({v.method}): {v.description}"
        + ("" if v.name in stored else " (no finished runs in this store)")
        + (f"; compared with `{b}`" if (b := grid.baseline_of(v.name)) else "; reference")
        for v in grid.variants)
    relabeled = sorted({r.variant for r in data.runs
                        if r.record is not None and r.record.get("relabeled_from")})
    if relabeled or data.undefined:
        variants += "\n" + "\n".join(
            [f"- `{name}`: stored cells of the SSL pipeline baseline (`supervised_pipeline`), "
             f"written when that baseline was called `supervised`; relabeled when read, "
             f"never taken for the classic baseline" for name in relabeled]
            + [f"- `{name}`: held by the store, not defined by the grid now; shown as a "
               f"reference" for name in data.undefined if name not in relabeled])
    return variants


def _accuracy_sections(data: ReportData) -> list[str]:
    """Accuracy per variant, per seed and, with several label budgets, per budget."""
    labels_section = [
        "## Accuracy against the number of labels",
        markdown_table(_labels_table(data.labels),
                       {"labels": 0, "configs": 0, "seeds": 0, "runs": 0, "collapses": 0}),
        "",
        "Mean test accuracy (%) per method and label count over the runs that did not "
        "collapse, the seed as the unit: configs of one method share seeds (a seed draws the "
        "labeled subset), so each seed's runs are averaged first and the 95% t interval is "
        "over the seeds. `runs` counts every run, `collapses` the failed ones.",
        "",
    ] if data.several_budgets else []
    return [
        "## Variants",
        _variants(data),
        "",
        "## Accuracy per variant",
        markdown_table(_accuracy_table(data.summary), {"runs": 0, "collapses": 0}),
        "",
        "`collapses` of `runs`, their rate with its 95% Clopper-Pearson interval; `mean` (with "
        "its 95% t interval, none below 2 runs), `sd` and `median` over the runs that did not "
        "collapse. The mean over every run, the range and the other per-run figures: "
        "`summary.csv`.",
        "",
        *_per_seed_section(data.seeds),
        *labels_section,
        *_aggregate_section(data),
    ]


def _labels_table(labels: pd.DataFrame) -> pd.DataFrame:
    shown = labels.rename(columns={"num_labels": "labels", "n": "runs"})
    shown["95% CI"] = [_interval(lo, hi) for lo, hi in zip(labels["ci_low"], labels["ci_high"],
                                                          strict=True)]
    return shown.drop(columns=["ci_low", "ci_high"])


def _aggregate_section(data: ReportData) -> list[str]:
    """Each method across the grid's tasks (rliable's IQM and probability of improvement),
    where the grid has several tasks; one line where rliable is not installed."""
    table = data.aggregated
    if table is None:
        tasks = data.frame[[c for c in ("dataset", "num_labels", "translate_px")
                            if c in data.frame]].drop_duplicates()
        return [] if len(tasks) < 2 else [
            "## Aggregates across tasks", "",
            "rliable is not installed, so the aggregates across tasks are left out: "
            "`pip install --no-deps rliable==1.2.0` adds them (nox installs it).", ""]
    if table.empty:
        return []
    shown = pd.DataFrame({
        "method": table["method"], "tasks": table["tasks"], "runs per task":
        table["runs_per_task"], "IQM": table["iqm"],
        "95% CI": [_interval(lo, hi) for lo, hi in zip(table["iqm_low"], table["iqm_high"],
                                                        strict=True)],
        "mean": table["mean"],
        f"P(> {data.reference_method})": table["p_improve_over_reference"]})
    return [
        "## Aggregates across tasks (rliable)",
        markdown_table(shown, {"tasks": 0, "runs per task": 0,
                               f"P(> {data.reference_method})": 2}),
        "",
        "Each method over all of the grid's tasks (label budgets, augmentations, datasets), as "
        "Agarwal et al. (2021) recommend, with rliable's metrics: `IQM` the interquartile mean "
        "of every run on every task (accuracy %, collapsed runs included at their accuracy; "
        "the middle half counts), with a 95% stratified bootstrap interval (runs resampled "
        "within each task, 2,000 times, seeded); `P(> reference)` the probability that a run "
        f"of the method beats a run of `{data.reference_method}` on the same task, averaged "
        "over tasks. `aggregates.csv` holds the table.",
        "",
    ]


def _per_seed_section(seeds: pd.DataFrame) -> list[str]:
    """Seeds as rows, variants as columns, where that fits in 8 columns; else a pointer."""
    if len(seeds.columns) + 1 > 8:
        return ["## Accuracy per seed",
                f"{len(seeds.columns)} variants x {len(seeds)} seeds: `per_seed.csv`, and each "
                f"seed's dot in the accuracy figure.", ""]
    return ["## Accuracy per seed", markdown_table(seeds, index=True), ""]


def _reproduction_section(reproduced: pd.DataFrame) -> list[str]:
    if reproduced.empty:
        return []
    ran = reproduced[reproduced["n"] > 0]
    unrun = sorted(set(reproduced.loc[reproduced["n"] == 0, "variant"]))
    published = dict(zip(reproduced["variant"], reproduced["published_mean"], strict=True))
    sources = dict(zip(reproduced["variant"], reproduced["source"], strict=True))
    table = pd.DataFrame({
        "variant": ran["variant"], "figure": ran["figure"],
        "ours": [f"{_fmt(m)} (n={n})" for m, n in zip(ran["ours_mean"], ran["n"], strict=True)],
        "published": [f"{_fmt(m)} (n={n})" for m, n in zip(ran["published_mean"],
                                                            ran["published_n"], strict=True)],
        "difference": [_signed(v) for v in ran["diff"]],
        "95% CI": [_interval(lo, hi, signed=True) for lo, hi in zip(ran["ci_low"],
                                                                     ran["ci_high"], strict=True)],
        "verdict": ran["verdict"]})
    return [
        "## Reproduction",
        markdown_table(table) if not table.empty else "No referenced variant has runs yet.",
        "",
        *([f"Not run yet: {', '.join(unrun)} (published: " + "; ".join(
            f"{v} {_fmt(published[v])}" for v in unrun) + ")", ""] if unrun else []),
        "Published: " + "; ".join(f"{v}: {src}" for v, src in sources.items()) + ".",
        "",
        "Ours (runs that did not collapse) beside the published values, for each per-run "
        "figure. `difference` = ours - published in points, with its 95% Welch interval "
        "against the published seeds (a one-sample t interval against a single published "
        "figure). Verdict: reproduced when the interval lies within ±δ, inconclusive when it "
        "holds 0 but is wider, else above or below. The published sd (population, as "
        "published) and the p values: `reproduction.csv`.",
        "",
    ]


def _next_step_section(data: ReportData) -> list[str]:
    if data.steps is None or data.next_step is None:
        return []
    return [
        "## Next step",
        data.next_step,
        "",
        markdown_table(_steps_table(data.steps), {"seeds": 0}),
        "",
        "Seeds needed for a two-sided paired t-test at alpha / m (the family's Bonferroni "
        "level, Holm's first step) to detect δ with 80% power, from the sd of the paired "
        "differences; the range uses the sd's 95% chi-square interval. Time: the runs to add "
        "(variant and baseline) at their median measured time, on 2 workers.",
        "",
    ]


def _count(value: Any) -> str:
    """A whole number of seeds, or – where the planner has none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return str(int(value))


def _steps_table(steps: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "comparison": [f"{v} vs {b}" for v, b in zip(steps["variant"], steps["baseline"],
                                                      strict=True)],
        "seeds": steps["n"],
        "sd of differences": [f"{_fmt(sd)} {_interval(lo, hi)}" if math.isfinite(sd) else "–"
                              for sd, lo, hi in zip(steps["sd_diff"].astype(float),
                                                    steps["sd_low"], steps["sd_high"],
                                                    strict=True)],
        "seeds needed": [_count(v) for v in steps["seeds_needed"]],
        "range": [r if "None" not in str(r) else "–" for r in steps["seeds_needed_range"]],
        "to add": [_count(v) for v in steps["seeds_to_add"]],
        "time": [duration(h * 3600) if math.isfinite(h) else "–"
                 for h in steps["hours_to_add"].astype(float)]})


def _family_sentence(data: ReportData) -> str:
    """Which hypotheses Holm adjusts over: the grid's declared family, with the members
    that have no paired seeds yet named (they count with p = 1)."""
    total = len(data.paired) + len(data.unrun)
    if not data.unrun:
        return f"Holm adjusts over these {total} comparisons, the grid's declared question. "
    return (f"Holm adjusts over the grid's declared question, {total} comparisons: these "
            f"{len(data.paired)} and {', '.join(data.unrun)}, "
            f"{'which has' if len(data.unrun) == 1 else 'which have'} no paired seeds yet "
            f"and {'counts' if len(data.unrun) == 1 else 'count'} with p = 1 (the family "
            f"is incomplete; its verdicts are no more lenient than the complete family's). ")


def _comparison_sections(data: ReportData) -> list[str]:
    """The question (the family's paired tests), the next step, and the reference checks."""
    return [
        "## The question: each variant against its baseline",
        _plain_table(data.paired, adjusted=True) if not data.paired.empty
        else "No variant of the family shares seeds with its baseline yet.",
        "",
        *_mixed_code_lines(data.paired),
        _family_sentence(data) + PAIRED_NOTE.format(sesoi=data.sesoi, csv="paired.csv",
                                                    holm=", Holm-adjusted over the family"),
        "",
        *_next_step_section(data),
        "## Reference checks",
        _plain_table(data.references, adjusted=False) if not data.references.empty
        else "None.",
        "",
        *_mixed_code_lines(data.references),
        "Each reference check (a baseline against the control, say) is tested alone at "
        "alpha, outside the family; " + (
            "its columns read as the question's above (`p` not adjusted), and "
            "`reference_checks.csv` holds them all." if not data.paired.empty
            else PAIRED_NOTE.format(sesoi=data.sesoi, csv="reference_checks.csv", holm="")),
        "",
    ]


def _closing_sections(data: ReportData, figures: Sequence[Path]) -> list[str]:
    """Throughput, the failed runs, and the figures."""
    return [
        "## Throughput per variant",
        markdown_table(data.speed.rename(columns={
            "train_images_per_s": "images/s", "epoch_seconds": "epoch s",
            "peak_memory_mib": "peak MiB"}),
            {"runs": 0, "stack": 0, "images/s": 0, "epoch s": 1, "peak MiB": 0}),
        "",
        "Medians over runs of each run's median train images/s (epochs after the first), "
        "epoch seconds (training only) and peak memory (CUDA allocator peak, or process "
        "peak RSS on CPU). `stack`: seeds trained together as one stacked model; its images/s "
        "count the images of all of them. `precision`: the training passes' arithmetic.",
        "",
        "## Failed and interrupted runs",
        markdown_table(data.failures) if not data.failures.empty else "None.",
        "",
        "An interrupted cell was stopped (a signal, or its runner ended) and resumes from its "
        "checkpoint when the same `sslbench ablate` command runs again; a diverged cell hit a "
        "NaN or infinite loss; an error is a crash, with its exception.",
        "",
        "## Figures",
        *[f"![{p.stem}]({p.name})" for p in figures],
        "",
    ]


def render_report(data: ReportData, figures: Sequence[Path], store_shown: str) -> str:
    """report.md's text: `figures` the written PNGs in the order shown, `store_shown` the
    store's URL as the report names it (build.shown_store_url)."""
    forest = next((p for p in figures if p.name == FOREST_FILE), None)
    lines = [
        *_header(data, store_shown, forest),
        *_accuracy_sections(data),
        *_reproduction_section(data.reproduced),
        *_comparison_sections(data),
        *_closing_sections(data, [p for p in figures if p != forest]),
    ]
    return "\n".join(lines)
