"""`sslbench export`: a store's grid runs and their per-epoch curves as flat tables.

Two tables, for pandas or any other tool (docs/api.md describes every column):
    runs    one row per grid cell: its latest attempt, finished or not, with the record's
            metrics, throughput, environment and the whole config as `config.<section>.<key>`
    curves  one row per finished run and epoch (from 1): every per-epoch curve the record
            holds, accuracies as fractions as stored

Written as CSV, and as Parquet too when pyarrow is installed. Units are the record's:
accuracies are fractions in [0, 1] (the reports print percentages), times in seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sslbench.bench.core.config import config_from_dict
from sslbench.bench.core.schema import Record
from sslbench.bench.errors import UserError
from sslbench.bench.files import check_writable
from sslbench.bench.store.names import grid_study_parts, is_grid_study
from sslbench.bench.store.runstore import CellRun, RunStore, latest_by_cell

# The fixed columns, in order; runs also get one `config.<section>.<key>` column per key.
RUN_COLUMNS = [
    "study", "grid", "profile", "settings", "cell", "variant", "seed", "state",
    "failure_kind", "failure", "run_id", "method", "final_test_accuracy",
    "lowest_train_loss_epoch", "lowest_train_loss_test_accuracy", "final_val_accuracy",
    "collapsed", "train_images_per_s_median", "epoch_seconds_median", "eval_seconds_median",
    "peak_memory_mib", "total_seconds", "stack_size", "precision", "device", "torch",
    "sslbench_version", "git_commit", "git_dirty", "started_at", "finished_at",
]
# Per epoch: the columns every record has; others it holds (val_accuracy with a validation
# split, <model>_test_accuracy for another evaluated model) are added after them.
CURVE_COLUMNS = [
    "study", "grid", "profile", "settings", "variant", "seed", "run_id", "epoch",
    "supervised_loss", "unsupervised_loss", "train_loss", "weight", "test_accuracy",
    "train_images_per_s", "epoch_seconds", "eval_seconds",
]


def _flat_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """`config.<section>.<key>` columns, as this code reads the config: a record stored
    before methods owned their knobs shows its method's own keys, as a new one does."""
    if not config:
        return {}
    with contextlib.suppress(UserError, KeyError, TypeError, ValueError):
        config = config_from_dict(config).to_dict()
    flat: dict[str, Any] = {"config.seed": config.get("seed")}
    for section, values in config.items():
        if isinstance(values, dict):
            flat.update({f"config.{section}.{key}": value for key, value in values.items()})
    return flat


def _run_row(study: str, run: CellRun) -> dict[str, Any]:
    grid, profile, settings = grid_study_parts(study)
    row: dict[str, Any] = {
        "study": study, "grid": grid, "profile": profile, "settings": settings,
        "cell": run.cell, "variant": run.variant, "seed": run.seed, "state": run.state,
        "failure_kind": run.failure_kind, "failure": (run.failure or "").split("\n")[0] or None,
    }
    if run.state == "COMPLETE" and run.record is not None:
        record = Record.from_dict(run.record)
        git = record.environment.get("git") or {}
        row.update({
            "run_id": record.run_id, "method": record.method,
            **{k: getattr(record.metrics, k) for k in (
                "final_test_accuracy", "lowest_train_loss_epoch",
                "lowest_train_loss_test_accuracy", "final_val_accuracy", "collapsed")},
            **{f"final_{name}_test_accuracy": value
               for name, value in record.metrics.evaluated.items()},
            **{k: getattr(record.throughput, k) for k in (
                "train_images_per_s_median", "epoch_seconds_median", "eval_seconds_median",
                "peak_memory_mib", "total_seconds", "stack_size", "precision")},
            "device": record.device, "torch": record.environment.get("torch"),
            "sslbench_version": record.environment.get("sslbench"),
            "git_commit": git.get("commit"), "git_dirty": git.get("dirty"),
            "started_at": record.started_at, "finished_at": record.finished_at,
        })
    return {**row, **_flat_config(run.record["config"] if run.record else run.config)}


def _curve_rows(study: str, run: CellRun) -> list[dict[str, Any]]:
    if run.state != "COMPLETE" or run.record is None:
        return []
    grid, profile, settings = grid_study_parts(study)
    record = Record.from_dict(run.record)
    per_epoch = {k: v for k, v in record.curves.items() if isinstance(v, list)}
    epochs = len(per_epoch.get("test_accuracy") or per_epoch.get("train_loss") or [])
    base = {"study": study, "grid": grid, "profile": profile, "settings": settings,
            "variant": run.variant, "seed": run.seed, "run_id": record.run_id}
    return [{**base, "epoch": epoch + 1,
             **{name: values[epoch] for name, values in per_epoch.items()
                if len(values) == epochs}}
            for epoch in range(epochs)]


def _ordered(rows: Sequence[dict[str, Any]], fixed: Sequence[str]) -> pd.DataFrame:
    extra = sorted({key for row in rows for key in row} - set(fixed))
    return pd.DataFrame(list(rows), columns=[*fixed, *extra])


def export_frames(store: RunStore, grid: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves) of every grid study in the store, or of `grid`'s studies only."""
    studies = [name for name in store.study_names() if is_grid_study(name)
               and (grid is None or grid_study_parts(name)[0] == grid)]
    if not studies:
        what = f"grid {grid!r}" if grid else "any grid"
        raise UserError(f"{store.url} holds no runs of {what}; check --storage (and --grid)")
    runs, curves = [], []
    for study in sorted(studies):
        study_id = store.find_study(study)
        assert study_id is not None  # listed just now; studies are never deleted
        for run in sorted(latest_by_cell(store.cell_runs(study_id)).values(),
                          key=lambda r: (r.variant, r.seed)):
            runs.append(_run_row(study, run))
            curves += _curve_rows(study, run)
    return _ordered(runs, RUN_COLUMNS), _ordered(curves, CURVE_COLUMNS)


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401  (pandas writes Parquet through it)
    except ImportError:
        return False
    return True


def write_export(store: RunStore, out: Path, grid: str | None = None) -> list[Path]:
    """Write runs.csv and curves.csv (and .parquet with pyarrow) into `out`; the paths."""
    runs, curves = export_frames(store, grid)
    check_writable(out)
    written = []
    for name, frame in (("runs", runs), ("curves", curves)):
        path = out / f"{name}.csv"
        part = path.with_suffix(".csv.part")  # whole files only: a reader never sees half
        frame.to_csv(part, index=False)
        part.replace(path)
        written.append(path)
        if parquet_available():
            parquet = out / f"{name}.parquet"
            part = parquet.with_suffix(".parquet.part")
            frame.to_parquet(part, index=False)
            part.replace(parquet)
            written.append(parquet)
    return written
