"""Section 4, paper_slice: the grid's first epochs in the configuration the bench found
fastest, timed in a process of its own; then the whole grid's wall time as a projection."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslbench.bench.measure.gpucheck.document import Check
from sslbench.bench.measure.gpucheck.options import EVAL_SHARE, GRID, Options, Sizes
from sslbench.bench.measure.gpucheck.process import SectionFile, run_child
from sslbench.bench.messages import say

if TYPE_CHECKING:
    from sslbench.bench.runs.runner import GridOutcome
    from sslbench.bench.store.runstore import CellRun, RunStore


# -- in the parent: the plan and its estimate --------------------------------------------------


def slice_plan(check: Check) -> dict[str, Any]:
    """The slice's (workers, stack): the bench's fastest if it measured one, else the
    runner's defaults; and the most epochs (up to --epochs-slice) that fit in the time
    left, at least the minimum (the parent skips the slice when even that does not fit)."""
    options, sizes = check.options, check.options.sizes
    bench = check.section("bench")
    fastest = bench.get("result", {}).get("fastest") if bench["status"] in ("ok", "timeout") \
        else None
    variants = len(sizes.slice_variants) or _grid_variants()
    if fastest:
        workers, stack = fastest["workers"], fastest["stack"]
        # The bench's epoch on its own slice, scaled to the slice's training images.
        scale = _slice_train_images(sizes) / sizes.bench_train_size
        epoch_s = fastest["epoch_seconds"] * scale * EVAL_SHARE
        source = f"bench: fastest measurement {fastest['measurement']!r}"
    else:
        on_cuda = options.device.startswith("cuda")
        workers = 1 if on_cuda else min(os.cpu_count() or 1, variants * sizes.slice_seeds)
        stack = sizes.slice_seeds if on_cuda else 1
        epoch_s = sizes.slice_epoch_s
        source = f"the runner's defaults (the bench section is {bench['status']})"
    plan = {"workers": workers, "stack": stack, "config_source": source,
            "job_start_s": sizes.job_start_s, "epoch_s_estimate": round(epoch_s, 3),
            "variants": variants,
            "rounds": math.ceil(variants * math.ceil(sizes.slice_seeds / stack) / workers)}
    fitting = [n for n in range(sizes.slice_min_epochs, options.epochs_slice + 1)
               if slice_estimate_s(plan, n) <= check.left_s()]
    plan["epochs"] = max(fitting, default=min(sizes.slice_min_epochs, options.epochs_slice))
    return plan


def slice_estimate_s(plan: dict[str, Any], epochs: int) -> float:
    """Rounds of jobs, each its start-up and its epochs."""
    return float(plan["rounds"] * (plan["job_start_s"] + epochs * plan["epoch_s_estimate"]))


def _slice_train_images(sizes: Sizes) -> int:
    from sslbench.bench.core.datasets import MNIST_TRAIN
    from sslbench.bench.core.profiles import get_profile

    return get_profile(sizes.slice_profile).train_size or MNIST_TRAIN


def _grid_variants() -> int:
    from sslbench.ablations import get_grid

    return len(get_grid(GRID).variants)


def run_paper_slice(check: Check, reserve_s: float) -> dict[str, Any]:
    """The slice in its own process, in the planned configuration and epochs; the plan is
    kept in the result."""
    plan = slice_plan(check)
    outcome = run_child(replace(check.options, epochs_slice=plan["epochs"]), "paper_slice",
                        "--slice-workers", str(plan["workers"]),
                        "--slice-stack", str(plan["stack"]),
                        timeout_s=check.left_s(), reserve_s=reserve_s)
    outcome["result"] = {"plan": plan, **outcome.get("result", {})}
    return outcome


# -- in the section's process: the grid, timed -------------------------------------------------


def child_slice(options: Options, deadline: float, partial: SectionFile, workers: int,
                stack: int) -> dict[str, Any]:
    """The grid's first epochs in a fresh store, its wall time, and the projection; raises
    when a cell failed or none finished (after writing what there was)."""
    from sslbench.bench.core.datasets import MNIST, verify
    from sslbench.bench.store.runstore import RunStore

    del deadline  # the epochs were fitted to it by the parent, which kills at the budget
    sizes, epochs = options.sizes, options.epochs_slice
    verify(options.root, MNIST)
    seeds = list(range(sizes.slice_seeds))
    store_path = options.out / "slice.db"
    # A fresh store: one holding these cells would skip them as finished and time nothing.
    store_path.unlink(missing_ok=True)
    store = RunStore(f"sqlite:///{store_path}")
    result: dict[str, Any] = {"grid": GRID, "profile": sizes.slice_profile, "seeds": seeds,
                              "epochs": epochs, "workers": workers, "stack": stack,
                              "variants": list(sizes.slice_variants) or "all",
                              "store": store_path.name}
    partial.write("running", result)
    started = time.monotonic()
    outcome = _run_slice_grid(options, store, seeds, workers, stack)
    wall_s = time.monotonic() - started
    cells = _slice_cells(store, sizes.slice_profile)
    finished = [run for run in cells.values() if run.state == "COMPLETE" and run.record]
    records = [run.record for run in finished if run.record]
    result.update(wall_s=round(wall_s, 1), cells_finished=len(records),
                  cells_failed=sorted(outcome.failed), accuracy=_accuracy_by_variant(finished))
    if records:
        result["projection"] = _slice_projection(records, wall_s, options, workers=workers,
                                                 stack=stack, seeds=len(seeds))
    if outcome.failed or not records:
        partial.write("running", result)
        reasons = {run.cell: run.failure for run in cells.values() if run.state != "COMPLETE"}
        raise RuntimeError(f"{len(outcome.failed)} of the slice's cells failed: "
                           + "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))[:400])
    return result


def _run_slice_grid(options: Options, store: RunStore, seeds: list[int], workers: int,
                    stack: int) -> GridOutcome:
    """The grid's cells at the slice's epochs (`--set train.epochs=N`), checkpoints in a
    temporary folder."""
    from sslbench.ablations import get_grid
    from sslbench.bench.runs.runner import run_grid
    from sslbench.bench.runs.settings import GridSettings

    sizes = options.sizes
    with tempfile.TemporaryDirectory(prefix="gpucheck-ckpt-") as checkpoints:
        settings = GridSettings(sizes.slice_profile, tuple(seeds),
                                variants=tuple(sizes.slice_variants) or None,
                                overrides={"train.epochs": str(options.epochs_slice)},
                                data_root=options.root, workers=workers, device=options.device,
                                stack=stack, checkpoint_dir=Path(checkpoints))
        return run_grid(get_grid(GRID), settings, store=store, log=say)


def _slice_cells(store: RunStore, profile: str) -> dict[str, CellRun]:
    """The slice's cells as stored, the latest attempt at each."""
    from sslbench.bench.store.names import grid_study_name
    from sslbench.bench.store.runstore import latest_by_cell

    study = store.find_study(grid_study_name(GRID, profile))
    return latest_by_cell(store.cell_runs(study)) if study is not None else {}


