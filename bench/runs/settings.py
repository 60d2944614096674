"""GridSettings: everything one `ablate` asks of a grid, as one frozen value.

Which cells (profile, seeds, variants, `--set`) and how they run (workers, device,
checkpoints, the queue's grace). The CLI builds it once from its flags; `run_grid`,
`--until-decided` (a copy per round, `with_seeds`), a search's final runs and the GPU
check's slice all take it whole, so no option travels as a loose keyword.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from sslbench.bench.core.datasets import default_root
from sslbench.bench.store.queue import DEFAULT_GRACE_S


@dataclass(frozen=True)
class GridSettings:
    profile: str
    seeds: tuple[int, ...]
    variants: tuple[str, ...] | None = None  # None: every variant of the grid
    # `--set key=value`, parsed once (bench.core.overrides.parse_set_args), values as typed
    overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # A named, separate set of the grid's cells with other settings in the same store
    # (`--settings NAME`); None: the grid's own cells.
    settings_name: str | None = None
    data_root: Path = field(default_factory=default_root)
    workers: int = 1  # processes (or, on one GPU, stacks) at once
    device: str = "auto"
    threads: int | None = None  # per worker on the CPU; None: the cores shared out
    stack: int | None = None  # seeds trained as one stacked model; None: see default_stack
    retry_failed: bool = False  # rerun cells that diverged (kept otherwise)
    checkpoint_dir: Path | None = None  # None: no checkpoints
    checkpoint_every: int = 1  # epochs
    grace_s: float = DEFAULT_GRACE_S  # seconds without a heartbeat before a cell is taken over
    wait_for_others: bool = True  # wait for cells running elsewhere, take over the dead
    # Refuse to run unless this code is one clean commit, the one the grid's finished cells
    # ran at (`--pin-code`); otherwise a mismatch is only warned about.
    pin_code: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.variants is not None:
            object.__setattr__(self, "variants", tuple(self.variants))
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    def with_seeds(self, seeds: Iterable[int]) -> GridSettings:
        return replace(self, seeds=tuple(seeds))

    def with_variants(self, variants: Iterable[str] | None) -> GridSettings:
        return replace(self, variants=tuple(variants) if variants is not None else None)
