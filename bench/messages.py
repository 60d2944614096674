"""Progress and status lines for people: on stderr, flushed at once, so they interleave
with the worker processes' lines in order and never mix into a command's stdout (which
carries results, such as a `data fetch` summary or a grid's final tally)."""

from __future__ import annotations

import sys
from collections.abc import Callable

Log = Callable[[str], None]  # what takes a status line: `say`, or a test's list.append


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
