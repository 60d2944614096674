"""Inside a section's process (`--child NAME`, started by the check): the section's work,
its result handed back in sections/NAME.json, ok or failed with the error."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from sslbench.bench.measure.gpucheck.bench_section import child_bench
from sslbench.bench.measure.gpucheck.cifar_section import child_cifar
from sslbench.bench.measure.gpucheck.options import TAIL_LINES, options_from_args
from sslbench.bench.measure.gpucheck.process import SectionFile, read_json
from sslbench.bench.measure.gpucheck.profile_section import child_profile
from sslbench.bench.measure.gpucheck.slice_section import child_slice


def child_main(args: argparse.Namespace) -> int:
    """`--child NAME`: one section; 0 when it passed, 1 when it failed (error recorded)."""
    options = options_from_args(args, resolve=False)
    partial = SectionFile(options.out, args.child)
    result: dict[str, Any] = {}
    try:
        if args.child == "bench":
            result = child_bench(options, args.deadline, partial)
        elif args.child == "profile":
            result = child_profile(options, args.deadline, partial)
        elif args.child == "cifar_projection":
            result = child_cifar(options, args.deadline, partial)
        else:
            result = child_slice(options, args.deadline, partial, args.slice_workers,
                                 args.slice_stack)
    except Exception as error:
        written = read_json(partial.path).get("result", result)
        lines = traceback.format_exception(error)
        partial.write("failed", written, error=f"{type(error).__name__}: "
                                               f"{str(error).strip().splitlines()[0][:400]}"
                      if str(error).strip() else type(error).__name__,
                      traceback="".join(lines).splitlines()[-TAIL_LINES:])
        print(f"gpucheck {args.child}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    partial.write("ok", result)
    return 0
