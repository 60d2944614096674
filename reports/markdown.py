"""report.md: the markdown of one grid's report, rendered from its gathered data (build.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.bench.store.queue import DEFAULT_GRACE_S, owner_gone
from sslbench.bench.store.runstore import CellRun
from sslbench.reports import tables
from sslbench.reports.stats import ALPHA

if TYPE_CHECKING:
    from sslbench.reports.build import ReportData


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
    dirty = " (uncommitted changes)"
    commits = sorted({e["git"]["commit"][:12] + (dirty if e["git"]["dirty"] else "") for e in env})
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
        f"- git commit: {', '.join(commits)}",
        f"- runs from {started} to {finished}; total training and evaluation time "
        f"{compute_h:.2f} h (summed over runs)",
        f"- store: {store_shown}",
    ]


PAIRED_NOTE = (
    "Pairs are the seeds where both runs finished and neither collapsed (`dropped_seeds`: "
    "the others). `mean_diff` in points (variant - baseline) with its 95% paired t interval; "
    "`t_p` paired t-test, `wilcoxon_p` Wilcoxon signed-rank (exact; with n <= 5 it cannot "
    "go below 0.0625); `holm_p` the t-test p Holm-adjusted; `tost_holm_p` the Holm-adjusted "
    "two one-sided tests of equivalence within ±{sesoi:g} points; `wins`: seeds on which the "
    "variant beat its baseline; `p_improve`: the probability that it does on a seed, with a "
    "seeded bootstrap interval; `detectable`: the effect these seeds detect with 80% power "
    "at alpha; `collapses` (variant vs baseline) compared by an exact McNemar test "
    "(`collapse_p`). Verdict: better or worse when `holm_p` < alpha, equivalent when "
    "`tost_holm_p` < alpha, else inconclusive with what could have been detected.")


def _paired_table(paired: pd.DataFrame) -> str:
    shown = paired.drop(columns=["decision", "wilcoxon_p", "d_z", "tost_p", "p_improve_low",
                                 "p_improve_high", "sd_diff"])
    return markdown_table(shown, {"n": 0, "t_p": 4, "holm_p": 4, "tost_holm_p": 4,
                                  "collapse_p": 3, "detectable": 1})


def _stopping_section(stored: dict | None) -> list[str]:
    """The rule and each comparison's stopping round, when the grid ran --until-decided
    (`stored`: the study's `until_decided` attribute)."""
    if stored is None:
        return []
    lines = ["## Stopping rule (`ablate --until-decided`)", "",
             f"Seeds were added {stored['round']} per round, up to {stored['max_seeds']}, "
             f"only to comparisons still open. Rule: {stored['rule']} (family alpha "
             f"{stored['alpha']}, δ = {stored['sesoi']:g} points; see reports/sequential.py).",
             "", "| comparison | decision | stopped at round | seeds |", "|---|---|---|---|"]
    for c in stored["comparisons"]:
        where = (str(c["round"]), str(c["seeds"])) if c["round"] else ("budget spent",
                                                                      str(stored["max_seeds"]))
        lines.append(f"| {c['variant']} vs {c['baseline']} | {c['decision']} | {where[0]} "
                     f"| {where[1]} |")
    return [*lines, ""]


def _header(data: ReportData, store_shown: str) -> list[str]:
    """The title, the grid, the preamble, the stopping rule and the protocol."""
    return [
        f"# Grid `{data.grid_name}`, profile `{data.profile}`",
        "",
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
        markdown_table(data.labels, {"num_labels": 0, "n": 0, "collapses": 0}),
        "",
        "Mean test accuracy (%) per method and label count over the runs that did not "
        "collapse, with its 95% t interval; `n` counts every run, `collapses` the failed ones.",
        "",
    ] if data.several_budgets else []
    return [
        "## Variants",
        _variants(data),
        "",
        "## Accuracy per variant",
        markdown_table(data.summary, {"n": 0, "collapses": 0, "n_ok": 0, "collapse_rate": 1,
                                      "rate_ci_low": 1, "rate_ci_high": 1}),
        "",
        "`collapses` of `n` runs, `collapse_rate` (%) with its 95% Clopper-Pearson interval "
        "(`rate_ci_low`, `rate_ci_high`); `mean_all` over every run, collapsed ones included; "
        "then over the `n_ok` runs that did not collapse: `mean` with its 95% t interval "
        "(`t_ci_low`, `t_ci_high`; none below 2 runs), `std`, `median`, range, and the means "
        "of the last-epoch figure and of the blog's (lowest training loss).",
        "",
        "## Accuracy per seed",
        markdown_table(data.seeds, index=True),
        "",
        *labels_section,
    ]


def _reproduction_section(reproduced: pd.DataFrame) -> list[str]:
    if reproduced.empty:
        return []
    return [
        "## Reproduction",
        markdown_table(reproduced.drop(columns=["p"]), {"n": 0, "published_n": 0}),
        "",
        "Ours (runs that did not collapse) beside the published values, for each per-run "
        "figure; the published figure is marked. Verdict: reproduced when the interval lies "
        "within ±δ, inconclusive when it holds 0 but is wider, else above or below. "
        "`diff` = ours - published in points, with "
        "its 95% Welch interval against the published seeds (a one-sample t interval against "
        "a single published figure); `published_sd_ddof0` is the population sd, as published.",
        "",
    ]


def _next_step_section(data: ReportData) -> list[str]:
    if data.steps is None or data.next_step is None:
        return []
    return [
        "## Next step",
        data.next_step,
        "",
        markdown_table(data.steps.drop(columns=["decision"]),
                       {"n": 0, "seeds_needed": 0, "seeds_to_add": 0, "hours_to_add": 1}),
        "",
        "Seeds needed for a two-sided paired t-test at alpha / m (the family's Bonferroni "
        "level, Holm's first step) to detect δ with 80% power, from the sd of the paired "
        "differences; the range uses the sd's 95% chi-square interval. Hours: the runs to add "
        "(variant and baseline) at their median measured time, on 2 workers.",
        "",
    ]


def _comparison_sections(data: ReportData) -> list[str]:
    """The question (the family's paired tests), the next step, and the reference checks."""
    note = PAIRED_NOTE.format(sesoi=data.sesoi)
    return [
        "## The question: each variant against its baseline",
        _paired_table(data.paired) if not data.paired.empty
        else "No variant of the family shares seeds with its baseline yet.",
        "",
        f"Holm adjusts over these {len(data.paired)} comparisons, the grid's declared question. "
        + note,
        "",
        *_next_step_section(data),
        "## Reference checks",
        _paired_table(data.references) if not data.references.empty else "None.",
        "",
        "Each reference check (a baseline against the control, say) is tested alone at "
        "alpha, outside the family. " + note,
        "",
    ]


def _closing_sections(data: ReportData, figures: Sequence[Path]) -> list[str]:
    """Throughput, the failed runs, and the figures."""
    return [
        "## Throughput per variant",
        markdown_table(data.speed, {"runs": 0, "stack": 0, "train_images_per_s": 0,
                                    "epoch_seconds": 1, "peak_memory_mib": 0}),
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
    lines = [
        *_header(data, store_shown),
        *_accuracy_sections(data),
        *_reproduction_section(data.reproduced),
        *_comparison_sections(data),
        *_closing_sections(data, figures),
    ]
    return "\n".join(lines)
