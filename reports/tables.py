"""From stored cell runs to tables (pandas). Pure functions: no I/O.

Accuracies in these tables are percentages (0-100) of the 10,000 MNIST test images (or
the profile's test slice), at the last epoch unless the column says otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from sslbench.bench.core.schema import Record
from sslbench.bench.store.runstore import CellRun
from sslbench.reports.stats import (
    ALPHA,
    DEFAULT_SESOI,
    clopper_pearson,
    decide,
    detectable_effect,
    holm,
    paired_comparison,
    paired_rate_p,
    probability_of_improvement,
    summarize,
    t_interval,
    tail_median,
    tost_paired,
)

# The per-run figures a report can take as its headline (`sslbench report --metric`).
METRICS = {
    "tail_median": "median test accuracy over the last 10% of epochs (at least 3)",
    "final": "test accuracy at the last epoch",
    "lowest_train_loss": "test accuracy at the epoch of lowest training loss (the blog's)",
}
DEFAULT_METRIC = "tail_median"


CODE_SEPARATOR = ", "  # between a run's code versions in the runs table's `code` column


def runs_frame(runs: Sequence[CellRun], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """One row per finished cell: variant, seed, accuracies (%), throughput, device.

    `accuracy` is the headline `metric` (one of METRICS); the three figures stand beside it
    as `tail_median`, `final` and `blog_accuracy` (lowest training loss)."""
    if metric not in METRICS:
        from sslbench.bench.errors import UserError

        raise UserError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    rows: list[dict[str, Any]] = []
    for run in runs:
        if run.state != "COMPLETE" or run.record is None:
            continue
        record = Record.from_dict(run.record)
        metrics, throughput, data = record.metrics, record.throughput, record.data
        figures = {"final": 100 * metrics.final_test_accuracy,
                   "tail_median": 100 * tail_median(record.test_accuracy),
                   "lowest_train_loss": 100 * metrics.lowest_train_loss_test_accuracy}
        rows.append({
            "variant": run.variant,
            "seed": run.seed,
            "method": record.method,
            "dataset": data["dataset"],
            "num_labels": data["num_labels"],
            "translate_px": data.get("translate_px", 0),  # configs before augmentation: 0
            "accuracy": figures[metric],
            "tail_median": figures["tail_median"],
            "final": figures["final"],
            "blog_accuracy": figures["lowest_train_loss"],
            "collapsed": metrics.collapsed,
            # of the whole stack when seeds were trained together: all its runs' images
            "train_images_per_s": throughput.train_images_per_s_median,
            "stack": throughput.stack_size,
            "precision": throughput.precision,
            "epoch_seconds": throughput.epoch_seconds_median,
            "peak_memory_mib": throughput.peak_memory_mib,
            "total_seconds": throughput.total_seconds,
            "device": record.device,
            # every code version that trained it (each segment of a resumed run)
            "code": CODE_SEPARATOR.join(record.code_versions),
        })
    columns = ["variant", "seed", "method", "dataset", "num_labels", "translate_px", "accuracy",
               "tail_median", "final", "blog_accuracy", "collapsed", "train_images_per_s", "stack",
               "precision", "epoch_seconds", "peak_memory_mib", "total_seconds", "device", "code"]
    return pd.DataFrame(rows, columns=columns).sort_values(["variant", "seed"], ignore_index=True)


# An absolute path inside a failure's reason (a checkpoint's, a data file's): a report
# shows its file name only, since the folder is the machine's, not the result's.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:])/(?:[^\s/|]+/)+([^\s/|]+)")


def failures_frame(runs: Sequence[CellRun]) -> pd.DataFrame:
    rows = [{"cell": r.cell, "kind": r.failure_kind or "unknown",
             "reason": ABSOLUTE_PATH.sub(r".../\1", (r.failure or "").splitlines()[0])
             if r.failure else ""}
            for r in runs if r.state == "FAIL"]
    return pd.DataFrame(rows, columns=["cell", "kind", "reason"])


def variant_summary(frame: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Per variant: collapses counted apart (count, rate and its Clopper-Pearson interval),
    the mean over all runs, and over the runs that did not collapse the mean with its 95% t
    interval, sd, median and range; the three per-run figures' means beside the headline."""
    rows = []
    for variant in order:
        part = frame[frame["variant"] == variant]
        fine = part[~part["collapsed"]]
        n, collapses = len(part), int(part["collapsed"].sum())
        rate_low, rate_high = clopper_pearson(collapses, n)
        s = summarize(fine["accuracy"].to_numpy())
        low, high = t_interval(fine["accuracy"].to_numpy())
        rows.append({"variant": variant, "n": n, "collapses": collapses,
                     "collapse_rate": 100 * collapses / n if n else math.nan,
                     "rate_ci_low": 100 * rate_low, "rate_ci_high": 100 * rate_high,
                     "mean_all": float(part["accuracy"].mean()) if n else math.nan,
                     "n_ok": s.n, "mean": s.mean, "t_ci_low": low, "t_ci_high": high,
                     "std": s.std, "median": s.median, "min": s.min, "max": s.max,
                     "final_mean": float(fine["final"].mean()) if s.n else math.nan,
                     "blog_figure_mean": float(fine["blog_accuracy"].mean())
                     if s.n else math.nan})
    return pd.DataFrame(rows)


