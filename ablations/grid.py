"""A grid is data: a control, named variants as small overrides of it, and seeds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sslbench.bench.errors import ConfigError
from sslbench.methods.registry import Registry


@dataclass(frozen=True)
class Variant:
    name: str
    method: str
    # Config overrides in paper units (epoch lengths of 300 epochs; profiles scale them).
    overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    # The variant this one is compared with, paired by seed (default: the grid's control).
    # A variant that names itself is a reference only and is not compared.
    baseline: str | None = None


@dataclass(frozen=True)
class Published:
    """Published per-seed results a variant reproduces, in accuracy points."""

    values: tuple[float, ...]  # one per published seed; a single value: a rounded figure
    source: str
    # Which per-run figure the publication reports: `lowest_train_loss` (the blog's: test
    # accuracy at the epoch of lowest training loss) or `final`.
    metric: str = "lowest_train_loss"
    profile: str = "paper"  # the protocol the values were obtained under


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    variants: tuple[Variant, ...]
    control: str = "control"
    # The comparisons that form the grid's question (variant names); Holm adjusts over
    # these. Other compared variants are reference checks, each tested at alpha alone.
    # None: every compared variant is in the family.
    family: tuple[str, ...] | None = None
    # Published values that variants reproduce: the report's "Reproduction" section.
    references: Mapping[str, Published] = field(default_factory=dict)
    # What a profile's slice needs changed for this grid, by profile name, applied with the
    # profile (before --set): 4,000 labels do not fit the smoke profile's 2,000 images.
    profile_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"grid {self.name!r} has duplicate variant names")
        if self.control not in names:
            raise ValueError(f"grid {self.name!r}: control {self.control!r} is not a variant")
        for variant in self.variants:
            if variant.baseline is not None and variant.baseline not in names:
                raise ValueError(f"grid {self.name!r}: variant {variant.name!r} is compared "
                                 f"with {variant.baseline!r}, which is not a variant")
        for name in (*(self.family or ()), *self.references):
            if name not in names:
                raise ValueError(f"grid {self.name!r} names {name!r} in its family or "
                                 f"references, which is not a variant")

    def in_family(self, name: str) -> bool:
        """Whether the comparison of `name` with its baseline is part of the question."""
        return self.baseline_of(name) is not None and (self.family is None
                                                       or name in self.family)

    def baseline_of(self, name: str) -> str | None:
        """The variant `name` is compared with, or None when it is not compared."""
        baseline = self.variant(name).baseline or self.control
        return None if baseline == name else baseline

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise ConfigError(f"grid {self.name!r} has no variant {name!r}; "
                          f"choose from: {', '.join(v.name for v in self.variants)}")


GRIDS: Registry[Grid] = Registry("grid", error=ConfigError, hint=" (`sslbench ablate --list`)")


def register_grid(grid: Grid) -> Grid:
    return GRIDS.add(grid.name, grid)


def grid_names() -> list[str]:
    return GRIDS.names()


def get_grid(name: str) -> Grid:
    return GRIDS.get(name)
