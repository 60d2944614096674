"""Every study name of a store, built and parsed here and nowhere else.

- `grid:NAME:PROFILE` holds a grid's cells; `grid:NAME:PROFILE@SETTINGS` a labeled set of
  them kept apart (`--settings`);
- `search:SPACE:PROFILE` holds a search's trials;
- `claim:STUDY:CELL:RUN_ID:` names the short-lived study through which one runner claims a
  cell (bench.store.queue).
"""

from __future__ import annotations

from sslbench.bench.errors import UserError

GRID_PREFIX = "grid:"
SEARCH_PREFIX = "search:"
CLAIM_PREFIX = "claim:"
SETTINGS_SEPARATOR = "@"  # grid:NAME:PROFILE@SETTINGS names a labeled set of cells


def settings_suffix(settings: str | None) -> str:
    """'' for the grid's own cells, `@NAME` for a labeled set (checked: a short name)."""
    if settings is None:
        return ""
    if not settings or not settings.replace("-", "").replace("_", "").isalnum():
        raise UserError(f"--settings {settings!r} must be a short name of letters, digits, "
                        f"- and _")
    return SETTINGS_SEPARATOR + settings


def grid_study_name(grid: str, profile: str, settings: str | None = None) -> str:
    """`profile` may already carry `@SETTINGS` (a stored profile key)."""
    return f"{GRID_PREFIX}{grid}:{profile}{settings_suffix(settings)}"


def grid_study_prefix(grid: str) -> str:
    """What the names of all of a grid's studies start with."""
    return f"{GRID_PREFIX}{grid}:"


def is_grid_study(name: str) -> bool:
    return name.startswith(GRID_PREFIX)


def grid_study_parts(name: str) -> tuple[str, str, str]:
    """grid:NAME:PROFILE[@SETTINGS] -> (NAME, PROFILE, SETTINGS or "")."""
    grid, _, rest = name.removeprefix(GRID_PREFIX).partition(":")
    profile, _, settings = rest.partition(SETTINGS_SEPARATOR)
    return grid, profile, settings


def stored_profile_key(name: str, grid: str) -> str:
    """The `PROFILE[@SETTINGS]` part of one of `grid`'s study names."""
    return name.removeprefix(grid_study_prefix(grid))


def search_study_name(space: str, profile: str) -> str:
    return f"{SEARCH_PREFIX}{space}:{profile}"


def claim_prefix(study_name: str) -> str:
    """What the names of a study's claim studies start with."""
    return f"{CLAIM_PREFIX}{study_name}:"
