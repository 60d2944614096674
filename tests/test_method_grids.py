"""The methods, label-budget and Fashion-MNIST grids: their cells, and real smoke runs of
each through the CLI into a store and a report with the same statistics."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from sslbench.ablations import get_grid
from sslbench.bench.core.config import DataConfig
from sslbench.bench.core.data import prepare
from sslbench.bench.runs.cells import plan_cells
from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.runstore import RunStore
from sslbench.methods import method_names
from sslbench.reports.stats import t_interval, tail_median

# Short enough for CI, long enough to learn: 1,000 training images, 3 epochs.
SHORT = ["--set", "train.epochs=3", "--set", "data.train_size=1000"]


def sslbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args], capture_output=True,
                          text=True, timeout=900)


def test_methods_grid_has_every_method_with_and_without_augmentation():
    grid = get_grid("mnist100_methods")
    cells = plan_cells(grid, "smoke", [0])
    methods = {c.config.method.name for c in cells}
    assert methods == set(method_names())
    for cell in cells:
        augmented = cell.variant.endswith("_aug")
        assert cell.config.data.translate_px == (2 if augmented else 0)
        assert cell.config.data.dataset == "mnist"
    assert grid.baseline_of("temporal_ensembling") == "supervised"
    assert grid.baseline_of("mean_teacher_aug") == "supervised_aug"
    assert grid.baseline_of("supervised_aug") == "supervised"
    assert grid.baseline_of("supervised") is None
    assert grid.baseline_of("supervised_pipeline") is None  # a reference, not compared
    assert grid.baseline_of("supervised_pipeline_aug") is None
    classic = next(c for c in cells if c.variant == "supervised").config
    pipeline = next(c for c in cells if c.variant == "supervised_pipeline").config
    assert (classic.train.batches, pipeline.train.batches) == ("labeled", "all")
    fashion = plan_cells(get_grid("fashion100"), "smoke", [0])
    assert {c.config.data.dataset for c in fashion} == {"fashion_mnist"}
    assert [c.variant for c in fashion] == [c.variant for c in cells]


def test_label_budget_grid_covers_every_k_and_compares_at_the_same_k():
    grid = get_grid("label_budget")
    cells = plan_cells(grid, "smoke", [0])
    budgets = {(c.config.method.name, c.config.data.num_labels) for c in cells}
    assert budgets == {(m, k) for m in ("supervised", "temporal_ensembling", "mean_teacher")
                       for k in (20, 50, 100, 250, 1000)}
    assert grid.baseline_of("te_k20") == "sup_k20"
    assert grid.baseline_of("mt_k1000") == "sup_k1000"
    assert grid.baseline_of("sup_k250") is None


def test_fashion_mnist_is_a_second_dataset_with_the_same_pipeline(fashion_root, data_root):
    config = DataConfig(dataset="fashion_mnist", num_labels=20, train_size=1000, test_size=500)
    fashion = prepare(config, [0], fashion_root, torch.device("cpu"))
    mnist = prepare(DataConfig(num_labels=20, train_size=1000, test_size=500), [0], data_root,
                    torch.device("cpu"))
    assert fashion.train_images.shape == mnist.train_images.shape == (1000, 1, 28, 28)
    assert fashion.num_classes == 10
    # Channelwise normalization from its own training images: mean 0, std 1.
    assert float(fashion.train_images.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(fashion.train_images.std()) == pytest.approx(1.0, abs=1e-3)
    assert not torch.equal(fashion.train_images, mnist.train_images)
    labels = fashion.run_labels[0][fashion.labeled_indices[0]]
    assert torch.bincount(labels, minlength=10).tolist() == [2] * 10


@pytest.fixture(scope="module")
def budget_report(tmp_path_factory, data_root):
    folder = tmp_path_factory.mktemp("budget")
    url = f"sqlite:///{folder / 'runs.db'}"
    variants = ["sup_k20", "te_k20", "sup_k100", "te_k100", "mt_k100"]
    ran = sslbench("ablate", "--grid", "label_budget", "--profile", "smoke", "--seeds", "2",
                   "--variants", *variants, "--workers", "2", "--storage", url, *SHORT,
                   "--root", str(data_root))
    assert ran.returncode == 0, ran.stderr[-2000:]
    report = sslbench("report", "--grid", "label_budget", "--storage", url,
                      "--out", str(folder / "report"))
    assert report.returncode == 0, report.stderr[-2000:]
    return folder, url


def test_label_budget_report_gives_accuracy_against_labels(budget_report):
    folder, url = budget_report
    store = RunStore(url)
    runs = store.cell_runs(store.find_study(grid_study_name("label_budget", "smoke")))
    assert len(runs) == 10 and all(r.state == "COMPLETE" for r in runs)
    by_hand: dict[tuple[str, int], list[float]] = {}
    for run in runs:
        key = (run.record["method"], run.record["config"]["data"]["num_labels"])
        assert len(run.record["labeled_indices"]) == key[1]
        if not run.record["metrics"]["collapsed"]:  # collapses are counted, never averaged
            by_hand.setdefault(key, []).append(
                100 * tail_median(run.record["curves"]["test_accuracy"]))
    table = pd.read_csv(folder / "report" / "by_labels.csv")
    assert len(table) == 5
    for row in table.itertuples():
        values = np.array(by_hand.get((row.method, row.num_labels), []))
        assert row.n == 2 and row.n - row.collapses == len(values)
        if len(values):
            assert row.mean == pytest.approx(values.mean())
        if len(values) > 1:
            assert (row.ci_low, row.ci_high) == pytest.approx(t_interval(values))
    paired = pd.read_csv(folder / "report" / "paired.csv").set_index("variant")
    assert paired.loc["te_k20", "baseline"] == "sup_k20"
    assert paired.loc["mt_k100", "baseline"] == "sup_k100"
    assert "sup_k20" not in paired.index  # references are not compared
    markdown = (folder / "report" / "report.md").read_text()
    assert "## Accuracy against the number of labels" in markdown
    assert "labels: 20, 100" in markdown
    assert (folder / "report" / "accuracy_by_labels.png").stat().st_size > 10_000
    from sslbench.reports.aggregates import rliable_metrics

    if rliable_metrics() is not None:  # nox installs it: IQM per method over k = 20, 100
        assert "## Aggregates across tasks (rliable)" in markdown
        aggregated = pd.read_csv(folder / "report" / "aggregates.csv").set_index("method")
        # mean teacher ran at k = 100 only: a method is aggregated over every task or not
        assert set(aggregated.index) == {"supervised", "temporal_ensembling"}
        assert set(aggregated["tasks"]) == {2} and set(aggregated["runs_per_task"]) == {2}
        assert "P(> supervised)" in markdown
    else:
        assert "rliable is not installed" in markdown


def test_fashion_methods_grid_runs_every_method_into_the_report(tmp_path, data_root,
                                                                fashion_root):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ran = sslbench("ablate", "--grid", "fashion100", "--profile", "smoke", "--seeds", "2",
                   "--workers", "2", "--storage", url, *SHORT, "--root", str(fashion_root))
    assert ran.returncode == 0, ran.stderr[-2000:]
    report = sslbench("report", "--grid", "fashion100", "--storage", url,
                      "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-2000:]
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("variant")
    assert set(summary.index) == {v.name for v in get_grid("fashion100").variants}
    assert (summary["n"] == 2).all()
    assert (summary["mean"] > 20).all()  # chance is 10%; 3 short epochs already learn
    paired = pd.read_csv(tmp_path / "report" / "paired.csv").set_index("variant")
    assert len(paired) == 6  # the SSL methods, with and without augmentation
    assert paired.loc["pi_model_aug", "baseline"] == "supervised_aug"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "data: fashion_mnist" in markdown
