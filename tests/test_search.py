"""The Optuna search on a validation split: real smoke trials, resumed from the store,
never reading the test set; the final comparison on fresh seeds; unsafe storage refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from sslbench.bench.core.datasets import MNIST, raw_dir
from sslbench.bench.runs.search import SEARCH_SEED_BASE
from sslbench.bench.store.names import search_study_name
from sslbench.bench.store.runstore import RunStore

SHORT = ["--profile", "smoke", "--set", "train.epochs=3", "--set", "data.train_size=800",
         "--val-size", "200", "--trial-seeds", "2"]


def sslbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args], capture_output=True,
                          text=True, timeout=900)


def load(url: str, space: str = "temporal_ensembling") -> optuna.Study:
    return optuna.load_study(study_name=search_study_name(space, "smoke"),
                             storage=RunStore(url, create=False).storage)


@pytest.fixture(scope="module")
def train_only_root(tmp_path_factory, data_root) -> Path:
    """A data folder holding MNIST's training files and no test files at all."""
    root = tmp_path_factory.mktemp("train-only")
    folder = raw_dir(root, MNIST)
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (folder / name).symlink_to(raw_dir(data_root, MNIST) / name)
    return root


@pytest.fixture(scope="module")
def searched(tmp_path_factory, train_only_root):
    """Two trials, then the same command asking for three: the study resumes."""
    folder = tmp_path_factory.mktemp("search")
    url = f"sqlite:///{folder / 'search.db'}"
    args = ["search", "--space", "temporal_ensembling", *SHORT, "--storage", url,
            "--root", str(train_only_root)]
    first = sslbench(*args, "--trials", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    before = {t.number: (t.params, t.value) for t in load(url).trials}
    second = sslbench(*args, "--trials", "3")
    assert second.returncode == 0, second.stderr[-2000:]
    return folder, url, before, second


def test_search_runs_without_the_test_set_files(searched, train_only_root):
    # The search above ran on a folder with no test files: it cannot have read them.
    folder = raw_dir(train_only_root, MNIST)
    assert not list(folder.glob("t10k*"))
    # ... while anything that evaluates on the test set fails there, naming the file.
    run = sslbench("run", "--method", "supervised", "--profile", "smoke", "--root",
                   str(train_only_root), "--out", str(searched[0] / "r.json"))
    assert run.returncode == 2 and "t10k-images-idx3-ubyte is missing" in run.stderr


def test_search_resumes_from_the_store(searched):
    _, url, before, second = searched
    study = load(url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert {t.number: (t.params, t.value) for t in study.trials[:2]} == before
    assert "2 of 3 trials finished" in second.stderr
    assert second.stderr.count(" starts") == 1  # only the missing trial ran


def test_trials_score_validation_accuracy_per_epoch_over_search_seeds(searched):
    study = load(searched[1])
    for trial in study.trials:
        per_seed = trial.user_attrs["val_accuracy_per_seed"]
        assert len(per_seed) == 2
        assert trial.value == pytest.approx(sum(per_seed) / 2)
        assert sorted(trial.intermediate_values) == [0, 1, 2]  # reported every epoch
        assert trial.intermediate_values[2] == pytest.approx(trial.value)
        assert trial.user_attrs["seeds"] == [SEARCH_SEED_BASE, SEARCH_SEED_BASE + 1]
        config = trial.user_attrs["config"]
        assert config["data"]["val_size"] == 200
        assert config["train"]["lr"] == pytest.approx(trial.params["lr"])
    # A seeded TPE: trials differ from each other.
    assert len({t.params["lr"] for t in study.trials}) == 3


def test_other_settings_do_not_mix_into_a_stored_search(searched, train_only_root):
    _, url, _, _ = searched
    other = sslbench("search", "--space", "temporal_ensembling", *SHORT[:-2],
                     "--trial-seeds", "3", "--trials", "4", "--storage", url,
                     "--root", str(train_only_root))
    assert other.returncode == 2
    assert "other settings (seeds_per_trial=2)" in other.stderr
    assert len(load(url).trials) == 3


def test_finalize_compares_the_best_config_with_the_defaults_on_fresh_seeds(searched,
                                                                            data_root):
    folder, url, _, _ = searched
    out = folder / "final"
    final = sslbench("search", "--space", "temporal_ensembling", "--profile", "smoke",
                     "--storage", url, "--finalize", "--final-seeds", "2", "--out", str(out),
                     "--root", str(data_root))
    assert final.returncode == 0, final.stderr[-2000:]
    study = load(url)
    best = study.best_trial
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(set(runs["variant"])) == ["defaults", "tuned"]
    assert sorted(set(runs["seed"])) == [0, 1]  # fresh: never a search seed
    store = RunStore(url)
    grid_study = store.find_study(f"grid:final_temporal_ensembling_trial{best.number}:smoke")
    records = {r.variant: r.record for r in store.cell_runs(grid_study) if r.seed == 0}
    assert records["tuned"]["config"]["train"]["lr"] == pytest.approx(best.params["lr"])
    assert records["defaults"]["config"]["train"]["lr"] == 0.002
    # The final runs train on the whole training slice: no validation split.
    assert records["tuned"]["config"]["data"]["val_size"] == 0
    paired = pd.read_csv(out / "paired.csv")
    assert list(paired["variant"]) == ["tuned"]
    dropped = str(paired["dropped_seeds"].fillna("")[0]).split()  # collapsed seeds are not paired
    assert paired["n"][0] + len(dropped) == 2
    markdown = (out / "report.md").read_text()
    assert "## The search" in markdown and "the test set was not read" in markdown
    for figure in ("optimization_history.png", "param_importances.png", "paired.png"):
        assert (out / figure).stat().st_size > 10_000
    # The stored final grid reports again from the store alone.
    again = sslbench("report", "--grid", f"final_temporal_ensembling_trial{best.number}",
                     "--storage", url, "--out", str(folder / "again"))
    assert again.returncode == 0, again.stderr[-2000:]


def test_sqlite_refuses_several_search_workers(tmp_path, data_root):
    url = f"sqlite:///{tmp_path / 's.db'}"
    refused = sslbench("search", "--space", "supervised", *SHORT, "--trials", "2",
                       "--workers", "2", "--storage", url, "--root", str(data_root))
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "not safe for 2 search workers" in line and "journal:///" in line


def test_two_search_workers_share_a_journal_store(tmp_path, data_root):
    url = f"journal:///{tmp_path / 'search.log'}"
    ran = sslbench("search", "--space", "supervised", *SHORT, "--trials", "4", "--workers", "2",
                   "--no-prune", "--storage", url, "--root", str(data_root))
    assert ran.returncode == 0, ran.stderr[-2000:]
    study = load(url, "supervised")
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 4 <= len(finished) <= 5  # two workers may both start the last trial
    assert len({t.user_attrs["owner"] for t in finished}) == 2  # both worked
    assert len({t.params["lr"] for t in finished}) == len(finished)  # no point run twice
