"""results.json as it is written, section by section, and the deadline it is written against."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict
from typing import Any

from sslbench.bench.files import write_text_atomic
from sslbench.bench.measure.gpucheck.environment import environment
from sslbench.bench.measure.gpucheck.options import SCHEMA, SECTIONS, Options, command_line
from sslbench.bench.measure.gpucheck.render import render_summary
from sslbench.bench.messages import Log


class CheckStopped(Exception):
    """SIGTERM or SIGINT reached the check: stop, kill the section, write what there is."""


class Check:
    """The document being written (results.json) and the deadline it is written against."""

    def __init__(self, options: Options, log: Log) -> None:
        self.options, self.log = options, log
        self.started = time.monotonic()
        self.deadline = self.started + options.budget_s
        self.doc: dict[str, Any] = {
            "schema": SCHEMA,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command_line(options),
            "sizes": asdict(options.sizes),
            "budget_s": options.budget_s,
            "environment": environment(options.device),
            "sections": {name: {"status": "pending"} for name in SECTIONS},
        }

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def section(self, name: str) -> dict[str, Any]:
        section: dict[str, Any] = self.doc["sections"][name]
        return section

    def save(self) -> None:
        self.doc["elapsed_s"] = round(time.monotonic() - self.started, 1)
        out = self.options.out
        write_text_atomic(out / "results.json", json.dumps(self.doc, indent=1) + "\n")
        write_text_atomic(out / "summary.md", render_summary(self.doc))
