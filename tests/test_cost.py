"""The wall-time model of bench.cost, by hand, and the start line of `sslbench ablate` on the
committed quick store (measured run times) and on an empty one (the CPU model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sslbench.ablations import get_grid
from sslbench.bench.core.cost import (
    CPU_CELL_OVERHEAD_S,
    POOL_START_S,
    duration,
    estimate,
    measured_run_seconds,
    modeled_run_seconds,
)
from sslbench.bench.runs.cells import plan_cells
from sslbench.bench.runs.runner import open_grid_study, start_estimate
from sslbench.bench.store.runstore import RunStore

QUICK_STORE = Path(__file__).resolve().parent / "fixtures" / "mnist100-quick-pilot.db"


def test_the_cpu_model_by_hand():
    # A quick cell: 30 epochs of 60,000 train images (8.7 s) and 10,000 test images (0.5 s).
    assert modeled_run_seconds(30, None, None) == pytest.approx(30 * 9.2)
    # A smoke cell: 6 epochs of 2,000 and 1,000 images.
    assert modeled_run_seconds(6, 2000, 1000) == pytest.approx(6 * (2000 * 8.7 / 60_000 +
                                                                   1000 * 0.5 / 10_000))
    cells = [("control", 30, None, None)] * 24
    got = estimate(cells, 2, "cpu", {})
    assert got.seconds == pytest.approx(24 * (30 * 9.2 + CPU_CELL_OVERHEAD_S) / 2 + POOL_START_S)
    assert got.text().startswith("expected about 56 min (24 cells on 2 worker(s)")


def test_measured_times_win_over_the_model_and_a_gpu_without_them_is_unknown():
    records = [("control", {"environment": {"device_type": "cpu"},
                            "throughput": {"total_seconds": s}}) for s in (100.0, 300.0, 200.0)]
    records.append(("control", {"environment": {"device": "cuda:0 (NVIDIA H200)"},
                                "throughput": {"total_seconds": 5.0}}))
    records.append(("control", None))  # a running cell has no record yet
    measured = measured_run_seconds(records, "cpu")
    assert measured == {"control": 200.0}  # the median of the CPU runs only
    got = estimate([("control", 30, None, None)] * 4, 4, "cpu", measured)
    assert got.seconds == pytest.approx(200 + CPU_CELL_OVERHEAD_S + POOL_START_S)
    assert "the store's measured run times" in got.basis
    assert measured_run_seconds(records, "cuda") == {"control": 5.0}
    assert estimate([("control", 30, None, None)], 1, "cuda", {}).seconds is None
    assert "unknown" in estimate([("control", 30, None, None)], 1, "cuda", {}).text()
    assert estimate([], 2, "cpu", {}).text() == "expected about 0 s (nothing to run)"


def test_durations_read_at_the_precision_they_deserve():
    assert [duration(s) for s in (0.2, 40, 600, 5400, 4 * 3600)] == \
        ["1 s", "40 s", "10 min", "1.5 h", "4.0 h"]


@pytest.mark.parametrize("stored", [True, False], ids=["committed-quick-store", "empty-store"])
def test_the_start_line_of_a_quick_grid(tmp_path, stored):
    db = tmp_path / "quick.db"
    if stored:
        shutil.copyfile(QUICK_STORE, db)
    store = RunStore(f"sqlite:///{db}")
    cells = plan_cells(get_grid("mnist100"), "quick", range(3, 6))
    study = open_grid_study(store, "mnist100", "quick", None, cells)
    line = start_estimate(get_grid("mnist100"), "quick", cells, store, study, 2,
                          torch.device("cpu"))
    amount, unit = line.split("expected about ")[1].split(" ")[:2]
    hours = float(amount) / (60 if unit == "min" else 1)
    assert f"{len(cells)} cells on 2 worker(s)" in line
    if stored:  # about 5 minutes a cell, measured: 30 cells on 2 workers
        assert "from the store's measured run times" in line  # variants without runs: modeled
        assert 0.8 < hours < 2.0
    else:
        assert "measured on this project's CPU" in line
        assert hours == pytest.approx((len(cells) * (30 * 9.2 + 3) / 2 + 10) / 3600, abs=0.05)
    assert "to try the grid first: --profile smoke --seeds 2 (about" in line


def test_another_network_or_dataset_is_not_priced_with_the_cnns_cpu_rates(tmp_path):
    """conv_large on CIFAR-10 costs hundreds of times what the cnn's rates say: the start
    line says the time is unknown until a run of it is measured, never a number from them."""
    from sslbench.bench.core.cost import cpu_model_covers

    cifar = plan_cells(get_grid("cifar10_4000"), "paper_cifar", [0])
    mnist = plan_cells(get_grid("mnist100"), "quick", [0])
    assert not any(cpu_model_covers(c.config) for c in cifar)
    assert all(cpu_model_covers(c.config) for c in mnist)
    store = RunStore(f"sqlite:///{tmp_path / 'cifar.db'}")
    study = open_grid_study(store, "cifar10_4000", "paper_cifar", None, cifar)
    line = start_estimate(get_grid("cifar10_4000"), "paper_cifar", cifar, store, study, 2,
                          torch.device("cpu"))
    assert line.startswith("expected time unknown (temporal_ensembling: the CPU model "
                           "covers the blog's cnn on MNIST-sized images only"), line
