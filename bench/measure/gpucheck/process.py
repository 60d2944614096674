"""Processes: a command in its own process group, killed whole at its deadline; a section's
child process (`--child NAME`), and sections/NAME.json, the file it hands its result in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sslbench.bench.files import write_text_atomic
from sslbench.bench.measure.gpucheck.options import (
    MODULE,
    REPO,
    TAIL_LINES,
    Options,
    child_flags,
)


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # None: killed at the deadline
    seconds: float
    tail: list[str]  # the log's last lines


def run_logged(command: Sequence[str], log_path: Path, timeout_s: float,
               env: dict[str, str] | None = None) -> Finished:
    """Run `command` in its own process group, its output copied line by line to stderr
    and to `log_path`; the whole group is killed after `timeout_s` or on a stop."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                              **(env or {})})
    assert process.stdout is not None
    copier = threading.Thread(target=_copy_lines, args=(process.stdout, log_path), daemon=True)
    copier.start()
    returncode: int | None
    try:
        returncode = process.wait(timeout=max(timeout_s, 0.1))
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        if process.poll() is None:  # the deadline, or a stop of the check itself
            _kill_group(process)
        copier.join(timeout=10)
    return Finished(returncode, time.monotonic() - started, _tail(log_path))


def _copy_lines(stream: IO[str], log_path: Path) -> None:
    with log_path.open("w") as log:
        for line in stream:
            sys.stderr.write(line)
            log.write(line)
            log.flush()


def _kill_group(process: subprocess.Popen[str]) -> None:
    with suppress(ProcessLookupError):  # the group is gone already
        os.killpg(process.pid, signal.SIGKILL)  # the section and every process it spawned
    process.wait()


def _tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class SectionFile:
    """sections/NAME.json, rewritten whole at every step: what the parent reads, even after
    it killed the process."""

    def __init__(self, out: Path, name: str) -> None:
        self.path = out / "sections" / f"{name}.json"

    def write(self, status: str, result: dict[str, Any], **extra: Any) -> None:
        write_text_atomic(self.path, json.dumps({"status": status, "result": result, **extra},
                                                indent=1, default=str) + "\n")


def run_child(options: Options, name: str, *extra: str, timeout_s: float, reserve_s: float
              ) -> dict[str, Any]:
    """Run section `name` in a child process (`--child NAME`) and read what it wrote. The
    process is killed after `timeout_s` (the time left); it plans its own parts to end
    `reserve_s` before that (what the sections after it need to start)."""
    section_file = SectionFile(options.out, name)
    section_file.path.unlink(missing_ok=True)  # a previous call's: never read as this one's
    soft_deadline = time.time() + timeout_s - reserve_s
    command = [sys.executable, "-m", MODULE, "--child", name,
               *child_flags(options), "--deadline", f"{soft_deadline:.1f}", *extra]
    finished = run_logged(command, options.out / "logs" / f"{name}.log", timeout_s)
    return child_outcome(finished, read_json(section_file.path), f"logs/{name}.log")


def child_outcome(finished: Finished, written: dict[str, Any], log: str) -> dict[str, Any]:
    """A section's outcome from its process's end and the file it wrote: ok, timeout (killed
    at the budget) or failed, with the result it had either way."""
    outcome: dict[str, Any] = {"result": written.get("result", {}), "log": log}
    if finished.returncode is None:
        return {**outcome, "status": "timeout",
                "why": f"killed at the end of the budget after {finished.seconds:.0f} s; "
                       f"the result holds what it had finished"}
    if finished.returncode == 0 and written.get("status") == "ok":
        return {**outcome, "status": "ok"}
    return {**outcome, "status": "failed",
            "error": written.get("error") or f"the section's process ended with exit code "
                                              f"{finished.returncode}",
            "traceback": written.get("traceback") or finished.tail}
