"""Aggregates across tasks with rliable: its metrics by hand on small arrays, the stratified
bootstrap's coverage by simulation, the table on a small grid, and the one-line fallback."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from sslbench.reports import aggregates as agg

metrics = pytest.importorskip("rliable.metrics", reason="nox installs rliable (--no-deps)")


def test_rliable_imports_and_its_iqm_and_improvement_are_right_by_hand():
    scores = np.arange(1.0, 9.0).reshape(4, 2)  # 8 values: the middle half is 3, 4, 5, 6
    assert metrics.aggregate_iqm(scores) == pytest.approx(4.5)
    x, y = np.array([[2.0], [3.0]]), np.array([[1.0], [4.0]])
    # pairs: 2>1, 2<4, 3>1, 3<4: half of them
    assert metrics.probability_of_improvement(x, y) == pytest.approx(0.5)
    assert metrics.probability_of_improvement(y * 0 + 9, y) == pytest.approx(1.0)


def test_the_stratified_interval_holds_the_point_and_is_seeded():
    rng = np.random.default_rng(0)
    scores = rng.normal(90, 2, size=(5, 3))
    point, low, high = agg.iqm_interval(scores, metrics)
    assert low <= point <= high
    assert agg.iqm_interval(scores, metrics) == (point, low, high)  # a rebuild is identical


def test_the_interval_covers_the_true_iqm_about_95_percent_of_the_time():
    """Coverage by simulation: normal scores of known center, 10 runs x 3 tasks. A
    percentile bootstrap of a trimmed mean at 10 runs covers a bit under its nominal 95%."""
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for _ in range(trials):
        scores = rng.normal(0.0, 1.0, size=(10, 3))
        _, low, high = agg.iqm_interval(scores, metrics, reps=400, seed=int(rng.integers(1e9)))
        covered += low <= 0.0 <= high
    assert 0.85 <= covered / trials <= 0.99


def small_grid() -> pd.DataFrame:
    rows = []
    for method, shift in (("supervised", 0.0), ("mean_teacher", 1.5)):
        for k in (20, 100):
            for seed in range(3):
                rows.append({"variant": f"{method}_k{k}", "method": method, "seed": seed,
                             "dataset": "mnist", "num_labels": k, "translate_px": 0,
                             "accuracy": 80.0 + k / 20 + shift + seed})
    return pd.DataFrame(rows)


def test_each_method_is_aggregated_over_the_tasks_against_the_reference():
    table = agg.aggregates(small_grid(), "supervised").set_index("method")
    assert list(table["tasks"]) == [2, 2] and list(table["runs_per_task"]) == [3, 3]
    by_hand = metrics.aggregate_iqm(np.array([[81, 85], [82, 86], [83, 87]], dtype=float))
    assert table.loc["supervised", "iqm"] == pytest.approx(by_hand)
    # mean teacher is 1.5 points up on each seed: per task it beats 8 of the 9 run pairs
    assert table.loc["mean_teacher", "p_improve_over_reference"] == pytest.approx(8 / 9)
    assert np.isnan(table.loc["supervised", "p_improve_over_reference"])
    one_task = small_grid().query("num_labels == 20")
    assert agg.aggregates(one_task, "supervised").empty  # nothing to aggregate


def test_without_rliable_the_aggregates_are_left_out(monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable raises ImportError
    monkeypatch.setitem(sys.modules, "rliable.metrics", None)
    assert agg.rliable_metrics() is None
    assert agg.aggregates(small_grid(), "supervised") is None
