"""What runs will cost in wall time, before the compute is spent.

One speed model for `sslbench plan` and the start line of `sslbench ablate`:
- measured: the median `total_seconds` of the store's finished runs of the same variant on
  the same kind of device (what `plan` uses once a store holds pilot runs);
- modeled, where nothing is measured: on a CPU, this project's measured rates per image and
  core (one thread per process), plus a fixed cost per cell; on another device nothing is
  known until its first runs, and the estimate says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sslbench.bench.core.config import RunConfig

# Measured on this project's CPU (README, `sslbench bench`): training seconds per image on one
# core with one thread, and evaluation seconds per test image (0.5 s per epoch on 10,000).
CPU_SECONDS_PER_IMAGE = 8.7 / 60_000
CPU_EVAL_SECONDS_PER_IMAGE = 0.5 / 10_000
# Seconds a cell costs beyond its epochs on the CPU: the worker's data load, model build,
# checkpoints and the store's writes. Fitted to the smoke grid (20 cells of 6 short epochs,
# 2 workers): about 3 s per cell.
CPU_CELL_OVERHEAD_S = 3.0
# Starting the worker processes (import torch, spawn), once per run of the grid.
POOL_START_S = 10.0
FULL_TRAIN, FULL_TEST = 60_000, 10_000  # MNIST and Fashion-MNIST, when no slice is set


# What the CPU rates above were measured on: the blog's cnn on 28x28 one-channel images.
MODELED_DATASETS = ("mnist", "fashion_mnist")


def cpu_model_covers(config: RunConfig) -> bool:
    """Whether the CPU model's rates apply: the cnn on MNIST-sized images. conv_large on
    CIFAR-10 costs hundreds of times more per image; it is measured, never modeled."""
    return config.model.name == "cnn" and config.data.dataset in MODELED_DATASETS


def modeled_run_seconds(epochs: int, train_images: int | None, test_images: int | None
                        ) -> float:
    """One run on one CPU core, from the measured rates (no overhead)."""
    train = train_images or FULL_TRAIN
    test = test_images or FULL_TEST
    return epochs * (train * CPU_SECONDS_PER_IMAGE + test * CPU_EVAL_SECONDS_PER_IMAGE)


def measured_run_seconds(records: Iterable[tuple[str, dict[str, Any] | None]],
                         device_type: str) -> dict[str, float]:
    """Median `total_seconds` per variant over `(variant, record)` pairs of finished runs
    whose device is of `device_type` ("cpu", "cuda")."""
    seconds: dict[str, list[float]] = {}
    for variant, record in records:
        if not record:
            continue
        environment = record.get("environment") or {}
        # device_type since schema 2; older records name the device ("cpu (x86_64, ...)").
        kind = environment.get("device_type") or str(environment.get("device", "")).split(
            " ")[0].split(":")[0]
        total = (record.get("throughput") or {}).get("total_seconds")
        if kind != device_type or not isinstance(total, int | float):
            continue
        seconds.setdefault(variant, []).append(float(total))
    return {variant: statistics.median(values) for variant, values in seconds.items()}


@dataclass(frozen=True)
class Estimate:
    """Expected wall seconds of a set of cells on some workers, and where it comes from."""

    seconds: float | None  # None: nothing measured or modeled for this device
    basis: str

    def text(self) -> str:
        if self.seconds is None:
            return f"expected time unknown ({self.basis})"
        return f"expected about {duration(self.seconds)} ({self.basis})"


def estimate(cells: Sequence[tuple[str, int, int | None, int | None]], workers: int,
             device_type: str, measured: dict[str, float],
             unmodeled: Iterable[str] = ()) -> Estimate:
    """Wall seconds of `cells`, each (variant, epochs, train_images, test_images), on
    `workers` parallel workers: measured seconds per variant where the store has them, else
    the CPU model, except for the `unmodeled` variants (another network or dataset than the
    model's: see cpu_model_covers); the cells are spread evenly over the workers."""
    unmodeled = set(unmodeled)
    if not cells:
        return Estimate(0.0, "nothing to run")
    workers = max(1, min(workers, len(cells)))
    total, from_store = 0.0, 0
    for variant, epochs, train_images, test_images in cells:
        if variant in measured:
            total += measured[variant] + (CPU_CELL_OVERHEAD_S if device_type == "cpu" else 0)
            from_store += 1
        elif device_type == "cpu" and variant in unmodeled:
            return Estimate(None, f"{variant}: the CPU model covers the blog's cnn on "
                                  f"MNIST-sized images only, and this store has no finished "
                                  f"run of it to measure from; the progress line gives one "
                                  f"after the first epoch")
        elif device_type == "cpu":
            total += modeled_run_seconds(epochs, train_images, test_images) + \
                CPU_CELL_OVERHEAD_S
        else:
            return Estimate(None, f"no runs on {device_type} in this store yet to measure "
                                  "from; the progress line gives one after the first epoch")
    if from_store == len(cells):
        basis = "the store's measured run times"
    elif from_store:
        basis = (f"{from_store} cells from the store's measured run times, the rest from "
                 f"{CPU_SECONDS_PER_IMAGE * 60_000:.1f} s per 60,000-image epoch and core")
    else:
        basis = (f"{CPU_SECONDS_PER_IMAGE * 60_000:.1f} s per 60,000-image epoch and core, "
                 "measured on this project's CPU")
    return Estimate(total / workers + POOL_START_S, f"{len(cells)} cells on {workers} "
                    f"worker(s), {basis}")


def duration(seconds: float) -> str:
    """'40 s', '12 min', '3.4 h': the precision a wall-time estimate deserves."""
    if seconds < 90:
        return f"{max(1, round(seconds)) if seconds > 0 else 0} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
