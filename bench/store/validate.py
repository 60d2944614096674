"""A stored record checked when it is read, against the documented schema (bench.core.schema).

A store's bytes can go bad (a hand edit, a bug in an older writer, a disk): a record that is
not a JSON object, lacks a field, holds a field of the wrong type, an accuracy outside
[0, 1] (5.0 is not 500%), a figure that is not finite, or a schema newer than this code
reads. Such a record is quarantined where the store is read (bench.store.runstore): its
attempt reads as failed, kind "invalid", with the reason; it is listed in the report's
failures and enters no number, `ablate` reruns its cell (the stored bytes stay as written),
and nothing else in the store is affected.
"""

from __future__ import annotations

import math
from typing import Any

from sslbench.bench.core.schema import SCHEMA_VERSION, Record

INVALID = "invalid"  # the failure kind of a quarantined record


def _fraction(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} is {type(value).__name__}, not a number"
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        return f"{name} is {value!r}, not a fraction in [0, 1]"
    return None


def _number(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} is {type(value).__name__}, not a number"
    if not math.isfinite(value) or value < 0:
        return f"{name} is {value!r}, not a finite number >= 0"
    return None


def record_problem(stored: Any) -> str | None:
    """Why a stored record cannot be read as one, or None when it can."""
    if not isinstance(stored, dict):
        return f"the record is {type(stored).__name__}, not a JSON object"
    schema = stored.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= \
            SCHEMA_VERSION:
        return (f"schema {schema!r} is not one this version reads (1 to {SCHEMA_VERSION}); "
                f"a newer sslbench wrote it, or it is damaged")
    try:
        record = Record.from_dict(stored)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        what = f"field {error.args[0]!r} is missing" if isinstance(error, KeyError) \
            else f"{type(error).__name__}: {error}"
        return f"not a record of schema {schema}: {what}"
    metrics, speed = record.metrics, record.throughput
    checks = [_fraction("metrics.final_test_accuracy", metrics.final_test_accuracy),
              _fraction("metrics.lowest_train_loss_test_accuracy",
                        metrics.lowest_train_loss_test_accuracy),
              *(_fraction(f"metrics.{name}", value) for name, value in metrics.evaluated.items()),
              _number("throughput.total_seconds", speed.total_seconds),
              _number("throughput.train_images_per_s_median", speed.train_images_per_s_median)]
    if not isinstance(record.curves, dict) or not isinstance(
            record.curves.get("test_accuracy"), list):
        checks.append("curves.test_accuracy is missing or not a list")
    else:
        checks += [_fraction(f"curves.test_accuracy[{i}]", v)
                   for i, v in enumerate(record.curves["test_accuracy"])]
    return next((c for c in checks if c), None)
