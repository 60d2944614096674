"""The live view: optuna-dashboard's own app reads a grid's study from a real store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pytest

from sslbench.bench.store.runstore import RunStore

optuna_dashboard = pytest.importorskip("optuna_dashboard",
                                       reason="the `dashboard` extra is not installed")

QUICK_STORE = Path(__file__).resolve().parent / "fixtures" / "mnist100-quick-pilot.db"


def get(app, path: str) -> tuple[str, dict]:
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET")
    status: list[str] = []
    body = b"".join(app(environ, lambda code, headers, exc=None: status.append(code)))
    return status[0], json.loads(body)


def test_the_dashboard_app_shows_a_grid_and_its_cells(tmp_path):
    shutil.copy(QUICK_STORE, tmp_path / "store.db")
    store = RunStore(f"sqlite:///{tmp_path / 'store.db'}", create=False)
    app = optuna_dashboard.wsgi(store.storage)
    status, studies = get(app, "/api/studies")
    assert status == "200 OK"
    grid = [s for s in studies["study_summaries"] if s["study_name"] == "grid:mnist100:quick"]
    assert len(grid) == 1
    status, study = get(app, f"/api/studies/{grid[0]['study_id']}")
    assert status == "200 OK" and len(study["trials"]) == 24
    cells = sorted(str(attr["value"]) for trial in study["trials"]
                   for attr in trial["user_attrs"] if attr["key"] == "cell")
    assert len(cells) == 24 and "control/seed0" in cells and "ramp_none/seed2" in cells
    assert all(trial["state"] == "Complete" for trial in study["trials"])
