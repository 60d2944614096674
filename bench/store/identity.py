"""A cell is its full config: a store never answers for a run it does not hold.

A grid cell is keyed by (variant, seed), and found only when the stored config has the
planned run id (the config hash). A store that holds the grid's cells under other settings
(another `--set`, another protocol) is refused with one line that names the differing keys,
unless the command names a separate, labeled set of cells (`--settings NAME`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sslbench.bench.core.config import config_from_dict
from sslbench.bench.errors import ConfigError, UserError


def stored_run_id(config: Mapping[str, Any]) -> str | None:
    """The run id of a stored config dict, or None when this code cannot read it."""
    try:
        return config_from_dict(config).config_hash()
    except (ConfigError, KeyError, TypeError, ValueError):
        return None


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value
    return flat


def differing_keys(stored: Mapping[str, Any], planned: Mapping[str, Any]) -> dict[str, tuple]:
    """`key: (stored, planned)` for every config key whose values differ."""
    a, b = _flat(stored), _flat(planned)
    return {k: (a.get(k, "absent"), b.get(k, "absent")) for k in sorted(set(a) | set(b))
            if a.get(k, "absent") != b.get(k, "absent")}


def settings_id(config: Mapping[str, Any]) -> str | None:
    """The run id a stored config dict would have at seed 0: its settings, apart from the
    seed, as this code reads them (None when it cannot)."""
    return stored_run_id({**config, "seed": 0})


def check_same_settings(cells: Sequence[Any],
                        stored: Iterable[tuple[str, str, Mapping[str, Any] | None]],
                        where: str) -> None:
    """Raise a one-line UserError when a stored attempt of a planned variant (any seed)
    holds other settings than the plan: a report would then pair runs of two configs.

    cells: the planned cells (`.key`, `.variant`, `.config`: bench.runner.Cell);
    stored: (cell key, variant, stored config dict) per stored attempt."""
    planned: dict[str, Any] = {}
    for cell in cells:
        planned.setdefault(cell.variant, cell.config)
    for key, variant, config in stored:
        plan = planned.get(variant)
        if plan is None or config is None:
            continue
        if settings_id(config) == replace(plan, seed=0).config_hash():
            continue
        # As this code reads it: keys of older layouts do not show up as differences.
        with contextlib.suppress(ConfigError, KeyError, TypeError, ValueError):
            config = config_from_dict(config).to_dict()
        diff = differing_keys(config, plan.to_dict())
        diff.pop("seed", None)
        shown = ", ".join(f"{k} {old} stored, {new} now"
                          for k, (old, new) in list(diff.items())[:4])
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise UserError(f"{where} holds cell {key} with other settings ({shown or 'run id'}"
                        f"{more}); pass another --storage, or --settings NAME to keep these "
                        f"runs as a separate, labeled set of cells")


