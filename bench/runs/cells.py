"""A grid's cells (one variant at one seed) and jobs (the cells trained as one stack).

Planning is pure: the configs of every cell are built and checked here, before anything
is stored or trained, and the same settings always plan the same cells in the same order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from sslbench.ablations.grid import Grid
from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.overrides import build_config


@dataclass(frozen=True)
class Cell:
    variant: str
    seed: int
    config: RunConfig

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"


def plan_cells(grid: Grid, profile: str, seeds: Sequence[int],
               variants: Sequence[str] | None = None,
               overrides: Mapping[str, str] | None = None) -> list[Cell]:
    """All cells of the grid (or of the chosen variants), configs checked up front."""
    chosen = [grid.variant(name) for name in variants] if variants else list(grid.variants)
    # One full build per variant; seeds only replace the seed (the seed enters no other
    # field), so planning 100,000 seeds takes seconds, not minutes.
    overrides = {**grid.profile_overrides.get(profile, {}), **(overrides or {})}
    base = {v.name: build_config(v.method, 0, profile, overrides, v.overrides) for v in chosen}
    # Seed-major order: an interrupted grid leaves whole seeds, i.e. complete pairs.
    return [Cell(v.name, seed, replace(base[v.name], seed=seed)) for seed in seeds for v in chosen]


@dataclass(frozen=True)
class Job:
    """Cells of one variant trained together as one stack (one cell when not stacking)."""

    cells: tuple[Cell, ...]

    @property
    def key(self) -> str:
        if len(self.cells) == 1:
            return self.cells[0].key
        seeds = [c.seed for c in self.cells]
        return f"{self.cells[0].variant}/seeds{','.join(map(str, seeds))}"


def plan_jobs(cells: Sequence[Cell], stack: int) -> list[Job]:
    """Group the cells of each variant into stacks of up to `stack` seeds, in seed order;
    the jobs keep the cells' order of first appearance (seed-major)."""
    if stack <= 1:
        return [Job((cell,)) for cell in cells]
    by_variant: dict[str, list[Cell]] = {}
    for cell in cells:
        by_variant.setdefault(cell.variant, []).append(cell)
    jobs: list[Job] = []
    placed: set[str] = set()
    for cell in cells:
        if cell.variant in placed:
            continue
        placed.add(cell.variant)
        same = sorted(by_variant[cell.variant], key=lambda c: c.seed)
        jobs += [Job(tuple(same[i:i + stack])) for i in range(0, len(same), stack)]
    return jobs


def default_stack(device: torch.device, seeds: int) -> int:
    """All seeds of a variant in one stack on CUDA, where one run leaves the GPU idle
    between kernel launches; one run per process on the CPU, where the cores are the
    limit and `workers` shares them out."""
    return max(1, seeds) if device.type == "cuda" else 1


def default_threads(workers: int) -> int:
    """Threads per worker on CPU: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
