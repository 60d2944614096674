"""Start-up of the command line, side by side: `sslbench --help` (the light parser, no
engine), `sslbench run --help` (the full parser: the registries, and so torch) and a bare
Python, each a fresh process. The target: `sslbench --help` under half a second, which the
ratio to the bare interpreter shows on any machine; nothing here asserts a time."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

COMMANDS = {
    "python": [sys.executable, "-c", "pass"],
    "sslbench --help": [sys.executable, "-m", "sslbench.bench.cli", "--help"],
    "sslbench run --help": [sys.executable, "-m", "sslbench.bench.cli", "run", "--help"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_startup(benchmark: BenchmarkFixture, name: str) -> None:
    def start() -> str:
        return subprocess.run(COMMANDS[name], capture_output=True, text=True, check=True,
                              timeout=120).stdout

    out = benchmark.pedantic(start, rounds=5, warmup_rounds=1)
    benchmark.extra_info["what"] = name
    assert name == "python" or "usage: sslbench" in out  # timed what it claims
