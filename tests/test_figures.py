"""The report's figures show the data they claim to: their axes are read back through
matplotlib, on the committed quick store (real runs of the mnist100 grid)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sslbench.ablations import get_grid
from sslbench.bench.store.runstore import RunStore
from sslbench.reports import figures, tables
from sslbench.reports.build import comparisons, load_runs

STORE = Path(__file__).resolve().parent / "fixtures" / "mnist100-quick-pilot.db"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    copy = tmp_path_factory.mktemp("quick") / "store.db"
    shutil.copy(STORE, copy)  # read a copy: the committed file stays byte-identical
    runs = load_runs(RunStore(f"sqlite:///{copy}", create=False), "mnist100", "quick")
    frame = tables.runs_frame(runs)
    grid = get_grid("mnist100")
    order = [v.name for v in grid.variants if v.name in set(frame["variant"])]
    return runs, frame, order, grid


def test_the_accuracy_strip_plots_every_run_on_the_side_it_belongs(quick):
    _, frame, order, _ = quick
    figure = figures.draw_accuracy_strip(frame, order)
    axes, strip = figure.axes
    assert [t.get_text() for t in axes.get_xticklabels()] == order
    assert axes.get_ylabel() == "test accuracy (%)"
    fine = frame[~frame["collapsed"]]
    plotted = np.sort(np.concatenate([c.get_offsets()[:, 1] for c in axes.collections
                                      if len(c.get_offsets())]))
    np.testing.assert_allclose(plotted, np.sort(fine["accuracy"].to_numpy()))
    low, high = axes.get_ylim()
    assert low < fine["accuracy"].min() and high > fine["accuracy"].max()
    assert high - low < 20  # zoomed to the runs that did not collapse, not 0-100
    assert strip.get_title() == f"collapsed: {int(frame['collapsed'].sum())}"
    again = figures.draw_accuracy_strip(frame, order).axes[0]  # the jitter is seeded
    np.testing.assert_array_equal(
        np.concatenate([c.get_offsets() for c in axes.collections if len(c.get_offsets())]),
        np.concatenate([c.get_offsets() for c in again.collections if len(c.get_offsets())]))


def test_the_forest_puts_each_mean_difference_on_its_comparison(quick):
    runs, frame, order, grid = quick
    baselines, family = comparisons(grid, runs, order)
    paired = tables.paired_against_baselines(frame, order, baselines, family, 1.0)
    seeds = tables.per_seed(frame, order)
    figure = figures.draw_paired_forest(paired, seeds, sesoi=2.0)
    (axes,) = figure.axes
    ranked = paired.sort_values("mean_diff", ascending=False)  # largest effect on top
    labels = [t.get_text() for t in axes.get_yticklabels()]
    assert labels == [f"{v} - {b}\n{d}" for v, b, d in zip(
        ranked["variant"], ranked["baseline"], ranked["decision"], strict=True)]
    diamonds = [line for line in axes.get_lines() if line.get_marker() == "D"]
    np.testing.assert_allclose([line.get_xdata()[0] for line in diamonds], ranked["mean_diff"])
    np.testing.assert_allclose([line.get_ydata()[0] for line in diamonds], range(len(paired)))
    colours = {figures.DECISION_COLOURS[d] for d in ranked["decision"]}
    assert {line.get_color() for line in diamonds} == colours
    # the ±δ band of no practical difference, shaded
    (band,) = [p for p in axes.patches if p.get_label().startswith("±δ = 2")]
    assert (band.get_x(), band.get_x() + band.get_width()) == (-2.0, 2.0)  # a Rectangle


def test_the_curves_show_each_variants_median_test_accuracy(quick):
    runs, _, order, _ = quick
    curves = tables.curves_frame(runs)
    figure = figures.draw_learning_curves(curves, order)
    accuracy = figure.axes[0]
    assert [a.get_ylabel() for a in figure.axes[:4]] == [
        "test accuracy (%)", "supervised loss", "unsupervised loss", "unsupervised weight w"]
    medians = {line.get_label(): line for line in accuracy.get_lines()
               if not line.get_label().startswith("_")}
    assert sorted(medians) == sorted(order)
    part = curves[(curves["metric"] == "test_accuracy") & (curves["variant"] == "control")]
    expected = part.groupby("epoch")["value"].median()
    np.testing.assert_allclose(medians["control"].get_ydata(), expected.to_numpy())
    assert figure.axes[1].get_yscale() == "symlog"


def test_the_throughput_bars_are_the_table(quick):
    _, frame, order, _ = quick
    table = tables.throughput(frame, order)
    figure = figures.draw_throughput_bars(table)
    heights = [patch.get_height() for patch in figure.axes[0].patches]
    np.testing.assert_allclose(heights, table["train_images_per_s"].to_numpy())
