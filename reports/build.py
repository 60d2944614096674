"""The report: markdown, CSV tables and seaborn figures of one grid, from the store alone."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ablations import get_grid
from ablations.grid import Grid, Variant
from bench.errors import ConfigError, UserError
from bench.store import CellRun, RunStore, grid_study_name, latest_by_cell
from reports import figures, tables


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


def resolve_profile(store: RunStore, grid: str, profile: str | None) -> str:
    prefix = f"grid:{grid}:"
    stored = sorted(n.removeprefix(prefix) for n in store.study_names() if n.startswith(prefix))
    if profile is not None:
        if profile not in stored:
            raise UserError(f"the store {store.url} has no runs of grid {grid!r} with profile "
                            f"{profile!r}" + (f" (it has: {', '.join(stored)})" if stored else
                                              f"; run `sslbench ablate --grid {grid}` first"))
        return profile
    if not stored:
        raise UserError(f"the store {store.url} has no runs of grid {grid!r}; run "
                        f"`sslbench ablate --grid {grid} ...` first or pass --storage")
    if len(stored) > 1:
        raise UserError(f"the store holds grid {grid!r} with profiles {', '.join(stored)}; "
                        f"choose one with --profile")
    return stored[0]


def load_runs(store: RunStore, grid: str, profile: str) -> list[CellRun]:
    study_id = store.find_study(grid_study_name(grid, profile))
    if study_id is None:
        raise UserError(f"no runs of grid {grid!r} with profile {profile!r} in {store.url}")
    return list(latest_by_cell(store.cell_runs(study_id)).values())


def _protocol(runs: Sequence[CellRun], grid: str, profile: str, store_url: str) -> list[str]:
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
        f"interrupted and resumable, {sum(r.state == 'RUNNING' for r in runs)} running)",
        f"- device: {'; '.join(sorted({e['device'] for e in env}))}",
        f"- torch {', '.join(sorted({e['torch'] for e in env}))}, torchvision "
        f"{', '.join(sorted({e['torchvision'] for e in env}))}, python "
        f"{', '.join(sorted({e['python'] for e in env}))}",
        f"- git commit: {', '.join(commits)}",
        f"- runs from {started} to {finished}; total training and evaluation time "
        f"{compute_h:.2f} h (summed over runs)",
        f"- store: `{store_url}`; report generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
    ]


def _grid(store: RunStore, name: str, profile: str) -> Grid:
    """A registered grid, or one a command defined and stored (a search's final runs)."""
    try:
        return get_grid(name)
    except ConfigError:
        study_id = store.find_study(grid_study_name(name, profile))
        stored = (store.storage.get_study_user_attrs(study_id).get("variants")
                  if study_id is not None else None)
        if not stored:
            raise
        return Grid(name=name, description=f"grid {name} as stored",
                    variants=tuple(Variant(**v) for v in stored), control=stored[0]["name"])


def write_report(store: RunStore, grid_name: str, profile: str | None, out: Path) -> Path:
    """Write report.md, CSV tables and PNG figures into `out`; return report.md's path."""
    if not any(n.startswith(f"grid:{grid_name}:") for n in store.study_names()):
        get_grid(grid_name)  # an unknown grid is named as such before anything else
    profile = resolve_profile(store, grid_name, profile)
    grid = _grid(store, grid_name, profile)
    runs = load_runs(store, grid_name, profile)
    frame = tables.runs_frame(runs)
    if frame.empty:
        raise UserError(f"no finished runs of grid {grid_name!r} ({profile}) in {store.url} yet")
    order = [v.name for v in grid.variants if v.name in set(frame["variant"])]
    summary = tables.variant_summary(frame, order)
    seeds = tables.per_seed(frame, order)
    paired = tables.paired_against_baselines(frame, order,
                                             {v: grid.baseline_of(v) for v in order})
    labels = tables.by_labels(frame)
    several_budgets = frame["num_labels"].nunique() > 1
    speed = tables.throughput(frame, order)
    failures = tables.failures_frame(runs)
    curves = tables.curves_frame(runs)

    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("runs", frame), ("summary", summary), ("per_seed", seeds),
                        ("paired", paired), ("throughput", speed), ("failures", failures),
                        ("by_labels", labels)):
        table.to_csv(out / f"{name}.csv", index=name == "per_seed")
    figs = [figures.accuracy_strip(frame, order, out / "accuracy.png"),
            figures.learning_curves(curves, order, out / "curves.png"),
            figures.throughput_bars(speed, out / "throughput.png")]
    if not paired.empty:
        figs.insert(1, figures.paired_forest(paired, out / "paired.png"))
    if several_budgets:
        figs.insert(0, figures.accuracy_by_labels(frame, out / "accuracy_by_labels.png"))

    variants = "\n".join(
        f"- `{v.name}` ({v.method}): {v.description}"
        + (f"; compared with `{b}`" if (b := grid.baseline_of(v.name)) else "; reference")
        for v in grid.variants)
    labels_section = [
        "## Accuracy against the number of labels",
        markdown_table(labels, {"num_labels": 0, "n": 0, "collapses": 0}),
        "",
        "Mean test accuracy (%) over seeds per method and label count, 95% bootstrap CI.",
        "",
    ] if several_budgets else []
    lines = [
        f"# Grid `{grid_name}`, profile `{profile}`",
        "",
        grid.description + ".",
        "",
        "## Protocol",
        *_protocol(runs, grid_name, profile, store.url),
        "",
        "Accuracy: % of the test images at the last epoch (the headline). "
        "`blog_figure_mean`: the blog's own figure, test accuracy at the epoch with the lowest "
        "training loss, averaged over seeds. A collapse is a final accuracy under twice chance.",
        "",
        "## Variants",
        variants,
        "",
        "## Accuracy per variant",
        markdown_table(summary, {"n": 0, "collapses": 0}),
        "",
        "95% CI: percentile bootstrap of the mean over seeds (10,000 resamples).",
        "",
        "## Accuracy per seed",
        markdown_table(seeds, index=True),
        "",
        *labels_section,
        "## Paired against each variant's baseline",
        markdown_table(paired, {"t_p": 4, "wilcoxon_p": 4, "holm_p": 4}) if not paired.empty
        else "No variant shares seeds with its baseline yet.",
        "",
        "`mean_diff` in accuracy points (variant - baseline) over the seeds both finished, "
        "95% CI from the paired t distribution; `t_p` paired t-test, `wilcoxon_p` Wilcoxon "
        "signed-rank (exact; with n <= 5 it cannot go below 0.0625), `holm_p` the t-test p "
        "Holm-adjusted over the variants; `d_z` = mean / sd of the differences. The verdict "
        "uses `holm_p` at 0.05.",
        "",
        "## Throughput per variant",
        markdown_table(speed, {"runs": 0, "stack": 0, "train_images_per_s": 0,
                               "epoch_seconds": 1, "peak_memory_mib": 0}),
        "",
        "Medians over runs of each run's median train images/s (epochs after the first), "
        "epoch seconds (training only) and peak memory (CUDA allocator peak, or process "
        "peak RSS on CPU). `stack`: seeds trained together as one stacked model; its images/s "
        "count the images of all of them. `precision`: the training passes' arithmetic.",
        "",
        "## Failed and interrupted runs",
        markdown_table(failures) if not failures.empty else "None.",
        "",
        "An interrupted cell was stopped (a signal, or its runner ended) and resumes from its "
        "checkpoint when the same `sslbench ablate` command runs again; a diverged cell hit a "
        "NaN or infinite loss; an error is a crash, with its exception.",
        "",
        "## Figures",
        *[f"![{p.stem}]({p.name})" for p in figs],
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
