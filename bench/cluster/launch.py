"""Submitting tasks through submitit: a Slurm job array (`--launcher slurm`) or the same
tasks as this machine's processes (`--launcher local`, submitit's local executor), and
asking whether they still live.

The cluster's flags map onto sbatch's own: `--partition`, `--gpus-per-job`
(--gpus-per-node), `--cpus-per-job` (--cpus-per-task), `--time`, `--mem`, `--account`,
`--qos`, and `--slurm-extra KEY=VALUE` for any other sbatch option. submitit adds
`--signal=USR2@90`: 90 s before the time limit or a preemption the task saves and requeues
(bench.cluster.entry).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslbench.bench.errors import UserError

LAUNCHERS = ("here", "slurm", "local")
# Seconds between Slurm's USR2 and the end of the task's time: the cells in flight save
# their checkpoints (one step and one file write) and the task requeues.
SIGNAL_DELAY_S = 90
TIME_FORMS = "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (Slurm's forms)"


@dataclass(frozen=True)
class ClusterOptions:
    """What the user asks of the scheduler (the command's cluster flags)."""

    launcher: str  # "slurm" or "local"
    jobs: int | None = None  # tasks in the array; None: one per job of the grid
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    time: str | None = None  # Slurm's time forms; None: from the grid's estimate
    mem: str | None = None  # Slurm's forms: 16G, 4000M
    account: str | None = None
    qos: str | None = None
    extra: tuple[tuple[str, str], ...] = ()  # any other sbatch option, KEY=VALUE
    log_dir: Path | None = None  # None: beside the store (bench.cluster.grid)
    wait: bool = False  # follow the tasks from the store until they end


def time_minutes(text: str) -> int:
    """Slurm's time forms ("90", "1:30:00", "2-12") in whole minutes, rounded up; a
    one-line error for anything else."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise UserError(f"--time {text!r}: give {TIME_FORMS}")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = (int(days) * 24 + int(first)) * 3600 + int(second or 0) * 60 + int(third or 0)
    elif third is not None:  # HH:MM:SS
        seconds = int(first) * 3600 + int(second) * 60 + int(third)
    elif second is not None:  # MM:SS
        seconds = int(first) * 60 + int(second)
    else:  # minutes
        seconds = int(first) * 60
    if seconds <= 0:
        raise UserError(f"--time {text!r} is no time at all; give {TIME_FORMS}")
    return math.ceil(seconds / 60)


def parse_extra(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--slurm-extra KEY=VALUE ...` as sbatch options (KEY with - or _, as sbatch spells
    them: constraint=a100, exclude=node3, mail-type=END)."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise UserError(f"--slurm-extra {item!r}: give KEY=VALUE, an sbatch option without "
                            f"its dashes (constraint=a100, exclude=node3)")
        pairs.append((key.replace("-", "_"), value))
    return tuple(pairs)


@dataclass
class Submitted:
    """The tasks submitted: their ids, where their logs go, and whether any still lives."""

    launcher: str
    job_ids: list[str]
    log_dir: Path
    handles: list[Any] = field(repr=False, default_factory=list)  # submitit's Job objects

    @property
    def array_id(self) -> str:
        return self.job_ids[0].split("_")[0]

    def log_pattern(self) -> str:
        """Where each task's output goes (submitit: `ID_0_log.err` and `.out` per task; a
        Slurm array's tasks are ARRAY_TASK, the local executor's their process ids)."""
        if self.launcher == "local":
            return ", ".join(str(self.log_dir / f"{i}_0_log.err") for i in self.job_ids)
        if len(self.job_ids) == 1:
            return str(self.log_dir / f"{self.array_id}_0_log.err")
        return str(self.log_dir / f"{self.array_id}_*_0_log.err")

    def alive(self) -> bool:
        """Whether a task is still pending, running or requeued."""
        if self.launcher == "local":
            return any(not job.done() for job in self.handles)
        listed = subprocess.run(["squeue", "-h", "-j", self.array_id, "-o", "%i %T"],
                                capture_output=True, text=True, check=False)
        if listed.returncode != 0:  # an id squeue no longer knows: the array has ended
            return False
        return bool(listed.stdout.strip())

    def cancel_hint(self) -> str:
        if self.launcher == "local":
            return "they end with this command"
        return f"`scancel {self.array_id}` stops them"


def check_reachable(launcher: str) -> None:
    """Before anything is opened: Slurm's commands are here and its controller answers."""
    if launcher != "slurm":
        return
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        raise UserError("--launcher slurm: sbatch is not on PATH; run on a Slurm login node, "
                        "or use --launcher local on this machine")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    # "Slurmctld(primary) at HOST is DOWN", then a banner of asterisks
    answer = (ping.stdout.strip().splitlines() or ping.stderr.strip().splitlines()
              or [f"exit status {ping.returncode}"])[0]
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        raise UserError(f"--launcher slurm: the Slurm controller does not answer (scontrol "
                        f"ping: {answer}); check SLURM_CONF and `sinfo`, or use --launcher "
                        f"local")


def _executor(options: ClusterOptions, log_dir: Path, name: str, minutes: int) -> Any:
    import submitit

    executor = submitit.AutoExecutor(folder=log_dir, cluster=options.launcher)
    generic: dict[str, Any] = {"name": name, "timeout_min": minutes,
                               "cpus_per_task": options.cpus_per_job}
    if options.gpus_per_job:
        generic["gpus_per_node"] = options.gpus_per_job
    if options.launcher == "slurm":
        slurm: dict[str, Any] = {"slurm_signal_delay_s": SIGNAL_DELAY_S}
        for key, value in (("slurm_partition", options.partition),
                           ("slurm_mem", options.mem), ("slurm_account", options.account),
                           ("slurm_qos", options.qos)):
            if value is not None:
                slurm[key] = value
        if options.extra:
            slurm["slurm_additional_parameters"] = dict(options.extra)
        generic |= slurm
    # The local executor sends USR2 30 s before its time limit (its fixed delay).
    try:
        executor.update_parameters(**generic)
    except (ValueError, NameError) as error:  # submitit's check of sbatch's options
        raise UserError(f"--launcher {options.launcher}: {str(error).splitlines()[0]}") from None
    return executor


def submit(options: ClusterOptions, task: Callable[[], Any], count: int, *, log_dir: Path,
           name: str, minutes: int) -> Submitted:
    """`count` copies of `task` as one job array (one job when count is 1)."""
    check_reachable(options.launcher)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_dir.chmod(0o700)  # submitit's pickles of the tasks: only their owner may replace them
    executor = _executor(options, log_dir, name, minutes)
    try:  # submitit prints sbatch's stderr on a failure; the one line below says it
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            handles = [executor.submit(task) for _ in range(count)]
    except Exception as error:  # sbatch's refusal (submitit: FailedJobError with its stderr)
        text = str(error).strip()
        lines = [line for line in text.splitlines() if "error" in line.lower()] or \
            text.splitlines() or [type(error).__name__]
        raise UserError(f"--launcher {options.launcher}: the submission failed: "
                        f"{lines[-1].strip()} (check the flags and `sinfo`)") from None
    return Submitted(options.launcher, [str(job.job_id) for job in handles], log_dir, handles)
