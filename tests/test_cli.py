"""The command line as a user meets it: real processes, real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from bench.datasets import MNIST, raw_dir


def sslbench(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_run_writes_a_complete_record(tmp_path, data_root):
    out = tmp_path / "run.json"
    result = sslbench("run", "--method", "temporal_ensembling", "--seed", "1", "--profile",
                      "smoke", "--set", "train.epochs=2", "--device", "cpu", "--out", str(out),
                      "--root", str(data_root))
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stderr and "test accuracy" in result.stdout
    record = json.loads(out.read_text())
    assert record["seed"] == 1 and record["method"] == "temporal_ensembling"
    assert record["config"]["train"]["epochs"] == 2 and len(record["run_id"]) == 16
    assert len(record["labeled_indices"]) == 100
    for curve in ("supervised_loss", "unsupervised_loss", "weight", "test_accuracy",
                  "train_images_per_s", "epoch_seconds"):
        assert len(record["curves"][curve]) == 2, curve
    metrics = record["metrics"]
    assert metrics["final_test_accuracy"] == record["curves"]["test_accuracy"][-1]
    assert metrics["lowest_train_loss_test_accuracy"] == (
        record["curves"]["test_accuracy"][metrics["lowest_train_loss_epoch"]])
    assert record["throughput"]["train_images_per_s_median"] > 0
    assert record["throughput"]["peak_memory_mib"] > 0
    assert record["environment"]["torch"].startswith("2.") and record["environment"]["device"]


BAD_INPUTS = [
    (["run", "--method", "mixmatch", "--profile", "smoke"], "unknown method 'mixmatch'"),
    (["run", "--method", "supervised", "--profile", "huge"], "unknown profile 'huge'"),
    (["run", "--method", "supervised", "--profile", "smoke", "--set", "train.nope=1"],
     "unknown config key 'train.nope'"),
    (["run", "--method", "supervised", "--profile", "smoke", "--set", "train.epochs=-3"],
     "train.epochs must be > 0"),
    (["run", "--method", "supervised", "--profile", "smoke", "--set", "data.num_labels=95"],
     "must be divisible by the 10 classes"),
    (["run", "--method", "supervised", "--profile", "smoke", "--device", "tpu"],
     "unknown device 'tpu'"),
    (["ablate", "--grid", "nope", "--profile", "smoke"], "unknown grid 'nope'"),
    (["ablate", "--grid", "mnist100", "--profile", "smoke", "--variants", "nope"],
     "has no variant 'nope'"),
    (["ablate", "--grid", "mnist100", "--profile", "smoke", "--storage",
      "postgresql://nobody@127.0.0.1:1/none"], "cannot open run store"),
    (["report", "--grid", "mnist100", "--storage", "sqlite:///empty.db"], "has no runs of grid"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_gets_one_line_and_exit_2(tmp_path, data_root, args, message):
    result = sslbench(*args, "--root", str(data_root)) if args[0] != "report" else sslbench(
        *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.stderr


def test_corrupt_data_names_the_file_and_the_fetch_command(tmp_path, data_root):
    shutil.copytree(raw_dir(data_root, MNIST), raw_dir(tmp_path, MNIST))
    (raw_dir(tmp_path, MNIST) / "t10k-images-idx3-ubyte").write_bytes(b"\x00" * 100)
    result = sslbench("run", "--method", "supervised", "--profile", "smoke", "--root",
                      str(tmp_path))
    assert result.returncode == 2
    assert "t10k-images-idx3-ubyte has 100 bytes" in result.stderr
    assert f"sslbench data fetch --dataset mnist --root {tmp_path}" in result.stderr


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path, data_root):
    notes = tmp_path / "notes.db"
    notes.write_text("my precious notes")
    result = sslbench("ablate", "--grid", "mnist100", "--profile", "smoke", "--storage",
                      f"sqlite:///{notes}", "--root", str(data_root))
    assert result.returncode == 2 and "is not a SQLite database" in result.stderr
    assert notes.read_text() == "my precious notes"


def test_debug_shows_the_traceback(data_root):
    result = sslbench("--debug", "run", "--method", "mixmatch", "--root", str(data_root))
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_data_fetch_verifies_present_files(data_root):
    result = sslbench("data", "fetch", "--root", str(data_root))
    assert result.returncode == 0 and "present and verified" in result.stdout


def test_ablate_list_shows_the_grids():
    result = sslbench("ablate", "--list")
    assert result.returncode == 0
    for variant in ("control", "supervised", "pixelwise", "batch_scaling", "ramp_fast",
                    "ramp_slow", "ramp_none", "prob_targets"):
        assert variant in result.stdout
