"""The typed record reads every committed store's records, old schemas included, and drops
none of the stored figures."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from sslbench.bench.core.schema import Metrics, Record, Throughput
from sslbench.bench.store.runstore import RunStore

RESULTS = Path(__file__).resolve().parent.parent / "reports/results"
STORES = ["mnist100-quick/store.db", "mnist100_methods-quick10k/store.db",
          "mnist100-paper/runs.log"]


def stored_records(relative: str, tmp_path: Path) -> list[dict]:
    copy = tmp_path / Path(relative).name
    shutil.copy(RESULTS / relative, copy)  # read a copy: the committed file stays as it is
    scheme = "journal" if copy.suffix == ".log" else "sqlite"
    store = RunStore(f"{scheme}:///{copy}", create=False)
    records = []
    for study in store.storage.get_all_studies():
        if study.study_name.startswith("grid:"):
            study_id = store.storage.get_study_id_from_name(study.study_name)
            records += [r.record for r in store.cell_runs(study_id) if r.record is not None]
    return records


@pytest.mark.parametrize("relative", STORES)
def test_every_stored_figure_is_a_typed_field(relative, tmp_path):
    records = stored_records(relative, tmp_path)
    assert records
    metric_fields = {f.name for f in dataclasses.fields(Metrics)} - {"evaluated"}
    throughput_fields = {f.name for f in dataclasses.fields(Throughput)}
    for stored in records:
        record = Record.from_dict(stored)
        assert record.run_id == stored["run_id"] and record.seed == stored["seed"]
        others = {f"final_{name}_test_accuracy" for name in record.metrics.evaluated}
        assert others <= set(stored["metrics"])
        assert set(stored["metrics"]) <= metric_fields | others  # nothing dropped
        assert set(stored["throughput"]) <= throughput_fields
        assert record.metrics.final_test_accuracy == stored["metrics"]["final_test_accuracy"]
        assert record.test_accuracy[-1] == stored["metrics"]["final_test_accuracy"]
        if record.schema >= 2:
            assert record.schedule is not None and record.schedule["total_steps"] > 0


def test_the_mean_teachers_student_is_a_named_model(tmp_path):
    records = [Record.from_dict(r) for r in
               stored_records("mnist100_methods-quick10k/store.db", tmp_path)]
    teachers = [r for r in records if r.method == "mean_teacher"]
    assert teachers and all(set(r.metrics.evaluated) == {"student"} for r in teachers)
    for record in teachers:
        student = record.evaluated_curves["student"]
        assert record.metrics.evaluated["student"] == student[-1]
        assert len(student) == len(record.test_accuracy)
    assert all(not r.metrics.evaluated for r in records if r.method != "mean_teacher")
