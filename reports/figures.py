"""Seaborn figures of a grid's results.

Each `draw_*` builds one figure (tests read its axes); the function of the same name
without `draw_` writes it as a PNG and returns the path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

DPI = 120


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


@contextlib.contextmanager
def _seeded_jitter(seed: int = 0) -> Iterator[None]:
    """seaborn's strip jitter draws from NumPy's global generator: seed it for the plot (a
    rebuilt report is byte-identical) and give the caller's state back afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _legend_outside(axes: plt.Axes, title: str) -> None:
    """The legend right of the axes, where it can cover no data."""
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        axes.legend(handles, labels, title=title, fontsize=8, loc="upper left",
                    bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def draw_accuracy_strip(frame: pd.DataFrame, order: Sequence[str]) -> plt.Figure:
    """Per-seed accuracy per variant, the axis zoomed to the runs that did not collapse;
    collapsed runs sit in their own marked strip on the right, never inside the band."""
    fine, failed = frame[~frame["collapsed"]], frame[frame["collapsed"]]
    figure, (axes, strip) = plt.subplots(
        1, 2, figsize=(max(7, 1.1 * len(order) + 2.5), 4.2), sharey=False,
        gridspec_kw={"width_ratios": [max(3, len(order)), 1.2]})
    sns.boxplot(data=fine, x="variant", y="accuracy", order=order, color="0.9", ax=axes,
                showfliers=False)
    with _seeded_jitter():
        sns.stripplot(data=fine, x="variant", y="accuracy", order=order, hue="seed",
                      palette="tab10", size=7, jitter=0.15, ax=axes)
    if not fine.empty:
        low, high = fine["accuracy"].min(), fine["accuracy"].max()
        pad = max(0.5, 0.08 * (high - low))
        axes.set_ylim(low - pad, high + pad)
    axes.set(xlabel="", ylabel="test accuracy (%)",
             title="Accuracy per seed (runs that did not collapse)")
    axes.tick_params(axis="x", rotation=30)
    _legend_outside(axes, "seed")
    strip.scatter([f"{v}/s{s}" for v, s in zip(failed["variant"], failed["seed"], strict=True)],
                  failed["accuracy"], marker="x", color="tab:red", s=50)
    strip.set_ylim(0, 30)
    strip.set(title=f"collapsed: {len(failed)}", ylabel="test accuracy (%)")
    strip.tick_params(axis="x", rotation=60, labelsize=7)
    if failed.empty:
        strip.text(0.5, 0.5, "none", ha="center", va="center", transform=strip.transAxes)
        strip.set_xticks([])
    return figure


# The colour of a comparison's mean marker in the forest plot, by its decision.
DECISION_COLOURS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:purple",
                    "inconclusive": "tab:blue", "undetermined": "0.5"}


def draw_paired_forest(paired: pd.DataFrame, per_seed: pd.DataFrame,
                       sesoi: float | None = None) -> plt.Figure:
    """The forest plot: per comparison, sorted by effect, the mean difference and its 95% t
    interval over each seed's difference as a dot, the ±δ band of no practical difference
    shaded, and the verdict in the row's label and the marker's colour. An interval cut at
    the axis limits is marked with an arrow; a comparison without pairs has no marker."""
    paired = paired.sort_values("mean_diff", ascending=False, na_position="last")
    figure, axes = plt.subplots(figsize=(8, 0.55 * max(2, len(paired)) + 1.6))
    rows = list(range(len(paired)))
    dots = []
    for row, item in zip(rows, paired.itertuples(), strict=True):
        if item.baseline not in per_seed or item.variant not in per_seed:
            continue
        both = per_seed[[item.baseline, item.variant]].dropna()
        dropped = {int(s) for s in str(item.dropped_seeds).split()} if item.dropped_seeds else set()
        both = both[[s not in dropped for s in both.index]]
        diffs = (both[item.variant] - both[item.baseline]).to_numpy()
        dots += list(diffs)
        axes.scatter(diffs, [row] * len(diffs), color="0.45", s=14, zorder=3,
                     label="one seed" if row == 0 else None)
    means = paired["mean_diff"].to_numpy()
    finite = [v for v in [*dots, *means] if v == v]
    band = [-sesoi, sesoi] if sesoi else []
    span = (min([*finite, *band], default=-1.0) - 1.0, max([*finite, *band], default=1.0) + 1.0)
    axes.set_xlim(*span)
    if sesoi:
        axes.axvspan(-sesoi, sesoi, color="0.9", zorder=0,
                     label=f"±δ = {sesoi:g}: no practical difference")
    shown: set[str] = set()
    for row, item in zip(rows, paired.itertuples(), strict=True):
        low, high = item.ci_low, item.ci_high
        if low == low and high == high:
            axes.plot([max(low, span[0]), min(high, span[1])], [row, row], color="0.2",
                      linewidth=2, zorder=2, label="95% t interval" if row == 0 else None)
            for edge, clipped, marker in ((span[0], low < span[0], "<"),
                                          (span[1], high > span[1], ">")):
                if clipped:
                    axes.plot([edge], [row], marker=marker, color="0.2", markersize=9)
        word = str(getattr(item, "decision", "") or "")
        if item.mean_diff == item.mean_diff:
            axes.plot([item.mean_diff], [row], "D", zorder=4,
                      color=DECISION_COLOURS.get(word, "tab:blue"),
                      label=f"mean: {word}" if word and word not in shown else None)
            shown.add(word)
    axes.axvline(0, color="0.4", linestyle="--", linewidth=1)
    labels = [f"{v} - {b}" + (f"\n{d}" if d else "") for v, b, d in
              zip(paired["variant"], paired["baseline"],
                  paired.get("decision", pd.Series([""] * len(paired))).fillna(""), strict=True)]
    axes.set_yticks(rows, labels)
    axes.invert_yaxis()
    axes.set(xlabel="accuracy difference to the baseline (points); arrows: interval cut",
             title="Paired differences (same seeds, same labeled subsets)")
    _legend_outside(axes, "")
    return figure


