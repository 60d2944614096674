"""The command line: `sslbench gpucheck` (a subcommand of the CLI) and
`python -m sslbench.bench.measure.gpucheck`, which also starts each section's own process
(`--child NAME`)."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sslbench.bench.errors import UserError
from sslbench.bench.files import check_writable
from sslbench.bench.measure.gpucheck.check import passed, run_check
from sslbench.bench.measure.gpucheck.child import child_main
from sslbench.bench.measure.gpucheck.document import CheckStopped
from sslbench.bench.measure.gpucheck.options import (
    DEFAULT_BUDGET_S,
    FULL,
    MODULE,
    SECTIONS,
    TINY,
    options_from_args,
)
from sslbench.bench.measure.gpucheck.render import render_summary
from sslbench.bench.messages import say

# The first line of the package's docstring: the parsers' description.
DESCRIPTION = ("`sslbench gpucheck` (`nox -s gpu`): a GPU machine's first minutes, as one "
               "prepared command.")


def add_options(parser: argparse.ArgumentParser) -> None:
    from sslbench.bench.core.datasets import default_root

    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                        help="device to check (default auto: CUDA when there is one)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes (a few hundred images, 1 or 2 epochs): the plumbing "
                             "in about a minute on a CPU")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"hard time budget in seconds; sections that do not fit are "
                             f"skipped and listed (default {DEFAULT_BUDGET_S:g})")
    parser.add_argument("--out", help="output folder (default reports/results/gpu-DEVICE/, "
                                      "e.g. gpu-nvidia-h200, gpu-cpu-tiny)")
    parser.add_argument("--root", default=str(default_root()),
                        help="data folder (default: $SSLBENCH_DATA or ~/.cache/sslbench/data)")
    parser.add_argument("--epochs-slice", type=int, default=None, metavar="N",
                        help=f"epochs of the paper slice, fewer when they do not fit (default "
                             f"{FULL.slice_epochs}; --tiny: {TINY.slice_epochs})")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="only these sections (the others are listed as not selected)")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `gpucheck` to the CLI's subparsers; returns the new parser."""
    parser = commands.add_parser("gpucheck", help="one-call GPU check: CUDA tests, bench, "
                                                  "profile, paper slice, in a time budget",
                                 description=DESCRIPTION)
    add_options(parser)
    parser.set_defaults(func=command)
    return parser


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise CheckStopped in the main thread, so the section in flight
    is killed and everything so far written; the handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        del frame
        raise CheckStopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def command(args: argparse.Namespace) -> int:
    """`sslbench gpucheck`: run the check, print the summary; 0 when every section that ran
    passed, 1 otherwise."""
    options = options_from_args(args)
    check_writable(options.out)
    with stop_on_signals():
        doc = run_check(options, say)
    print(render_summary(doc))
    say(f"gpucheck: wrote {options.out / 'results.json'} and {options.out / 'summary.md'}")
    return 0 if passed(doc) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description=DESCRIPTION)
    add_options(parser)
    # A section's own process, started by the check (not for users).
    parser.add_argument("--child", choices=SECTIONS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=math.inf, help=argparse.SUPPRESS)
    parser.add_argument("--slice-workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--slice-stack", type=int, default=1, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return child_main(args)
    try:
        return command(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