def _slice_projection(records: Sequence[dict[str, Any]], wall_s: float, options: Options, *,
                      workers: int, stack: int, seeds: int) -> dict[str, Any]:
    """`project` on the slice's records: the grid's variants and the profile's epochs."""
    from sslbench.ablations import get_grid
    from sslbench.bench.core.profiles import get_profile

    sizes = options.sizes
    return project(
        [_epoch_cost_s(r) for r in records], wall_s, workers=workers, stack=stack,
        seeds=seeds, epochs_run=options.epochs_slice,
        epochs_full=get_profile(sizes.slice_profile).epochs,
        variants_run=len(sizes.slice_variants) or len(get_grid(GRID).variants),
        variants_full=len(get_grid(GRID).variants))


def _epoch_cost_s(record: dict[str, Any]) -> float:
    """A run's steady epoch: training steps plus evaluation, median over epochs after the
    first (its job's: the runs of a stack share them)."""
    from sslbench.bench.core.throughput import steady_median

    curves = record["curves"]
    return steady_median(curves["epoch_seconds"]) + steady_median(curves["eval_seconds"])


def _accuracy_by_variant(runs: Sequence[Any]) -> dict[str, list[float]]:
    """Final test accuracy per variant (bench.store.CellRun), in seed order."""
    by_variant: dict[str, list[float]] = {}
    for run in sorted(runs, key=lambda r: (r.variant, r.seed)):
        by_variant.setdefault(run.variant, []).append(run.record["metrics"]["final_test_accuracy"])
    return by_variant


def project(epoch_costs_s: Sequence[float], wall_s: float, *, workers: int, stack: int,
            seeds: int, epochs_run: int, epochs_full: int, variants_run: int,
            variants_full: int) -> dict[str, Any]:
    """The whole grid's wall time at the full epochs, from the slice's (a projection).

    A job is up to `stack` seeds of one variant; `workers` jobs run at once, so the jobs
    run in rounds of `workers`. Each round costs a start-up (what the slice's wall time
    holds beyond its epochs) plus its epochs at the slice's steady epoch cost (training
    and evaluation, measured with `workers` jobs sharing the device). The slice's wall
    time scaled linearly (start-up included at every epoch) is an upper bound.
    """
    epoch_s = sum(epoch_costs_s) / len(epoch_costs_s)
    jobs_run = variants_run * math.ceil(seeds / stack)
    jobs_full = variants_full * math.ceil(seeds / stack)
    rounds_run, rounds_full = math.ceil(jobs_run / workers), math.ceil(jobs_full / workers)
    start_s = max(0.0, wall_s - rounds_run * epochs_run * epoch_s) / rounds_run
    projected_s = rounds_full * (start_s + epochs_full * epoch_s)
    upper_s = wall_s * (epochs_full / epochs_run) * (rounds_full / rounds_run)
    return {
        "epoch_s": round(epoch_s, 3), "start_s_per_round": round(start_s, 2),
        "jobs_full": jobs_full, "rounds_full": rounds_full, "rounds_run": rounds_run,
        "epochs_full": epochs_full, "projected_wall_s": round(projected_s),
        "upper_bound_s": round(upper_s),
        "arithmetic": (
            f"{variants_full} variants x ceil({seeds} seeds / stack {stack}) = {jobs_full} "
            f"jobs; ceil({jobs_full} / {workers} workers) = {rounds_full} rounds; each round "
            f"{start_s:.1f} s start-up (slice: {wall_s:.1f} s wall - {rounds_run} rounds x "
            f"{epochs_run} epochs x {epoch_s:.2f} s, per round) + {epochs_full} epochs x "
            f"{epoch_s:.2f} s = {projected_s:,.0f} s ({projected_s / 3600:.2f} h); upper "
            f"bound {wall_s:.1f} s x {epochs_full}/{epochs_run} x {rounds_full}/{rounds_run} "
            f"= {upper_s:,.0f} s ({upper_s / 3600:.2f} h)"),
    }
