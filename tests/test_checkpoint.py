"""Checkpoints: a run killed with kill -9 and resumed ends with exactly the same record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from sslbench.bench.core.checkpoint import CheckpointPolicy, Interrupted
from sslbench.bench.core.train import single_run, train_stack
from sslbench.bench.errors import UserError
from tests.conftest import smoke_config

CPU = torch.device("cpu")
COMPARED = ("supervised_loss", "unsupervised_loss", "train_loss", "test_accuracy", "weight")


def run_args(out, checkpoint, root, method="temporal_ensembling"):
    return [sys.executable, "-m", "sslbench.bench.cli", "run", "--method", method, "--seed", "2",
            "--profile", "smoke", "--set", "train.epochs=5", "--set", "method.ramp_epochs=2",
            "--device", "cpu", "--threads", "1", "--out", str(out), "--checkpoint",
            str(checkpoint), "--checkpoint-every", "1", "--root", str(root)]


@pytest.mark.parametrize("method", ["temporal_ensembling", "mean_teacher"])
def test_kill_9_and_resume_gives_the_same_record(tmp_path, data_root, method):
    alone = tmp_path / "alone.json"
    done = subprocess.run(run_args(alone, tmp_path / "alone.ckpt", data_root, method),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    out, checkpoint = tmp_path / "killed.json", tmp_path / "killed.ckpt"
    process = subprocess.Popen(run_args(out, checkpoint, data_root, method),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not out.exists()
    resumed_from = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= resumed_from < 5

    again = subprocess.run(run_args(out, checkpoint, data_root, method), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"resuming from epoch {resumed_from + 1}" in again.stderr
    first, second = json.loads(alone.read_text()), json.loads(out.read_text())
    for key in COMPARED:
        assert first["curves"][key] == second["curves"][key], key
    assert first["metrics"] == second["metrics"]
    # the record keeps each stretch of training and its code, not only the last
    assert [(s["from_epoch"], s["to_epoch"]) for s in first["segments"]] == [(0, 5)]
    assert [(s["from_epoch"], s["to_epoch"]) for s in second["segments"]] == [
        (0, resumed_from), (resumed_from, 5)]
    assert {s["commit"] for s in second["segments"]} == {first["environment"]["git"]["commit"]}
    if method == "mean_teacher":  # the teacher's state was restored too, not re-copied
        assert first["curves"]["student_test_accuracy"] == second["curves"]["student_test_accuracy"]
        assert "final_student_test_accuracy" in second["metrics"]
    assert not checkpoint.exists()  # removed once the record is written


@pytest.mark.parametrize("where", ["epoch_boundary", "mid_epoch"])
def test_stop_request_saves_and_resumes_exactly(tmp_path, data_root, where):
    config = smoke_config(train__epochs=3, method__ramp_epochs=1)
    reference = single_run(config, device=CPU, data_root=data_root)
    policy = CheckpointPolicy(tmp_path / "run.ckpt", every_epochs=0)

    def request_stop(summary):  # as the SIGTERM handler does, from outside the loop
        if summary.epoch == 0:
            if where == "epoch_boundary":
                policy.stop.set()
            else:  # during epoch 1 (an epoch of the slice takes about a second here)
                threading.Timer(0.2, policy.stop.set).start()

    with pytest.raises(Interrupted) as stopped:
        single_run(config, device=CPU, data_root=data_root, progress=request_stop,
                   checkpoint=policy)
    assert stopped.value.epoch == 1
    assert (stopped.value.step == 0) == (where == "epoch_boundary")
    policy.stop.clear()
    if where == "epoch_boundary":  # a checkpoint written before segments were recorded
        saved = torch.load(policy.path, weights_only=False)
        del saved["segments"]
        torch.save(saved, policy.path)
    resumed = single_run(config, device=CPU, data_root=data_root, checkpoint=policy)
    for key in ("supervised_loss", "unsupervised_loss", "train_loss", "test_accuracy"):
        assert resumed.curves[key] == reference.curves[key], key
    first, last = resumed.segments
    assert (first["from_epoch"], first["to_epoch"], last["from_epoch"], last["to_epoch"]) == \
        (0, 1, 1, 3)
    assert first["commit"].startswith("unknown") == (where == "epoch_boundary")
    assert last["commit"] == reference.segments[0]["commit"]
    assert (last["from_step"] > 0) == (where == "mid_epoch")


@pytest.mark.parametrize("method, overrides", [
    ("temporal_ensembling", {}),
    ("temporal_ensembling", {"data__translate_px": 2}),  # the augmentation stream too
    ("mean_teacher", {}),
])
def test_a_stack_stopped_mid_epoch_resumes_to_the_uninterrupted_records(tmp_path, data_root,
                                                                        method, overrides):
    """A stacked job of two seeds (how grids and --finalize run cells on CUDA, and with
    --stack on the CPU), stopped mid-epoch and resumed, gives each seed the curves of the
    uninterrupted stack, bit for bit on the CPU."""
    config = smoke_config(method, train__epochs=3, method__ramp_epochs=1, **overrides)
    reference = train_stack(config, [0, 1], device=CPU, data_root=data_root)
    policy = CheckpointPolicy(tmp_path / "stack.ckpt", every_epochs=1)

    def request_stop(summary):
        if summary.epoch == 0:
            threading.Timer(0.3, policy.stop.set).start()

    with pytest.raises(Interrupted) as stopped:
        train_stack(config, [0, 1], device=CPU, data_root=data_root, progress=request_stop,
                    checkpoint=policy)
    assert stopped.value.epoch == 1 and stopped.value.step > 0  # mid-epoch
    policy.stop.clear()
    resumed = train_stack(config, [0, 1], device=CPU, data_root=data_root, checkpoint=policy)
    for before, after in zip(reference, resumed, strict=True):
        assert after.labeled_indices == before.labeled_indices
        for key in ("supervised_loss", "unsupervised_loss", "train_loss", "test_accuracy"):
            assert after.curves[key] == before.curves[key], (method, key)


def test_a_checkpoint_of_another_config_is_refused(tmp_path, data_root):
    policy = CheckpointPolicy(tmp_path / "run.ckpt", every_epochs=1)
    single_run(smoke_config(train__epochs=2), device=CPU, data_root=data_root, checkpoint=policy)
    assert policy.path.exists()  # kept: the last epoch is not checkpointed, so epoch 1 remains
    with pytest.raises(UserError, match="belongs to run"):
        single_run(smoke_config(train__epochs=2, train__lr=0.001), device=CPU,
                   data_root=data_root, checkpoint=policy)


class _Payload:
    """A pickle that runs a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_runs_no_code_and_is_one_line(tmp_path, data_root):
    """A pickle payload where a resume will read it: refused in one line, never run."""
    marker = tmp_path / "PWNED"
    checkpoint = tmp_path / "run.ckpt"
    torch.save({"version": 1, "run_id": _Payload(marker)}, checkpoint)
    result = subprocess.run(
        [sys.executable, "-m", "sslbench.bench.cli", "run", "--method", "supervised", "--profile",
         "smoke", "--set", "train.epochs=1", "--checkpoint", str(checkpoint), "--out",
         str(tmp_path / "run.json"), "--root", str(data_root)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be read as a checkpoint" in lines[0], lines
    assert not marker.exists()
    assert not (tmp_path / "run.json").exists()
