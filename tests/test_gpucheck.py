"""`sslbench gpucheck` on the CPU at tiny sizes: the plumbing a GPU machine's first minutes
depend on. The real check runs in a subprocess, as `nox -s gpu -- --device cpu --tiny`
does; the arithmetic it reports is checked on hand-computed figures."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from sslbench.bench.core.precision import native_bf16
from sslbench.bench.measure.gpucheck import (
    SECTIONS,
    fastest_config,
    junit_results,
    project,
    union_us,
)


def gpucheck(out: Path, *flags: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.measure.gpucheck", "--device",
                           "cpu", "--tiny", "--out", str(out), *flags],
                          capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def results(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert list(doc["sections"]) == list(SECTIONS)  # every section, in order
    return doc


def test_the_tiny_check_runs_every_section_and_reports_consistent_figures(tmp_path, data_root):
    out = tmp_path / "gpu-cpu-tiny"
    done = gpucheck(out, "--root", str(data_root), "--budget-s", "450", timeout_s=480)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = results(out)
    sections = doc["sections"]
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(SECTIONS, "ok")
    assert doc["elapsed_s"] <= doc["budget_s"]
    assert all(s["seconds"] > 0 and s["estimate_s"] > 0 for s in sections.values())

    correctness = sections["correctness"]["result"]
    assert correctness["device"] == "cpu"
    assert correctness["counts"]["failed"] == correctness["counts"]["error"] == 0
    assert correctness["counts"]["passed"] >= 6
    skipped = [t for t in correctness["tests"] if t["outcome"] == "skipped"]
    # CUDA only: the network's CUDA graphs, and the whole step's replayed graph; bf16 only
    # where this CPU computes it natively (AVX-512 BF16 or AMX; not every machine here has it).
    bf16 = [] if native_bf16(torch.device("cpu")) else ["test_bf16_autocast_runs_and_tracks_fp32"]
    assert [t["test"] for t in skipped] == [
        "test_cuda_graphs_give_the_eager_losses", *bf16,
        "test_the_replayed_graph_gives_the_eager_losses_on_cuda[temporal_ensembling]",
        "test_the_replayed_graph_gives_the_eager_losses_on_cuda[mean_teacher]"]
    assert "CUDA graphs need a CUDA device" in skipped[0]["message"]

    bench = sections["bench"]["result"]
    measured = bench["measurements"]
    assert set(measured) == {"harness", "stack2", "2 procs x stack1", "stack2 step_graph",
                             "naive"}
    for name, m in measured.items():
        assert math.isfinite(m["images_per_s"]) and m["images_per_s"] > 0, name
        assert len(m["per_process"]) == m["processes"]
    fastest = bench["fastest"]
    candidates = {n: m["images_per_s"] for n, m in measured.items() if m["grid_config"]}
    assert fastest["measurement"] == max(candidates, key=candidates.__getitem__)
    assert [fastest["workers"], fastest["stack"]] == measured[fastest["measurement"]]["grid_config"]

    for runs, figures in sections["profile"]["result"]["stacks"].items():
        assert figures["runs"] == int(runs) and figures["ms_per_step"] > 0
        assert figures["aten_ops_per_step"] > 10  # a training step is many ops
        assert figures["kernels_per_step"] is None and figures["gpu_busy_fraction"] is None
        assert "aten::" in (out / figures["table"]).read_text()

    paper = sections["paper_slice"]["result"]
    # The slice ran in the configuration the bench found fastest, and says so.
    assert (paper["workers"], paper["stack"]) == (fastest["workers"], fastest["stack"])
    assert fastest["measurement"] in paper["plan"]["config_source"]
    assert paper["cells_finished"] == 4 and paper["cells_failed"] == []  # 2 variants x 2 seeds
    assert set(paper["accuracy"]) == {"control", "supervised"}
    projection = paper["projection"]
    assert projection["projected_wall_s"] <= projection["upper_bound_s"]
    assert (out / paper["store"]).exists()

    cifar = sections["cifar_projection"]["result"]
    assert list(cifar["variants"]) == ["temporal_ensembling", "pi_model", "supervised"]
    for figures in cifar["variants"].values():
        assert figures["ms_per_step"] > 0 and figures["eval_ms_per_image"] > 0
    # The Pi-model's two passes a step cost more than temporal ensembling's one.
    assert cifar["variants"]["pi_model"]["ms_per_step"] > \
        cifar["variants"]["temporal_ensembling"]["ms_per_step"]
    run_s = cifar["projection"]["run_s"]  # the arithmetic it states, redone here
    te = cifar["variants"]["temporal_ensembling"]
    steps = math.ceil(50_000 / cifar["batch"])
    assert run_s["temporal_ensembling"] == pytest.approx(
        300 * (steps * te["ms_per_step"] + 10_000 * te["eval_ms_per_image"]) / 1000, rel=1e-3)
    assert cifar["projection"]["grid_s"] == pytest.approx(10 * sum(run_s.values()), rel=1e-3)

    summary = (out / "summary.md").read_text()
    for name in SECTIONS:
        assert f"## {name}" in summary
    assert "**Projection** (not a measurement)" in summary
    assert projection["arithmetic"] in summary
    assert "Fastest grid configuration" in done.stdout  # the printed summary


def test_sections_that_do_not_fit_are_listed_as_skipped_with_the_budget(tmp_path, data_root):
    out = tmp_path / "check"
    done = gpucheck(out, "--root", str(data_root), "--budget-s", "1", timeout_s=120)
    assert done.returncode == 0, done.stderr[-3000:]  # nothing ran, so nothing failed
    for name, section in results(out)["sections"].items():
        assert section["status"] == "skipped", name
        assert section["why"].startswith("budget: needs ~"), section["why"]
        assert section["estimate_s"] > 0
    summary = (out / "summary.md").read_text()
    assert summary.count("skipped") >= len(SECTIONS)


def test_a_failing_section_is_recorded_and_the_next_ones_still_run(tmp_path):
    out, empty = tmp_path / "check", tmp_path / "no-data"
    empty.mkdir()
    done = gpucheck(out, "--root", str(empty), "--sections", "bench", "profile", "paper_slice",
                    timeout_s=180)
    assert done.returncode == 1
    sections = results(out)["sections"]
    assert sections["correctness"] == {"status": "skipped", "why": "not selected (--sections)"}
    for name in ("bench", "profile", "paper_slice"):  # each ran after the one before failed
        section = sections[name]
        assert section["status"] == "failed", name
        assert section["error"].startswith("DataError: ") and "\n" not in section["error"]
        assert str(empty) in section["error"] and "sslbench data fetch" in section["error"]
        assert section["traceback"] and "DataError" in section["traceback"][-1]
        assert (out / section["log"]).exists()
    # Without the bench's figures the slice fell back to the runner's defaults, and said so.
    plan = sections["paper_slice"]["result"]["plan"]
    assert plan["config_source"] == "the runner's defaults (the bench section is failed)"


def test_a_stopped_check_keeps_what_it_had_and_lists_the_rest(tmp_path, data_root):
    out = tmp_path / "check"
    process = subprocess.Popen(
        [sys.executable, "-m", "sslbench.bench.measure.gpucheck", "--device", "cpu", "--tiny",
         "--out", str(out), "--root", str(data_root), "--sections", "bench", "profile"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    partial = out / "sections" / "bench.json"
    deadline = time.monotonic() + 120
    while not partial.exists() and time.monotonic() < deadline:  # the first measurement
        time.sleep(0.1)
    assert partial.exists()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 1
    sections = results(out)["sections"]
    assert sections["bench"]["status"] == "stopped" and sections["bench"]["why"] == "SIGTERM"
    assert "harness" in sections["bench"]["result"]["measurements"]  # kept, not lost
    assert sections["profile"] == {"status": "skipped",
                                   "why": "the check was stopped (SIGTERM)"}
    assert not any(p.is_dir() for p in Path("/proc").glob("[0-9]*")  # no orphan section
                   if _is_section_of(p, out))


def _is_section_of(proc: Path, out: Path) -> bool:
    try:
        command = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--child" in command and str(out).encode() in command


# -- the arithmetic, on hand-computed figures ------------------------------------------------


def test_the_projection_is_rounds_of_start_up_and_epochs():
    # 2 variants x 4 seeds in stacks of 2 = 4 jobs on 2 workers: 2 rounds, 3 epochs each at
    # 10 s; 70 s of wall = 2 x 3 x 10 s + 2 x 5 s of start-up. The full grid: 10 variants,
    # 20 jobs, 10 rounds of 5 s + 300 x 10 s.
    p = project([10.0, 10.0, 10.0, 10.0], 70.0, workers=2, stack=2, seeds=4, epochs_run=3,
                epochs_full=300, variants_run=2, variants_full=10)
    assert (p["jobs_full"], p["rounds_full"], p["rounds_run"]) == (20, 10, 2)
    assert p["start_s_per_round"] == 5.0
    assert p["projected_wall_s"] == 10 * (5 + 300 * 10)
    assert p["upper_bound_s"] == 70 * 300 // 3 * 10 // 2
    assert "= 30,050 s (8.35 h)" in p["arithmetic"]


def test_device_busy_time_counts_overlaps_once():
    assert union_us([(0, 10), (5, 15), (20, 30), (21, 22)]) == 25
    assert union_us([]) == 0


def test_the_fastest_configuration_is_one_a_grid_can_run():
    measured = {
        "harness": {"images_per_s": 100.0, "epoch_seconds": 6.0, "grid_config": (1, 1)},
        "stack5": {"images_per_s": 400.0, "epoch_seconds": 7.0, "grid_config": (1, 5)},
        "stack10": {"images_per_s": 900.0, "epoch_seconds": 8.0, "grid_config": (1, 10)},
        "naive": {"images_per_s": 2000.0, "epoch_seconds": 1.0, "grid_config": None},
    }
    fastest = fastest_config(measured, seeds=5)  # a stack holds one variant's 5 seeds
    assert fastest is not None
    assert (fastest["measurement"], fastest["workers"], fastest["stack"]) == ("stack5", 1, 5)
    assert fastest_config({"naive": measured["naive"]}, seeds=5) is None


def test_junit_outcomes_and_first_message_lines(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest" tests="3">'
        '<testcase name="test_a" time="1.5"/>'
        '<testcase name="test_b" time="0.1"><failure message="assert 1 == 2&#10;more">'
        'trace</failure></testcase>'
        '<testcase name="test_c" time="0"><skipped message="no CUDA"/></testcase>'
        '</testsuite></testsuites>')
    got = junit_results(xml)
    assert got["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    assert [(t["test"], t["outcome"], t["message"]) for t in got["tests"]] == [
        ("test_a", "passed", ""), ("test_b", "failed", "assert 1 == 2"),
        ("test_c", "skipped", "no CUDA")]


@pytest.mark.parametrize("flags, message", [
    (["--budget-s", "0"], "--budget-s must be a positive number"),
    (["--epochs-slice", "0"], "--epochs-slice must be >= 1"),
])
def test_impossible_options_are_one_line_and_write_nothing(tmp_path, flags, message):
    done = gpucheck(tmp_path / "check", *flags, timeout_s=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "check").exists()
