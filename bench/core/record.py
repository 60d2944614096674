"""The run record: everything needed to trust, compare and reproduce one run.

A record is plain JSON-able data: the full config and its hash, the labeled subset,
per-epoch curves, headline metrics, throughput, device, versions and git commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import socket
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import torch

from sslbench.bench.core import allocator
from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.datasets import get_dataset
from sslbench.bench.core.schema import SCHEMA_VERSION
from sslbench.bench.core.throughput import device_name, steady_median
from sslbench.bench.core.train import RunResult

# A run whose final accuracy is under twice chance has collapsed (the blog's "cursed
# local minima"): it is kept, flagged and counted, never dropped.
COLLAPSE_FACTOR_OF_CHANCE = 2.0


@cache
def git_commit() -> dict[str, Any]:
    """The commit of the harness's source tree, and whether it had uncommitted changes.

    Read once per process, at its first call: a commit made while a long grid runs must
    not be credited with code loaded before it, so the runner calls this when it starts
    (bench.runner.run_grid, and each job in its worker process), not when a record is
    written hours later. Importing this module reads nothing.

    Only a source checkout has a commit: installed from a wheel, the package sits in
    site-packages, which may itself lie inside some other git work tree (a venv in a
    project folder); that tree's commit is not ours, so the checkout must be the top of
    its work tree and hold this project's pyproject.toml. The record's `sslbench` version
    says which release it was then.
    """
    source = Path(__file__).resolve().parents[2]  # <root>/bench/core/record.py
    if not (source / "pyproject.toml").is_file():
        return {"commit": "unknown", "dirty": None}
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=source,
                             capture_output=True, text=True, timeout=10, check=True).stdout
        if Path(top.strip()).resolve() != source:
            return {"commit": "unknown", "dirty": None}
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=source, capture_output=True, text=True, timeout=10,
                                    check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


@cache
def package_version() -> str:
    """The installed sslbench's version (from its metadata), or "unknown" when run from a
    source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sslbench")
    except PackageNotFoundError:
        return "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    import torchvision

    return {
        "device": device_name(device),
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "sslbench": package_version(),
        "git": git_commit(),
        "flush_denormal": allocator.FLUSHED_DENORMALS,  # see bench.allocator
    }


def lowest_loss_epoch(train_loss: list[float]) -> int:
    """The blog reports the checkpoint with the lowest training loss (never the best test)."""
    return min(range(len(train_loss)), key=train_loss.__getitem__)


def build_record(config: RunConfig, result: RunResult, device: torch.device,
                 started_at: dt.datetime) -> dict[str, Any]:
    """The stored record (JSON); bench.schema.Record reads it back as typed fields."""
    # Chance is 1 / classes: as read (npz:, folder: know theirs only then), else the spec's.
    num_classes = result.num_classes or get_dataset(config.data.dataset).num_classes or 10
    curves = result.curves
    blog_epoch = lowest_loss_epoch(curves["train_loss"])
    final = result.final_test_accuracy
    labeled = json.dumps(result.labeled_indices).encode()
    return {
        "schema": SCHEMA_VERSION,
        "run_id": config.config_hash(),
        "method": config.method.name,
        "seed": config.seed,
        "config": config.to_dict(),
        "labeled_indices": result.labeled_indices,
        "labeled_indices_sha256": hashlib.sha256(labeled).hexdigest(),
        "metrics": {
            "final_test_accuracy": final,  # the headline: last epoch
            "lowest_train_loss_epoch": blog_epoch,
            "lowest_train_loss_test_accuracy": curves["test_accuracy"][blog_epoch],
            "final_val_accuracy": curves["val_accuracy"][-1] if "val_accuracy" in curves else None,
            "collapsed": final < COLLAPSE_FACTOR_OF_CHANCE / num_classes,
            # Other evaluated models, e.g. the mean teacher's student beside the teacher.
            **{f"final_{key}": values[-1] for key, values in curves.items()
               if key.endswith("_test_accuracy")},
        },
        "throughput": {
            "train_images_per_s_median": steady_median(curves["train_images_per_s"]),
            "epoch_seconds_median": steady_median(curves["epoch_seconds"]),
            "eval_seconds_median": steady_median(curves["eval_seconds"]),
            "peak_memory_mib": curves["peak_memory_mib"][0],
            "stack_size": result.stack_size,
            "precision": result.precision,  # train.precision as resolved on this device
            "total_seconds": sum(curves["epoch_seconds"]) + sum(curves["eval_seconds"]),
        },
        # Which images each batch held and how many optimizer steps the run took.
        "schedule": result.schedule,
        "curves": {k: v for k, v in curves.items() if k != "peak_memory_mib"},
        "environment": environment(device),
        # The code of each stretch of training (a resumed run has several); `environment`'s
        # git is the process that finished it.
        "segments": result.segments,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
