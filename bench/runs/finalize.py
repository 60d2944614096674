"""The end of a search: its best config against the blog's defaults on fresh seeds, run as
a two-variant grid against the test set, and reported with the search's summary and
Optuna's figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sslbench.ablations.grid import Grid
from sslbench.bench.errors import UserError
from sslbench.bench.messages import Log, say
from sslbench.bench.runs.runner import run_grid
from sslbench.bench.runs.search import (
    SEARCH_SEED_BASE,
    final_grid,
    summary_lines,
)
from sslbench.bench.runs.settings import GridSettings
from sslbench.bench.store.names import grid_study_name, search_study_name
from sslbench.bench.store.runstore import RunStore, default_checkpoint_dir
from sslbench.reports.build import write_report


def optuna_figures(study: optuna.Study, out: Path) -> list[Path]:
    """Optimization history and parameter importances (Optuna's matplotlib backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    paths = []
    plots: list[tuple[str, Callable[..., Any]]] = [("optimization_history",
                                                    ovm.plot_optimization_history)]
    if sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) >= 2:
        plots.append(("param_importances", ovm.plot_param_importances))
    for name, plot in plots:
        axes = plot(study)
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = out / f"{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


def finalize(url: str, space: str, profile: str, *, seeds: int, workers: int, device: str,
             data_root: Path, out: Path, threads: int | None = None,
             log: Log = say) -> Path | None:
    """Run the final comparison (resumable, stored like a grid) and write its report with
    the search's summary and Optuna's figures; returns report.md's path, or None when a
    stop was asked (the finished cells are kept)."""
    store = RunStore(url, create=False)
    name = search_study_name(space, profile)
    if store.find_study(name) is None:
        raise UserError(f"the store {url} has no search {name!r}; run `sslbench search "
                        f"--space {space} --profile {profile}` first")
    study = optuna.load_study(study_name=name, storage=store.storage)
    grid = final_grid(study)
    overrides = study.user_attrs["settings"]["overrides"]  # the search's --set, no val split
    store.study_id(grid_study_name(grid.name, profile), {"grid": grid.name, "profile": profile,
                                                         "kind": "final", "search": name,
                                                         "variants": _variants_attr(grid)})
    settings = GridSettings(profile, tuple(range(seeds)), overrides=overrides,
                            data_root=data_root, workers=workers, device=device,
                            threads=threads, checkpoint_dir=default_checkpoint_dir(url))
    outcome = run_grid(grid, settings, store=store, log=log)
    if outcome.stopped:
        return None
    if outcome.failed:
        log(f"{len(outcome.failed)} final runs failed: {', '.join(outcome.failed)}")
    out.mkdir(parents=True, exist_ok=True)
    figures = optuna_figures(study, out)
    settings = study.user_attrs["settings"]
    search_seeds = range(SEARCH_SEED_BASE, SEARCH_SEED_BASE + settings["seeds_per_trial"])
    return write_report(store, grid.name, profile, out, preamble=[
        "## The search", *summary_lines(study),
        f"- search seeds: {', '.join(map(str, search_seeds))}; final seeds: "
        f"{', '.join(map(str, range(seeds)))} (never searched on)",
        f"- validation split: {settings['val_size']} training images, labels used only for "
        f"scoring; the test set was not read during the search",
        "", *[f"![{p.stem}]({p.name})" for p in figures], ""])


def _variants_attr(grid: Grid) -> list[dict[str, Any]]:
    return [{"name": v.name, "method": v.method, "overrides": dict(v.overrides),
             "description": v.description} for v in grid.variants]
