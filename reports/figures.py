"""Seaborn figures of a grid's results. Each function writes one PNG and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

DPI = 120


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def accuracy_strip(frame: pd.DataFrame, order: Sequence[str], path: Path) -> Path:
    """Per-seed test accuracy per variant: points over a box."""
    figure, axes = plt.subplots(figsize=(max(6, 1.1 * len(order)), 4))
    sns.boxplot(data=frame, x="variant", y="accuracy", order=order, color="0.9", ax=axes,
                showfliers=False)
    sns.stripplot(data=frame, x="variant", y="accuracy", order=order, hue="seed",
                  palette="tab10", size=7, jitter=0.15, ax=axes)
    axes.set(xlabel="", ylabel="test accuracy (%)", title="Final test accuracy per seed")
    axes.tick_params(axis="x", rotation=30)
    axes.legend(title="seed", fontsize=8, loc="lower left")
    return _save(figure, path)


def paired_forest(paired: pd.DataFrame, path: Path) -> Path:
    """Mean paired difference to each variant's baseline with its 95% t interval."""
    figure, axes = plt.subplots(figsize=(7, 0.5 * max(2, len(paired)) + 1.2))
    y = range(len(paired))
    axes.errorbar(paired["mean_diff"], list(y),
                  xerr=[paired["mean_diff"] - paired["ci_low"],
                        paired["ci_high"] - paired["mean_diff"]],
                  fmt="o", color="tab:blue", capsize=4)
    axes.axvline(0, color="0.4", linestyle="--", linewidth=1)
    # A difference of two accuracies lies in [-100, 100] points; t intervals from very few
    # seeds can reach past that and are cut at the edge.
    low = paired["ci_low"].fillna(paired["mean_diff"]).min()
    high = paired["ci_high"].fillna(paired["mean_diff"]).max()
    axes.set_xlim(max(-100.0, low - 1.0), min(100.0, high + 1.0))
    axes.set_yticks(list(y), [f"{v} - {b}" for v, b in
                              zip(paired["variant"], paired["baseline"], strict=True)])
    axes.invert_yaxis()
    axes.set(xlabel="accuracy difference to the baseline (points, 95% CI)",
             title="Paired differences (same seeds, same labeled subsets)")
    return _save(figure, path)


def learning_curves(curves: pd.DataFrame, order: Sequence[str], path: Path) -> Path:
    """Per-epoch curves, mean over seeds with a band (95% CI of the mean over seeds)."""
    metrics = [("test_accuracy", "test accuracy (%)"), ("supervised_loss", "supervised loss"),
               ("unsupervised_loss", "unsupervised loss"), ("weight", "unsupervised weight w")]
    figure, grid = plt.subplots(2, 2, figsize=(12, 8))
    for axes, (metric, label) in zip(grid.flat, metrics, strict=True):
        part = curves[curves["metric"] == metric]
        sns.lineplot(data=part, x="epoch", y="value", hue="variant", hue_order=order,
                     errorbar=("ci", 95), ax=axes, legend=metric == "test_accuracy")
        axes.set(ylabel=label, title=label)
        if metric.endswith("loss"):
            # Losses span decades and the baseline's unsupervised loss is exactly 0:
            # linear below 1e-4, logarithmic above, never negative.
            axes.set_yscale("symlog", linthresh=1e-4)
            axes.set_ylim(bottom=0)
    return _save(figure, path)


def throughput_bars(table: pd.DataFrame, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(max(6, 1.1 * len(table)), 4))
    sns.barplot(data=table, x="variant", y="train_images_per_s", color="tab:green", ax=axes)
    axes.set(xlabel="", ylabel="train images / s (median over epochs)",
             title="Training throughput per run")
    axes.tick_params(axis="x", rotation=30)
    return _save(figure, path)


def accuracy_by_labels(frame: pd.DataFrame, path: Path) -> Path:
    """Test accuracy against the number of labels per method: mean over seeds, 95% CI."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=frame, x="num_labels", y="accuracy", hue="method", style="method",
                 markers=True, dashes=False, errorbar=("ci", 95), err_style="bars",
                 ax=axes)
    ks = sorted(frame["num_labels"].unique())
    axes.set_xscale("log")
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.minorticks_off()
    axes.set(xlabel="labeled images (balanced)", ylabel="test accuracy (%)",
             title="Accuracy against the number of labels (mean over seeds, 95% CI)")
    return _save(figure, path)