def per_seed(frame: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Accuracy (%) with seeds as rows and variants as columns."""
    table = frame.pivot(index="seed", columns="variant", values="accuracy")
    return table.reindex(columns=[v for v in order if v in table.columns])


PAIRED_COLUMNS = ["variant", "baseline", "n", "dropped_seeds", "mean_diff", "ci_low", "ci_high",
                  "sd_diff", "t_p", "wilcoxon_p", "d_z", "holm_p", "tost_p", "tost_holm_p",
                  "wins", "p_improve", "p_improve_low", "p_improve_high", "detectable",
                  "collapses", "collapse_p", "code_versions", "verdict", "decision"]


def paired_against_baselines(frame: pd.DataFrame, order: Sequence[str],
                             baselines: Mapping[str, str | None],
                             family: Sequence[str] | None = None,
                             sesoi: float = DEFAULT_SESOI, alpha: float = ALPHA,
                             adjust: bool = True, declared: Sequence[str] = ()) -> pd.DataFrame:
    """Each variant minus its baseline on the seeds where both finished and neither
    collapsed (the dropped seeds are listed; collapse rates are compared apart, by an exact
    McNemar test on all shared seeds).

    `baselines` maps a variant to the variant it is compared with (None: not compared).
    Holm adjusts over the `family` (default: every compared variant) and the members of the
    `declared` family that have no paired seeds yet: each counts as a hypothesis with p = 1,
    so a family that is not complete is never adjusted more leniently
    than the declared one. With adjust=False (reference checks) each comparison is tested
    alone at alpha and `holm_p` is its own p.
    """
    table = per_seed(frame, order)
    collapsed = frame.pivot(index="seed", columns="variant", values="collapsed")
    codes = frame.pivot(index="seed", columns="variant", values="code") \
        if "code" in frame else None
    rows = []
    for variant in order:
        baseline = baselines.get(variant)
        if baseline is None or variant not in table or baseline not in table:
            continue
        if family is not None and variant not in family:
            continue
        shared = table[[baseline, variant]].dropna().index
        failed = collapsed.loc[shared, [baseline, variant]].astype(bool)
        ok = shared[~(failed[baseline] | failed[variant]).to_numpy()]
        both = table.loc[ok, [baseline, variant]]
        a, b = both[baseline].to_numpy(), both[variant].to_numpy()
        c = paired_comparison(a, b)
        diffs = b - a
        sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan
        improve, improve_low, improve_high = probability_of_improvement(diffs)
        rows.append({"variant": variant, "baseline": baseline, "n": c.n,
                     "dropped_seeds": " ".join(str(s) for s in shared if s not in set(ok)),
                     "mean_diff": c.mean_diff, "ci_low": c.ci_low, "ci_high": c.ci_high,
                     "sd_diff": sd, "t_p": c.t_p, "wilcoxon_p": c.wilcoxon_p, "d_z": c.d_z,
                     "tost_p": tost_paired(a, b, sesoi),
                     "wins": f"{int(np.sum(diffs > 0))}/{len(diffs)}",
                     "p_improve": improve, "p_improve_low": improve_low,
                     "p_improve_high": improve_high,
                     "detectable": detectable_effect(sd, c.n, alpha),
                     "collapses": f"{int(failed[variant].sum())} vs {int(failed[baseline].sum())}",
                     "collapse_p": paired_rate_p(failed[baseline].to_numpy(),
                                                 failed[variant].to_numpy()),
                     "code_versions": " + ".join(sorted(
                         {v for seed in ok for name in (baseline, variant)
                          for v in str(codes.loc[seed, name]).split(CODE_SEPARATOR)}))
                     if codes is not None else ""})
    result = pd.DataFrame(rows, columns=[c for c in PAIRED_COLUMNS
                                         if c not in ("holm_p", "tost_holm_p", "verdict",
                                                      "decision")])
    unrun = [v for v in declared if v not in set(result["variant"])]
    placeholders = [1.0] * len(unrun) if adjust else []

    def adjusted(p_values: list[float]) -> list[float]:
        if not adjust or not p_values:
            return p_values
        return holm(p_values + placeholders)[:len(p_values)]

    result["holm_p"] = adjusted(result["t_p"].tolist())
    result["tost_holm_p"] = adjusted(result["tost_p"].tolist())
    family_size = len(result) + len(placeholders) if adjust else 1
    decisions = [decide(row.mean_diff, row.holm_p, row.tost_holm_p, row.n, row.sd_diff,
                        sesoi, family_size, alpha) for row in result.itertuples()]
    result["verdict"] = [d.text for d in decisions]
    result["decision"] = [d.word for d in decisions]
    return result[PAIRED_COLUMNS]


def reproduction(frame: pd.DataFrame, references: Mapping[str, Any], profile: str,
                 sesoi: float = DEFAULT_SESOI) -> pd.DataFrame:
    """Ours beside published values, per referenced variant and per-run figure: our mean
    over runs that did not collapse, the published mean and population sd (ddof 0, as
    published), the difference with its 95% Welch interval (one-sample t against a single
    published figure), and a plain-words verdict."""
    rows = []
    for variant, published in references.items():
        part = frame[(frame["variant"] == variant) & ~frame["collapsed"]]
        values = np.asarray(published.values, dtype=float)
        for figure, column in (("lowest_train_loss", "blog_accuracy"), ("final", "final"),
                               ("tail_median", "tail_median")):
            ours = part[column].to_numpy()
            diff = float(ours.mean() - values.mean()) if len(ours) else math.nan
            if len(ours) >= 2 and len(values) >= 2:
                welch = stats.ttest_ind(ours, values, equal_var=False)
                low, high = welch.confidence_interval(0.95)
                p = float(welch.pvalue)
            elif len(ours) >= 2:
                low, high = (x - values.mean() for x in t_interval(ours))
                p = float(stats.ttest_1samp(ours, values.mean()).pvalue)
            else:
                low = high = p = math.nan
            if math.isnan(p):
                words = f"undetermined: {len(ours)} of our runs"
            elif -sesoi <= low and high <= sesoi:
                words = (f"reproduced: the difference lies within ±{sesoi:g} points "
                         f"([{low:+.2f}, {high:+.2f}])")
            elif low <= 0 <= high:
                words = (f"inconclusive: not told apart from the published value, but the "
                         f"interval [{low:+.2f}, {high:+.2f}] is wider than ±{sesoi:g} points")
            else:
                words = f"{'above' if diff > 0 else 'below'} the published value (p={p:.3g})"
            if profile != published.profile:
                words = f"not the published protocol ({profile}, not {published.profile}): " \
                        + words
            if figure != published.metric:
                words += f"; the published figure is `{published.metric}`"
            rows.append({"variant": variant, "figure": figure, "n": len(ours),
                         "ours_mean": float(ours.mean()) if len(ours) else math.nan,
                         "ours_sd": float(ours.std(ddof=1)) if len(ours) > 1 else math.nan,
                         "published_n": len(values), "published_mean": float(values.mean()),
                         "published_sd_ddof0": float(values.std()) if len(values) > 1
                         else math.nan,
                         "diff": diff, "ci_low": float(low), "ci_high": float(high),
                         "p": p, "source": published.source, "verdict": words})
    return pd.DataFrame(rows, columns=["variant", "figure", "n", "ours_mean", "ours_sd",
                                       "published_n", "published_mean", "published_sd_ddof0",
                                       "diff", "ci_low", "ci_high", "p", "source", "verdict"])


def by_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method and label count k: configs, seeds, runs, collapses, and the mean accuracy
    (%) with its 95% t interval, with the seed as the unit.

    Several configs of one method at one k (the variants of a grid) share seeds: the same
    seed draws the same labeled subset, so their runs are not independent. Each seed's runs
    that did not collapse are averaged first, and the interval is over those seed means
    (n = seeds), never over the pooled runs as if each were a fresh draw."""
    rows = []
    for (method, k), part in frame.groupby(["method", "num_labels"], sort=True):
        fine = part.loc[~part["collapsed"]]
        per_seed_mean = fine.groupby("seed")["accuracy"].mean().to_numpy()
        low, high = t_interval(per_seed_mean)
        rows.append({"method": method, "num_labels": int(k),
                     "configs": int(part["variant"].nunique()),
                     "seeds": int(part["seed"].nunique()), "n": len(part),
                     "collapses": int(part["collapsed"].sum()),
                     "mean": float(per_seed_mean.mean()) if len(per_seed_mean) else math.nan,
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["method", "num_labels", "configs", "seeds", "n",
                                       "collapses", "mean", "ci_low", "ci_high"])


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
        curves = Record.from_dict(run.record).curves
        for metric in ("test_accuracy", "supervised_loss", "unsupervised_loss", "weight"):
            for epoch, value in enumerate(curves.get(metric, []), start=1):
                scale = 100 if metric == "test_accuracy" else 1
                rows.append({"variant": run.variant, "seed": run.seed, "epoch": epoch,
                             "metric": metric, "value": scale * value})
    return pd.DataFrame(rows, columns=["variant", "seed", "epoch", "metric", "value"])
