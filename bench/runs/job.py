"""One job in whichever process runs it: its cells trained as one stack, resumed from and
saved to its checkpoint, and its outcome per cell as plain values (bench.store.queue's
JobResult), never an exception."""

from __future__ import annotations

import datetime as dt
import traceback
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslbench.bench.core.checkpoint import CheckpointPolicy
from sslbench.bench.core.config import RunConfig, config_from_dict
from sslbench.bench.core.device import resolve_device
from sslbench.bench.core.record import build_record, git_commit
from sslbench.bench.core.train import Stopped, train_until_stopped
from sslbench.bench.errors import DivergedError
from sslbench.bench.runs.pool import report, worker_stop
from sslbench.bench.store.queue import JobResult


def checkpoint_path(checkpoint_dir: str, config: RunConfig,
                    seeds: Sequence[int] | None = None) -> Path:
    """A cell's checkpoint, named by its run id; a stack's adds the seeds it trains."""
    if seeds is None or len(seeds) == 1:
        return Path(checkpoint_dir) / f"{config.config_hash()}.pt"
    return Path(checkpoint_dir) / f"{config.config_hash()}-seeds{'_'.join(map(str, seeds))}.pt"


@dataclass(frozen=True)
class JobSpec:
    """What a worker process needs to train a job: plain values, cheap to send."""

    key: str  # the job's name in progress lines, e.g. "control/seed0"
    configs: tuple[dict[str, Any], ...]  # one variant's configs, differing only in seed
    device: str
    data_root: str
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1


def execute_job(spec: JobSpec) -> list[JobResult]:
    """Train the cells of one job as one stack; never raises: one JobResult per cell.

    With a checkpoint folder the job resumes from its checkpoint (named by run id and
    seeds), saves every `checkpoint_every` epochs and when asked to stop; the runner
    removes it once the records are stored. A stack that diverges is rerun cell by cell,
    so only the diverging seed is marked; a stop asked meanwhile leaves the cells not yet
    rerun interrupted.
    """
    git_commit()  # this process's code, read before training (bench.record.git_commit)
    results = _attempt(spec, spec.configs)
    if len(spec.configs) == 1 or results[0].status != "diverged":
        return results
    stopped = JobResult("interrupted", reason="interrupted before its rerun")
    return [_attempt(spec, [c])[0] if not worker_stop().is_set() else stopped
            for c in spec.configs]


def _attempt(spec: JobSpec, config_dicts: Sequence[dict[str, Any]]) -> list[JobResult]:
    """One training of the configs as one stack; its outcome per cell, never raising."""
    cells = len(config_dicts)
    policy = None
    try:
        configs = [config_from_dict(c) for c in config_dicts]
        seeds = [c.seed for c in configs]
        device = resolve_device(spec.device)
        started = dt.datetime.now(dt.UTC)
        if spec.checkpoint_dir:
            policy = CheckpointPolicy(checkpoint_path(spec.checkpoint_dir, configs[0], seeds),
                                      spec.checkpoint_every, stop=worker_stop())
        outcome = train_until_stopped(configs[0], seeds, device=device,
                                      data_root=Path(spec.data_root),
                                      progress=lambda summary: report((spec.key, summary)),
                                      checkpoint=policy)
        if isinstance(outcome, Stopped):
            return [JobResult("interrupted", reason=f"interrupted: stopped at epoch "
                                                    f"{outcome.epoch + 1}, step {outcome.step}; "
                                                    f"checkpoint saved to {outcome.checkpoint}")
                    ] * cells
        # The checkpoint stays until the runner has stored the records (GridRun.settle): a
        # store write that fails (a full disk) then costs at most the last epoch.
        return [JobResult("ok", record=build_record(config, result, device, started))
                for config, result in zip(configs, outcome, strict=True)]
    except DivergedError as error:
        if cells > 1 and policy is not None:  # its cells rerun alone: never resumed
            policy.path.unlink(missing_ok=True)
        return [JobResult("diverged", reason=str(error))] * cells
    except Exception as error:
        detail = traceback.format_exc(limit=8)
        return [JobResult("error", reason=f"{type(error).__name__}: {error}\n{detail}")] * cells


def job_results(future: Future[list[JobResult]], cells: int) -> list[JobResult]:
    """A finished job's results; one error per cell when the worker process itself died."""
    error = future.exception()
    if error is not None:
        return [JobResult("error", reason=f"worker process failed: {error}")] * cells
    return future.result()
