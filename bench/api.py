"""The public Python API, for notebooks and scripts (docs/api.md).

    from sslbench.bench import api

    runs, curves = api.load_store("sqlite:///sslbench.db")          # pandas, one row per run
    config = api.build_config("temporal_ensembling", seed=0, profile="smoke")
    record = api.run_one(config)                                     # the stored record (dict)
    outcome = api.run_grid("mnist100", "smoke", seeds=[0, 1], storage="sqlite:///my.db")

Everything else in the package may change between versions; these names and the record
schema (`api.SCHEMA_VERSION`, docs/api.md) are what a release keeps. Methods, grids,
datasets and networks of your own: register them first (README, "Add your own method",
"Add your own dataset", "Add your own network"), or `api.load_plugins`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.datasets import DatasetSpec, RawFile, register_dataset
from sslbench.bench.core.imagefiles import ImageSplits
from sslbench.bench.core.networks import Network, NetworkContext, register_model
from sslbench.bench.core.overrides import build_config
from sslbench.bench.core.schema import SCHEMA_VERSION, Record
from sslbench.bench.plugins import load_plugins

if TYPE_CHECKING:
    import pandas as pd

    from sslbench.bench.runs.runner import GridOutcome

__all__ = ["SCHEMA_VERSION", "DatasetSpec", "ImageSplits", "Network", "NetworkContext",
           "RawFile", "Record", "RunConfig", "build_config", "load_plugins", "load_store",
           "register_dataset", "register_model", "run_grid", "run_one"]


def load_store(storage: str, grid: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves) of a store's grids, the tables `sslbench export` writes: one row per
    cell's latest attempt, and one per finished run and epoch. Reads; never creates."""
    from sslbench.bench.store.runstore import RunStore
    from sslbench.reports.export import export_frames

    return export_frames(RunStore(storage, read_only=True), grid)


def run_one(config: RunConfig, *, device: str = "auto", data_root: Path | None = None,
            threads: int | None = None) -> dict[str, Any]:
    """Train one config and return its record (the dict a store holds; `Record.from_dict`
    types it). Nothing is written: save it with json if you want it kept."""
    import torch

    from sslbench.bench.core.datasets import default_root, get_dataset, verify
    from sslbench.bench.core.device import resolve_device
    from sslbench.bench.core.record import build_record, git_commit
    from sslbench.bench.core.train import single_run

    git_commit()  # the code that trains, read before it does
    root = data_root or default_root()
    verify(root, get_dataset(config.data.dataset))
    resolved = resolve_device(device)
    if resolved.type == "cpu" and threads is not None:
        torch.set_num_threads(threads)
    started = dt.datetime.now(dt.UTC)
    result = single_run(config, device=resolved, data_root=root)
    return build_record(config, result, resolved, started)


def run_grid(grid: str, profile: str, seeds: Sequence[int], *, storage: str,
             variants: Sequence[str] | None = None, overrides: Mapping[str, str] | None = None,
             workers: int = 1, device: str = "auto", data_root: Path | None = None,
             **options: Any) -> GridOutcome:
    """Run a registered grid's unfinished cells into the store at `storage` (created if
    missing), as `sslbench ablate` does; `options` are the other fields of
    bench.runs.settings.GridSettings (threads, stack, checkpoint_dir, ...)."""
    from sslbench.ablations import get_grid
    from sslbench.bench.core.datasets import default_root
    from sslbench.bench.runs.runner import run_grid as run_grid_cells
    from sslbench.bench.runs.settings import GridSettings
    from sslbench.bench.store.runstore import RunStore

    settings = GridSettings(profile, tuple(seeds),
                            variants=tuple(variants) if variants is not None else None,
                            overrides=dict(overrides or {}), workers=workers, device=device,
                            data_root=data_root or default_root(), **options)
    return run_grid_cells(get_grid(grid), settings, store=RunStore(storage))
