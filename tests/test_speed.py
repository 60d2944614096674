"""`sslbench bench` on a tiny real slice: its output is right (not fast), its errors are clear,
and its naive baseline really learns.

Speed is not tested (the machine is shared); only that the figures are measured, finite and
consistent with each other. Module-level imports stay light: the spawned processes of the
process tests import this module to find their targets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from sslbench.bench.cli import bench_command
from sslbench.bench.errors import DataError, UserError
from sslbench.bench.measure import speed

# Two trainings at once load both cores; opt in where two cores are free.


def bench_args(*argv: str) -> argparse.Namespace:
    """Parse `sslbench bench ARGV` with the parser the CLI gets from `bench_command.add_parser`."""
    parser = argparse.ArgumentParser(prog="sslbench")
    bench_command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", *argv])


def tiny(data_root: Path, out: Path, *extra: str) -> argparse.Namespace:
    return bench_args("--train-size", "600", "--test-size", "300", "--epochs", "2",
                      "--stack", "2", "--device", "cpu", "--root", str(data_root),
                      "--out", str(out), *extra)


def check_measurement(name: str, m: dict[str, Any], train_size: int) -> None:
    from sslbench.bench.core.throughput import steady_median

    assert m["name"] == name
    for key in ("images_per_s", "epoch_seconds", "peak_memory_mib"):
        assert math.isfinite(m[key]) and m[key] > 0, (name, key)
    assert len(m["per_process"]) == m["processes"]
    # The headline is the sum of each process's median over epochs after the first ...
    summed = sum(steady_median(p["train_images_per_s"]) for p in m["per_process"])
    assert math.isclose(m["images_per_s"], summed)
    # ... and with 2 epochs that is epoch 2 alone: runs x images / its training seconds.
    for process in m["per_process"]:
        seconds = process["epoch_seconds"][1]
        assert math.isclose(process["train_images_per_s"][1], m["runs"] * train_size / seconds)
    assert len(m["final_test_accuracy"]) == m["runs"] * m["processes"]
    assert all(0 <= a <= 1 for a in m["final_test_accuracy"])
    assert m["device"].startswith("cpu") and m["torch_version"]


def test_bench_writes_consistent_figures(data_root, tmp_path, capsys):
    import torch

    out = tmp_path / "out"
    assert bench_command.command(tiny(data_root, out, "--no-two-process", "--bf16")) == 0
    doc = json.loads((out / "bench.json").read_text())
    markdown = (out / "bench.md").read_text()
    assert capsys.readouterr().out.strip() == markdown.strip()  # the table is printed too
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md"]  # no .part

    assert list(doc["pipelines"]) == ["naive", "harness", "harness bf16", "stack2"]
    precisions = {name: m["per_process"][0]["precision"] for name, m in doc["pipelines"].items()}
    assert precisions == {"naive": "fp32", "harness": "fp32", "harness bf16": "bf16",
                          "stack2": "fp32"}
    for name, m in doc["pipelines"].items():
        check_measurement(name, m, 600)
        assert f"| {name} |" in markdown
    # Every measurement ran in its own process, so each memory figure is its own.
    pids = [m["per_process"][0]["pid"] for m in doc["pipelines"].values()]
    assert len(set(pids)) == 4 and os.getpid() not in pids

    measured = {name: m["images_per_s"] for name, m in doc["pipelines"].items()}
    assert set(doc["ratios"]) == {"harness_vs_naive", "bf16_vs_naive", "bf16_vs_fp32",
                                  "stack_vs_single"}
    for ratio in doc["ratios"].values():
        quotient = measured[ratio["numerator"]] / measured[ratio["denominator"]]
        assert math.isclose(ratio["value"], quotient)
        assert f"| {ratio['what']} | {ratio['value']:.2f}x |" in markdown
    assert doc["ratios"]["stack_vs_single"]["numerator"] == "stack2"
    target = speed.SINGLE_RUN_TARGET
    for key in ("harness_vs_naive", "bf16_vs_naive"):
        met = "met" if doc["ratios"][key]["value"] >= target else "NOT met"
        assert f"CPU target >= {target}x: {met}" in markdown
    assert doc["skipped"] == {"2 processes": "--no-two-process"}
    assert "| 2 processes | skipped |" in markdown

    protocol, env = doc["protocol"], doc["environment"]
    assert (protocol["train_images"], protocol["test_images"], protocol["epochs"],
            protocol["stack"]) == (600, 300, 2, 2)
    assert env["torch"] == torch.__version__ and f"torch {torch.__version__}" in markdown
    assert env["device"] in markdown and "cpu" in env["device"]


def test_bench_two_processes(data_root, tmp_path):
    out = tmp_path / "out"
    assert bench_command.command(tiny(data_root, out, "--two-process", "--no-bf16")) == 0
    doc = json.loads((out / "bench.json").read_text())
    both = doc["pipelines"]["2 processes"]
    check_measurement("2 processes", both, 600)
    assert both["processes"] == 2 and len({p["pid"] for p in both["per_process"]}) == 2
    ratio = doc["ratios"]["two_process_vs_one"]
    assert math.isclose(ratio["value"],
                        both["images_per_s"] / doc["pipelines"]["harness"]["images_per_s"])
    assert doc["two_process_target"] == speed.TWO_PROCESS_TARGET and not doc["skipped"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--stack", "0"], "--stack must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 2"),
    (["--epochs", "1"], "first epoch is warm-up"),
    (["--train-size", "50"], "--train-size must be between 100"),
    (["--test-size", "0"], "--test-size must be between 1"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(data_root, tmp_path, flags, message):
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message) as caught:
        bench_command.command(tiny(data_root, out, *flags))
    assert "\n" not in str(caught.value)
    assert not out.exists()


def test_missing_data_says_how_to_fetch(tmp_path):
    with pytest.raises(DataError, match="sslbench data fetch"):
        bench_command.command(tiny(tmp_path / "empty", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_summary_and_ratios_are_the_measured_quotients():
    reports = [{"train_images_per_s": [10.0, 300.0, 500.0], "epoch_seconds": [9.0, 2.0, 1.0],
                "peak_memory_mib": mib, "final_test_accuracy": [0.5], "device": "cpu",
                "torch_version": "x"} for mib in (100.0, 120.0)]
    two = speed.summarize("2 processes", "", 1, reports)
    assert two.images_per_s == 800.0  # (300 + 500) / 2 per process, summed
    assert two.epoch_seconds == 1.5 and two.peak_memory_mib == 120.0
    one = speed.summarize("harness", "", 1, reports[:1])
    ratios = speed.ratios({"harness": one, "2 processes": two}, stack=5)
    assert ratios == {"two_process_vs_one": {
        "value": 2.0, "numerator": "2 processes", "denominator": "harness",
        "what": "2 processes / 1 process"}}


# -- the measuring processes: started together, failures reported -----------------------------


def released_at_barrier(job: speed.Job) -> dict[str, Any]:
    from sslbench.bench.runs.pool import worker_barrier

    time.sleep(1.5 * (job.kind == "b"))  # the second process arrives 1.5 s later ...
    worker_barrier().wait(30)
    return {"released": time.time(), "kind": job.kind, "pid": os.getpid()}  # ... both leave now


def dies_without_report(job: speed.Job) -> dict[str, Any]:
    os._exit(3)


def job(kind: str = "fake", config: dict[str, Any] | None = None) -> speed.Job:
    return speed.Job(kind, config or {}, (0,), "cpu", "/nonexistent")


def test_processes_start_training_together():
    first, second = speed.run_processes([job("a"), job("b")], target=released_at_barrier)
    assert (first["kind"], second["kind"]) == ("a", "b")  # in job order
    assert len({first["pid"], second["pid"], os.getpid()}) == 3  # each in its own process
    assert abs(first["released"] - second["released"]) < 1.0  # without the barrier: 1.5 s


def test_a_process_that_dies_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="ended without a result"):
        speed.run_processes([job()], target=dies_without_report)


def test_errors_in_a_measuring_process_reach_the_caller():
    from sslbench.bench.core.overrides import build_config

    with pytest.raises(RuntimeError, match="KeyError"):  # a bug: the child's traceback
        speed.run_processes([job("harness", {})])
    bad = build_config("temporal_ensembling", 0, "smoke").to_dict()
    bad["train"]["epochs"] = 0
    with pytest.raises(UserError, match=r"train\.epochs must be > 0"):  # bad input: its line
        speed.run_processes([job("harness", bad)])


# -- the baseline is a working pipeline ---------------------------------------------------------


def test_naive_model_is_the_harness_model():
    import torch

    from sslbench.bench.core.model import init_params
    from sslbench.bench.core.overrides import build_config
    from sslbench.bench.measure.naive import build_model

    config = build_config("temporal_ensembling", 0, "smoke")
    naive = build_model(config)
    harness = init_params(config.model, 10, 28, [torch.Generator().manual_seed(0)],
                          torch.device("cpu"))
    assert sum(p.numel() for p in naive.parameters()) == sum(p.numel()
                                                             for p in harness.values())
    assert naive(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_naive_pipeline_learns(data_root):
    import torch

    from sslbench.bench.core.overrides import build_config
    from sslbench.bench.measure.naive import train_naive

    config = build_config("temporal_ensembling", 0, "smoke",
                          {"train.epochs": 3, "data.test_size": 500})
    result = train_naive(config, device=torch.device("cpu"), data_root=data_root)
    assert len(result.epoch_seconds) == 3
    assert all(math.isfinite(x) and x > 0 for x in result.train_images_per_s)
    assert result.supervised_loss[-1] < 0.8 * result.supervised_loss[0]
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.unsupervised_loss[0] > 0  # the ensemble term is computed from the start
    assert result.final_test_accuracy > 0.4  # chance is 0.1; about 0.7 after 3 epochs
