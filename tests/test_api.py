"""The public surface a notebook relies on, checked against docs/api.md: the record schema,
the exported tables, and a CLI that shows its choices and answers --help without torch."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sslbench.bench import api
from sslbench.bench.store.runstore import RunStore, latest_by_cell

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "api.md").read_text()
QUICK_STORE = ROOT / "tests" / "fixtures" / "mnist100-quick-pilot.db"


def documented(heading: str) -> list[str]:
    """The backticked names in the first column of the table under `heading`, in order."""
    section = DOC.split(heading, 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def sslbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args],
                          capture_output=True, text=True, timeout=300)


def flat_keys(record: dict) -> set[str]:
    keys = set()
    for key, value in record.items():
        if isinstance(value, dict) and key != "config":
            keys |= {f"{key}.{sub}" for sub in value}
        else:
            keys.add(key)
    return keys


def test_the_documented_record_fields_are_the_ones_written(data_root):
    """A real record (mean teacher: it evaluates a second model) against the schema table;
    `<model>` stands for the student, and only val_accuracy (a validation split) and
    relabeled_from (a legacy cell) are absent from this run."""
    config = api.build_config("mean_teacher", 0, "smoke", {
        "train.epochs": "1", "data.train_size": "500", "data.test_size": "200"})
    record = api.run_one(config, device="cpu", data_root=data_root, threads=1)
    table = {name.replace("<model>", "student") for name in documented("## The record schema")}
    assert flat_keys(record) == table - {"curves.val_accuracy"}
    assert record["schema"] == api.SCHEMA_VERSION == 2
    assert f"(version {api.SCHEMA_VERSION})" in DOC
    assert record["environment"]["sslbench"] == "0.1.0"
    assert api.Record.from_dict(record).run_id == config.config_hash()


def test_export_reloads_into_pandas_with_the_documented_columns(tmp_path):
    store_file = tmp_path / "store.db"
    shutil.copy(QUICK_STORE, store_file)
    url = f"sqlite:///{store_file}"
    result = sslbench("export", "--storage", url, "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    curves = pd.read_csv(tmp_path / "out" / "curves.csv")

    run_columns = documented("### runs")
    assert list(runs.columns[:len(run_columns)]) == run_columns
    assert all(c.startswith("config.") for c in runs.columns[len(run_columns):])
    assert {"config.seed", "config.train.lr", "config.method.ensemble_momentum"} <= set(
        runs.columns)
    assert list(curves.columns) == documented("### curves")  # TE and supervised: no extras

    # The values are the store's: one row per cell, every epoch of every finished run.
    store = RunStore(url, create=False)
    cells = latest_by_cell(store.cell_runs(store.find_study("grid:mnist100:quick")))
    assert len(runs) == len(cells) == 24 and set(runs.state) == {"COMPLETE"}
    control0 = cells["control/seed0"].record
    row = runs[(runs.variant == "control") & (runs.seed == 0)].iloc[0]
    assert row.final_test_accuracy == control0["metrics"]["final_test_accuracy"]
    assert row.run_id == control0["run_id"] and row["config.train.epochs"] == 30
    assert len(curves) == 24 * 30 and curves.epoch.min() == 1 and curves.epoch.max() == 30
    per_epoch = curves[(curves.variant == "control") & (curves.seed == 0)].test_accuracy
    assert per_epoch.tolist() == pytest.approx(control0["curves"]["test_accuracy"])

    # api.load_store gives the same tables without files.
    frame_runs, frame_curves = api.load_store(url, grid="mnist100")
    assert frame_runs.shape == runs.shape and frame_curves.shape == curves.shape


def test_export_of_a_store_without_grids_is_one_line_and_creates_nothing(tmp_path):
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    missing = sslbench("export", "--storage", f"sqlite:///{tmp_path / 'nope.db'}",
                       "--out", str(tmp_path / "out"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nope.db").exists() and not (tmp_path / "out").exists()
    RunStore(f"sqlite:///{empty}")  # a real, empty store
    none = sslbench("export", "--storage", f"sqlite:///{empty}", "--out", str(tmp_path / "o"))
    assert none.returncode == 2 and "holds no runs of any grid" in none.stderr


def test_top_level_help_imports_no_torch():
    """`sslbench --help` builds the light parser: the engine (and torch) stay unimported.
    Its speed is measured in benchmarks/ (test_help_startup), not timed here."""
    probe = ("import sys\nfrom sslbench.bench.cli.main import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules, 'sslbench.methods' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"
    assert "ablate" in result.stdout and "export" in result.stdout


def test_help_shows_the_choices_with_one_line_each():
    from sslbench.ablations import get_grid, grid_names
    from sslbench.ablations.spaces import get_space, space_names
    from sslbench.methods import get_method, method_names

    run, ablate, search = (sslbench(c, "--help").stdout for c in ("run", "ablate", "search"))
    for name in method_names():
        assert re.search(rf"^  {name} +{re.escape(get_method(name).description)}$", run,
                         re.MULTILINE), name
    for name in grid_names():
        assert re.search(rf"^  {name} +{re.escape(get_grid(name).description[:40])}", ablate,
                         re.MULTILINE), name
    for name in space_names():
        assert f"{name}  " in search and get_space(name).description[:40] in search
    assert "smoke" in run and "2,000 train" in run  # the profiles, with theirs


def test_ablate_list_shows_baselines_and_overrides_aligned():
    lines = sslbench("ablate", "--list").stdout.splitlines()
    start = lines.index(next(x for x in lines if x.startswith("mnist100: ")))
    header, *rows = lines[start + 1:start + 12]
    assert header.split() == ["variant", "method", "compared", "with", "overrides", "(paper",
                              "units)", "description"]
    columns = [header.index(h) for h in ("method", "compared with", "overrides")]
    control = next(r for r in rows if r.split()[0] == "control")
    assert control[columns[1]:columns[2]].strip() == "-"
    prob = next(r for r in rows if r.split()[0] == "prob_targets")
    assert prob[columns[0]:].startswith("temporal_ensembling")  # aligned under its header
    assert prob[columns[1]:columns[2]].strip() == "control"
    assert prob[columns[2]:].startswith("method.ensemble_target=prob")


def test_run_grid_fills_a_store_that_load_store_reads_back(tmp_path, data_root):
    """The notebook's round trip: a grid into a new store, then its tables."""
    url = f"sqlite:///{tmp_path / 'nb.db'}"
    outcome = api.run_grid("mnist100", "smoke", seeds=[0], storage=url,
                           variants=["control", "ramp_none"], data_root=data_root,
                           overrides={"train.epochs": "1", "data.train_size": "500",
                                      "data.test_size": "200"}, device="cpu")
    assert sorted(outcome.finished) == ["control/seed0", "ramp_none/seed0"]
    assert outcome.failed == [] and not outcome.stopped
    runs, curves = api.load_store(url)
    assert sorted(runs.variant) == ["control", "ramp_none"] and set(runs.state) == {"COMPLETE"}
    assert len(curves) == 2 and set(curves.epoch) == {1}
    again = api.run_grid("mnist100", "smoke", seeds=[0], storage=url,
                         variants=["control", "ramp_none"], data_root=data_root,
                         overrides={"train.epochs": "1", "data.train_size": "500",
                                    "data.test_size": "200"}, device="cpu")
    assert again.finished == [] and again.already_done == 2  # a store never trains twice
