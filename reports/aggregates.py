"""Aggregates across tasks, as the field's reporting standard recommends (rliable).

Where a grid holds several tasks (label budgets, augmentations, datasets), a method's runs
on all of them are summarized together, after Agarwal et al. (2021, "Deep RL at the edge of
the statistical precipice"), with rliable's own metrics:
- the interquartile mean (IQM: the mean of the middle half of all runs x tasks), robust to
  a collapsed run or an outlier, with a 95% stratified bootstrap interval (runs resampled
  within each task, as rliable's StratifiedBootstrap does);
- the probability of improvement over the grid's reference method: P(a run of the method
  beats a run of the reference on the same task), averaged over tasks (Mann-Whitney).

rliable 1.2.0 pins `arch < 8`, and arch 7 fails to import with pandas 3; nox installs it
with `--no-deps` (its metrics need only numpy and scipy). Its bootstrap class passes
`random_state` to arch, which arch 8 refuses, so the resampling is done here (seeded, so a
rebuilt report is identical); the statistics are rliable's. Without rliable the report says
so in one line.

Accuracy in points; every run counts, a collapsed one at its accuracy (the collapse table
counts them; the IQM trims the lowest quarter of runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import pandas as pd

TASK_COLUMNS = ("dataset", "num_labels", "translate_px")
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
AGGREGATE_COLUMNS = ["method", "tasks", "runs_per_task", "iqm", "iqm_low", "iqm_high", "mean",
                     "p_improve_over_reference"]


def rliable_metrics() -> ModuleType | None:
    """rliable's metrics module, or None where rliable is not installed."""
    try:
        from rliable import metrics
    except ImportError:
        return None
    return metrics


def task_names(frame: pd.DataFrame) -> pd.Series:
    """Each run's task: the data settings that differ across the grid, e.g. `k=20`."""
    parts = []
    for column, label in (("dataset", ""), ("num_labels", "k="), ("translate_px", "shift=")):
        if column in frame and frame[column].nunique() > 1:
            parts.append(label + frame[column].astype(str))
    if not parts:
        return pd.Series(["all"] * len(frame), index=frame.index)
    names = parts[0]
    for part in parts[1:]:
        names = names + " " + part
    return names


def score_matrix(frame: pd.DataFrame, tasks: Sequence[str]) -> np.ndarray:
    """Runs x tasks accuracies of one method: each task's runs in seed order, cut to the
    fewest runs any task has (rliable's matrices are rectangular)."""
    columns = [frame.loc[frame["task"] == task].sort_values(["seed", "variant"])["accuracy"]
               .to_numpy(dtype=float) for task in tasks]
    runs = min(len(c) for c in columns)
    return np.stack([c[:runs] for c in columns], axis=1)


def iqm_interval(scores: np.ndarray, metrics: ModuleType, reps: int = BOOTSTRAP_REPS,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """The IQM of a runs x tasks matrix and its 95% stratified bootstrap interval."""
    point = float(metrics.aggregate_iqm(scores))
    rng = np.random.default_rng(seed)
    runs, tasks = scores.shape
    picks = rng.integers(0, runs, size=(reps, runs, tasks))  # rows within each task
    resampled = np.take_along_axis(scores[None, :, :].repeat(reps, axis=0), picks, axis=1)
    values = np.array([metrics.aggregate_iqm(sample) for sample in resampled])
    low, high = np.percentile(values, [2.5, 97.5])
    return point, float(low), float(high)


def aggregates(frame: pd.DataFrame, reference: str | None) -> pd.DataFrame | None:
    """Per method, its IQM over all tasks with an interval and its probability of
    improvement over `reference` (a method name); None without rliable. Empty where the
    grid has a single task (nothing to aggregate)."""
    metrics = rliable_metrics()
    if metrics is None:
        return None
    data = frame.assign(task=task_names(frame))
    tasks = sorted(data["task"].unique(), key=lambda t: (len(t), t))
    if len(tasks) < 2:
        return pd.DataFrame(columns=AGGREGATE_COLUMNS)
    matrices = {}
    for method, part in data.groupby("method", sort=True):
        if set(part["task"]) >= set(tasks) and part.groupby("task").size().min() >= 2:
            matrices[str(method)] = score_matrix(part, tasks)
    rows = []
    for method, scores in matrices.items():
        point, low, high = iqm_interval(scores, metrics)
        improve = (float(metrics.probability_of_improvement(scores, matrices[reference]))
                   if reference in matrices and reference != method else math.nan)
        rows.append({"method": method, "tasks": len(tasks), "runs_per_task": scores.shape[0],
                     "iqm": point, "iqm_low": low, "iqm_high": high,
                     "mean": float(metrics.aggregate_mean(scores)),
                     "p_improve_over_reference": improve})
    return pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)
