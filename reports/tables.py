"""From stored cell runs to tables (pandas). Pure functions: no I/O.

Accuracies in these tables are percentages (0-100) of the 10,000 MNIST test images (or
the profile's test slice), at the last epoch unless the column says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.store import CellRun
from reports.stats import holm, paired_comparison, summarize, verdict


def runs_frame(runs: Sequence[CellRun]) -> pd.DataFrame:
    """One row per finished cell: variant, seed, accuracies (%), throughput, device."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        if run.state != "COMPLETE" or run.record is None:
            continue
        record = run.record
        metrics, throughput = record["metrics"], record["throughput"]
        data = record["config"]["data"]
        rows.append({
            "variant": run.variant,
            "seed": run.seed,
            "method": record["method"],
            "dataset": data["dataset"],
            "num_labels": data["num_labels"],
            "translate_px": data.get("translate_px", 0),
            "accuracy": 100 * metrics["final_test_accuracy"],
            "blog_accuracy": 100 * metrics["lowest_train_loss_test_accuracy"],
            "collapsed": bool(metrics["collapsed"]),
            # of the whole stack when seeds were trained together: all its runs' images
            "train_images_per_s": throughput["train_images_per_s_median"],
            "stack": throughput.get("stack_size", 1),
            "precision": throughput.get("precision", "fp32"),  # records before it: fp32
            "epoch_seconds": throughput["epoch_seconds_median"],
            "peak_memory_mib": throughput["peak_memory_mib"],
            "total_seconds": throughput["total_seconds"],
            "device": record["environment"]["device"],
        })
    columns = ["variant", "seed", "method", "dataset", "num_labels", "translate_px", "accuracy",
               "blog_accuracy", "collapsed", "train_images_per_s", "stack", "precision",
               "epoch_seconds",
               "peak_memory_mib", "total_seconds", "device"]
    return pd.DataFrame(rows, columns=columns).sort_values(["variant", "seed"], ignore_index=True)


def failures_frame(runs: Sequence[CellRun]) -> pd.DataFrame:
    rows = [{"cell": r.cell, "kind": r.failure_kind or "unknown",
             "reason": (r.failure or "").splitlines()[0] if r.failure else ""}
            for r in runs if r.state == "FAIL"]
    return pd.DataFrame(rows, columns=["cell", "kind", "reason"])


def variant_summary(frame: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Per variant: n, mean, std, 95% bootstrap CI of the mean, median, min, max, collapses."""
    rows = []
    for variant in order:
        part = frame[frame["variant"] == variant]
        s = summarize(part["accuracy"].to_numpy())
        rows.append({"variant": variant, "n": s.n, "mean": s.mean, "std": s.std,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "median": s.median,
                     "min": s.min, "max": s.max, "collapses": int(part["collapsed"].sum()),
                     "blog_figure_mean": float(part["blog_accuracy"].mean())
                     if len(part) else math.nan})
    return pd.DataFrame(rows)


def per_seed(frame: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Accuracy (%) with seeds as rows and variants as columns."""
    table = frame.pivot(index="seed", columns="variant", values="accuracy")
    return table.reindex(columns=[v for v in order if v in table.columns])


def paired_against_baselines(frame: pd.DataFrame, order: Sequence[str],
                             baselines: Mapping[str, str | None]) -> pd.DataFrame:
    """Each variant minus its baseline on the seeds both finished, Holm over the family.

    `baselines` maps a variant to the variant it is compared with (None: not compared).
    """
    table = per_seed(frame, order)
    rows = []
    for variant in order:
        baseline = baselines.get(variant)
        if baseline is None or variant not in table or baseline not in table:
            continue
        both = table[[baseline, variant]].dropna()
        c = paired_comparison(both[baseline].to_numpy(), both[variant].to_numpy())
        rows.append({"variant": variant, "baseline": baseline, "n": c.n,
                     "mean_diff": c.mean_diff, "ci_low": c.ci_low, "ci_high": c.ci_high,
                     "t_p": c.t_p, "wilcoxon_p": c.wilcoxon_p, "d_z": c.d_z})
    result = pd.DataFrame(rows, columns=["variant", "baseline", "n", "mean_diff", "ci_low",
                                         "ci_high", "t_p", "wilcoxon_p", "d_z"])
    result["holm_p"] = holm(result["t_p"].tolist()) if len(result) else []
    result["verdict"] = [verdict(d, p, n) for d, p, n in
                         zip(result["mean_diff"], result["holm_p"], result["n"], strict=True)]
    return result


def by_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method and label count k: n, mean accuracy (%) and its 95% bootstrap CI."""
    rows = []
    for (method, k), part in frame.groupby(["method", "num_labels"], sort=True):
        s = summarize(part["accuracy"].to_numpy())
        rows.append({"method": method, "num_labels": int(k), "n": s.n, "mean": s.mean,
                     "ci_low": s.ci_low, "ci_high": s.ci_high,
                     "collapses": int(part["collapsed"].sum())})
    return pd.DataFrame(rows, columns=["method", "num_labels", "n", "mean", "ci_low", "ci_high",
                                       "collapses"])


def throughput(frame: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Per variant: median train images/s, epoch seconds and peak memory over its runs."""
    rows = []
    for variant in order:
        part = frame[frame["variant"] == variant]
        if part.empty:
            continue
        rows.append({"variant": variant, "runs": len(part),
                     "stack": int(np.median(part["stack"])),
                     "precision": ", ".join(sorted(set(part["precision"]))),
                     "train_images_per_s": float(np.median(part["train_images_per_s"])),
                     "epoch_seconds": float(np.median(part["epoch_seconds"])),
                     "peak_memory_mib": float(np.median(part["peak_memory_mib"])),
                     "device": ", ".join(sorted(set(part["device"])))})
    return pd.DataFrame(rows)


def curves_frame(runs: Sequence[CellRun]) -> pd.DataFrame:
    """Long format per epoch: variant, seed, epoch (from 1), metric, value."""
    rows = []
    for run in runs:
        if run.state != "COMPLETE" or run.record is None:
            continue
        curves = run.record["curves"]
        for metric in ("test_accuracy", "supervised_loss", "unsupervised_loss", "weight"):
            for epoch, value in enumerate(curves.get(metric, []), start=1):
                scale = 100 if metric == "test_accuracy" else 1
                rows.append({"variant": run.variant, "seed": run.seed, "epoch": epoch,
                             "metric": metric, "value": scale * value})
    return pd.DataFrame(rows, columns=["variant", "seed", "epoch", "metric", "value"])
