"""Building a config: `section.key=value` overrides, type-checked against the dataclass
field types, and `build_config`, the one path from a method, a grid variant, a profile and
`--set` to a RunConfig (bench.core.config)."""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass, replace
from typing import Any, Literal

from sslbench.bench.core.config import (
    FLOAT32_MAX,
    SHARED_METHOD_KEYS,
    MethodConfig,
    RunConfig,
    check,
)
from sslbench.bench.core.profiles import get_profile, profile_changes
from sslbench.bench.errors import ConfigError
from sslbench.methods import get_method, method_names


def _section_types(section_cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


def method_key_types(method: str) -> dict[str, Any]:
    """The method section's keys for `method` with their types: the shared ones, then the
    method's own (its Options)."""
    shared = {k: v for k, v in _section_types(MethodConfig).items() if k != "options"}
    return {**shared, **typing.get_type_hints(get_method(method).Options)}


def _methods_owning(key: str) -> list[str]:
    return [m for m in method_names() if key in typing.get_type_hints(get_method(m).Options)]


def all_keys(method: str | None = None) -> list[str]:
    """Every settable key, e.g. `train.lr`; the method section's for `method`, or those of
    every registered method when it is None."""
    keys = ["seed"]
    for name, section_cls in _section_types(RunConfig).items():
        if name == "method":
            names = dict.fromkeys(k for m in ([method] if method else method_names())
                                  for k in method_key_types(m))
            keys += [f"method.{k}" for k in names]
        elif is_dataclass(section_cls):
            keys += [f"{name}.{f.name}" for f in fields(section_cls)]
    return keys


def _parse_value(key: str, text: str, annotation: Any) -> Any:
    """Parse `text` as a value of `annotation` (int, float, bool, str, Literal, X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if type(None) in options and text.lower() in ("none", "null", "all"):
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _parse_value(key, text, inner)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if text not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}; got {text!r}")
        return text
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false; got {text!r}")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key} must be an integer; got {text!r}") from None
    if annotation is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{key} must be a number; got {text!r}") from None
        # Training runs in float32: a value past its range overflows inside the step.
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise ConfigError(f"{key} must be a finite number within float32's range "
                              f"(|x| <= {FLOAT32_MAX:.3g}); got {text!r}")
        return value
    if annotation is str:
        return text
    raise ConfigError(f"{key} has a type that cannot be set from the command line")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Accept a string (command line) or a Python value (grid module) for a field."""
    if isinstance(value, str):
        text = value
    elif value is None:
        text = "none"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return _parse_value(key, text, annotation)


def with_overrides(config: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Return `config` with `{"section.key": value}` applied; values may be strings.

    Raises ConfigError for unknown keys, wrong types and impossible values.
    """
    sections: dict[str, dict[str, Any]] = {}
    method_changes: dict[str, Any] = {}
    top: dict[str, Any] = {}
    run_types = _section_types(RunConfig)
    for key, raw in overrides.items():
        if key == "seed":
            top["seed"] = _coerce(key, raw, int)
            continue
        section, _, name = key.partition(".")
        if section == "method" and name:
            method_changes[name] = raw  # applied together: a new name brings its own keys
            continue
        section_cls = run_types.get(section)
        if not name or section_cls is None or not is_dataclass(section_cls):
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(all_keys())}")
        field_types = _section_types(section_cls)
        if name not in field_types:
            raise ConfigError(f"unknown config key {key!r}; valid keys in {section}: "
                              f"{', '.join(f'{section}.{n}' for n in field_types)}")
        sections.setdefault(section, {})[name] = _coerce(key, raw, field_types[name])
    updated = {s: replace(getattr(config, s), **changes) for s, changes in sections.items()}
    if method_changes:
        updated["method"] = _method_with(config.method, method_changes)
    return replace(config, **top, **updated)


def _method_with(method: MethodConfig, changes: Mapping[str, Any]) -> MethodConfig:
    """`method` with `{key: value}` applied; a new `name` starts from that method's own
    Options at their defaults, and only its keys (and the shared ones) may be set."""
    name = method.name
    if "name" in changes:
        name = _coerce("method.name", changes["name"], str)
        check(name in method_names(),
               f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
    key_types = method_key_types(name)
    shared: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, raw in changes.items():
        if key == "name":
            continue
        if key not in key_types:
            owners = _methods_owning(key)
            whose = f"; method.{key} is a knob of {', '.join(owners)}" if owners else ""
            raise ConfigError(f"unknown config key 'method.{key}' for method {name}; its keys: "
                              f"{', '.join(f'method.{k}' for k in key_types)}{whose}")
        value = _coerce(f"method.{key}", raw, key_types[key])
        (shared if key in SHARED_METHOD_KEYS else own)[key] = value
    options = method.options if name == method.name else get_method(name).Options()
    try:
        options = replace(options, **own)
    except ValueError as error:  # the method's own check (methods import no ConfigError)
        raise ConfigError(str(error)) from None
    return replace(method, name=name, options=options, **shared)


# Keys a command sets itself, and the flag that does: `--set` may not change them, or a
# grid of seeds 0..4 would train seed 5 five times, and a console line would disagree with
# the record.
OWNED_KEYS = {"seed": "--seed (run) or --seeds (ablate, search)",
              "method.name": "--method (run), the grid's variants (ablate) or --space (search)"}


def parse_set_args(items: Iterable[str]) -> dict[str, str]:
    """Parse `--set key=value` items into a dict, rejecting malformed ones and the keys
    the command owns (OWNED_KEYS)."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r} (e.g. --set train.lr=0.001)")
        if key.strip() in OWNED_KEYS:
            raise ConfigError(f"--set {key.strip()} is not allowed: the command sets it; use "
                              f"{OWNED_KEYS[key.strip()]}")
        parsed[key.strip()] = value.strip()
    return parsed


def build_config(method: str, seed: int, profile: str,
                 overrides: Mapping[str, Any] | None = None,
                 variant_overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults -> the method's defaults -> variant overrides (paper units) -> profile ->
    `--set` overrides."""
    check(method in method_names(),
           f"unknown method {method!r}; choose one of: {', '.join(method_names())}")
    # One step: a method's own defaults (the classic baseline's train.batches=labeled) must
    # arrive with its name, or the config in between would be refused.
    config = with_overrides(RunConfig(seed=seed),
                            {"method.name": method, **get_method(method).default_overrides})
    config = with_overrides(config, variant_overrides or {})
    # The profile and `--set` in one checked step: a config in between (4,000 labels of a
    # 2,000-image smoke slice, before --set data.train_size) is never refused on its own.
    changes = profile_changes(config, get_profile(profile))
    return with_overrides(config, {**changes, **(overrides or {})})
