"""Fixtures of the micro-benchmarks: one thread, real MNIST prepared once per session.

Run with `pytest benchmarks --benchmark-only` (the project's addopts skip benchmarks, and
the tests session never collects this folder). `--sslbench-device cuda` times on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from sslbench.bench.core.allocator import keep_freed_memory
from sslbench.bench.core.config import DataConfig
from sslbench.bench.core.data import PreparedData, prepare
from sslbench.bench.core.datasets import MNIST, default_root, fetch

# Runs in the largest stack benchmarked: the data fixture holds labels for this many.
MAX_STACK = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--sslbench-device", default="cpu",
                     help="device of the micro-benchmarks: cpu (default) or cuda")


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> None:
    # One thread: the figures compare with `sslbench bench` and the machine is shared.
    torch.set_num_threads(1)
    keep_freed_memory()  # as bench.train.train_stack does in every training process


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    name = request.config.getoption("--sslbench-device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--sslbench-device cuda, but no CUDA device is available")
    return torch.device(name)


@pytest.fixture(scope="session")
def mnist(device: torch.device) -> PreparedData:
    """2,000 real training images, 100 labels per run, for MAX_STACK runs (seeds 0..4)."""
    root = default_root()
    fetch(root, MNIST)
    return prepare(DataConfig(train_size=2000, test_size=100), list(range(MAX_STACK)), root,
                   device)