def draw_learning_curves(curves: pd.DataFrame, order: Sequence[str]) -> plt.Figure:
    """Per-epoch curves: each run as a thin line, the median over runs as a thick one."""
    metrics = [("test_accuracy", "test accuracy (%)"), ("supervised_loss", "supervised loss"),
               ("unsupervised_loss", "unsupervised loss"), ("weight", "unsupervised weight w")]
    figure, grid = plt.subplots(2, 2, figsize=(13, 8))
    palette = dict(zip(order, sns.color_palette("tab10", len(order)), strict=False))
    for axes, (metric, label) in zip(grid.flat, metrics, strict=True):
        part = curves[curves["metric"] == metric]
        for variant in order:
            runs = part[part["variant"] == variant]
            if runs.empty:
                continue
            color = palette.get(variant, "0.3")
            for _, run in runs.groupby("seed"):
                axes.plot(run["epoch"], run["value"], color=color, linewidth=0.6, alpha=0.45)
            median = runs.groupby("epoch")["value"].median()
            axes.plot(median.index, median.to_numpy(), color=color, linewidth=2.0,
                      label=variant)
        axes.set(xlabel="epoch", ylabel=label, title=f"{label}: runs (thin), median (thick)")
        if metric.endswith("loss"):
            # Losses span decades and the baseline's unsupervised loss is exactly 0:
            # linear below 1e-4, logarithmic above, never negative.
            axes.set_yscale("symlog", linthresh=1e-4)
            axes.set_ylim(bottom=0)
        if metric == "test_accuracy":
            _legend_outside(axes, "variant")
    return figure


def draw_throughput_bars(table: pd.DataFrame) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(max(6, 1.1 * len(table)), 4))
    sns.barplot(data=table, x="variant", y="train_images_per_s", color="tab:green", ax=axes)
    axes.set(xlabel="", ylabel="train images / s (median over epochs)",
             title="Training throughput per run")
    axes.tick_params(axis="x", rotation=30)
    return figure


def draw_accuracy_by_labels(table: pd.DataFrame) -> plt.Figure:
    """Test accuracy against the number of labels per method, drawn from the report's
    by-labels table (reports.tables.by_labels): the mean over seeds of the runs that did not
    collapse, and its 95% t interval over seeds, so the figure and the table agree."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method, part in table.sort_values("num_labels").groupby("method", sort=True):
        below = (part["mean"] - part["ci_low"]).fillna(0).to_numpy()
        above = (part["ci_high"] - part["mean"]).fillna(0).to_numpy()
        axes.errorbar(part["num_labels"], part["mean"], yerr=[below, above], marker="o",
                      capsize=4, label=str(method))
    ks = sorted(table["num_labels"].unique())
    axes.set_xscale("log")
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.minorticks_off()
    axes.legend(title="method")
    axes.set(xlabel="labeled images (balanced)", ylabel="test accuracy (%)",
             title="Accuracy against the number of labels (mean over seeds, 95% t CI)")
    return figure


# -- written as PNG files -----------------------------------------------------------------


def accuracy_strip(frame: pd.DataFrame, order: Sequence[str], path: Path) -> Path:
    return _save(draw_accuracy_strip(frame, order), path)


def paired_forest(paired: pd.DataFrame, per_seed: pd.DataFrame, path: Path,
                  sesoi: float | None = None) -> Path:
    return _save(draw_paired_forest(paired, per_seed, sesoi), path)


def learning_curves(curves: pd.DataFrame, order: Sequence[str], path: Path) -> Path:
    return _save(draw_learning_curves(curves, order), path)


def throughput_bars(table: pd.DataFrame, path: Path) -> Path:
    return _save(draw_throughput_bars(table), path)


def accuracy_by_labels(table: pd.DataFrame, path: Path) -> Path:
    return _save(draw_accuracy_by_labels(table), path)
