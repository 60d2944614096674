"""`sslbench bench`: its flags and its handler. The measuring itself is
bench.measure.speed's; this module only turns flags into BenchSettings and writes the
outputs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from sslbench.bench.files import check_writable, write_text_atomic
from sslbench.bench.measure import speed
from sslbench.bench.messages import say


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `bench` to the CLI's subparsers; returns the new parser."""
    from sslbench.bench.core.datasets import default_root

    parser = commands.add_parser(
        "bench", help="measured throughput: the blog's naive pipeline vs the harness",
        description=(speed.__doc__ or "").splitlines()[0])
    parser.add_argument("--train-size", type=int, default=speed.DEFAULT_TRAIN_SIZE,
                        help=f"training images (default {speed.DEFAULT_TRAIN_SIZE:,})")
    parser.add_argument("--test-size", type=int, default=speed.DEFAULT_TEST_SIZE,
                        help=f"test images (default {speed.DEFAULT_TEST_SIZE:,})")
    parser.add_argument("--epochs", type=int, default=speed.DEFAULT_EPOCHS,
                        help=f"epochs per measurement, >= 2 (default {speed.DEFAULT_EPOCHS})")
    parser.add_argument("--stack", type=int, default=speed.DEFAULT_STACK,
                        help=f"runs of the stacked measurement (default {speed.DEFAULT_STACK})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--two-process", action=argparse.BooleanOptionalAction, default=None,
                        help="measure two one-thread processes at once (default: on CPU only)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure one harness run with bf16 autocast (default: where "
                             "the device computes bf16 natively)")
    parser.add_argument("--root", default=str(default_root()),
                        help="data folder (default: $SSLBENCH_DATA or ~/.cache/sslbench/data)")
    parser.add_argument("--out", default=speed.DEFAULT_OUT,
                        help=f"folder for bench.json and bench.md (default {speed.DEFAULT_OUT})")
    parser.set_defaults(func=command)
    return parser


def settings_from_args(args: argparse.Namespace) -> speed.BenchSettings:
    from sslbench.bench.core.device import resolve_device
    from sslbench.bench.core.precision import native_bf16

    device = resolve_device(args.device)  # UserError for an unknown or absent device
    on_cpu = device.type == "cpu"
    two_process = on_cpu and (os.cpu_count() or 1) >= 2 if args.two_process is None \
        else bool(args.two_process)
    bf16 = native_bf16(device) if args.bf16 is None else bool(args.bf16)
    return speed.BenchSettings(train_size=args.train_size, test_size=args.test_size,
                               epochs=args.epochs, stack=args.stack, device=str(device),
                               data_root=str(Path(args.root).expanduser()),
                               two_process=two_process, bf16=bf16)


def command(args: argparse.Namespace) -> int:
    """`sslbench bench`: measure, print the markdown table, write bench.json and bench.md."""
    settings = settings_from_args(args)
    speed.validate(settings)  # before the output folder is touched
    out = Path(args.out).expanduser()
    check_writable(out)
    doc = speed.run_bench(settings, log=say)
    markdown = speed.render_markdown(doc)
    write_text_atomic(out / "bench.json", json.dumps(doc, indent=1) + "\n")
    write_text_atomic(out / "bench.md", markdown)
    print(markdown)
    say(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
