"""`sslbench`: the entry point. Loads plugins named on the command line before the parser
is built (their methods and grids must be among its choices), parses, runs the command
(bench.cli.commands), and turns every user error into one line and exit status 2.

    sslbench data fetch [--dataset mnist|fashion_mnist|all] [--root DIR]  # or $SSLBENCH_DATA
    sslbench run --method NAME --seed N --profile P [--set key=value ...] [--device D] [--out FILE]
    sslbench ablate --grid NAME --profile P --seeds N [--storage URL] [--workers N] | --list
    sslbench search --space NAME --profile P --trials N [--workers N] [--storage URL]
    sslbench search --space NAME --profile P --finalize [--final-seeds 5] [--out DIR]
    sslbench report --grid NAME [--profile P] [--storage URL] --out DIR
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from sslbench.bench.errors import DivergedError, Interrupted, UserError


def _early_flags(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`--plugin` values and `--debug`, wherever they are, before the parser is built: the
    plugins' methods and grids must be in the parser's lists."""
    early = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    early.add_argument("--plugin", action="append", default=[])
    early.add_argument("--debug", action="store_true")
    try:
        known, _ = early.parse_known_args(argv)
    except argparse.ArgumentError:  # `--plugin` without a value: the full parser says so
        return [], "--debug" in argv
    return known.plugin, known.debug


_sigints = 0  # Ctrl-Cs received during this main() call


def _on_sigint(signum: int, frame: object) -> None:
    global _sigints
    _sigints += 1
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """The command's exit status. Ctrl-C at any moment, the first seconds of imports and a
    plugin's own import included, ends in one line and status 130, never a traceback."""
    global _sigints
    _sigints = 0
    # As Python's own handler, but counted; the caller's is given back (main() is also
    # called in-process, by tests and by the API).
    previous = (signal.signal(signal.SIGINT, _on_sigint)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return _interrupted()
    except Exception:
        # A library that swallowed the interrupt while it imported can fail later on what
        # its import left half done (seen: numpy's __getattr__ recursing without end). The
        # user pressed Ctrl-C: that is the one line, not the traceback it caused.
        if _sigints == 0:
            raise
        return _interrupted()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _interrupted() -> int:
    print("interrupted: finished results are kept; run the same command to resume",
          file=sys.stderr)
    return 130


def _main(argv: Sequence[str] | None) -> int:
    # Imported here, not at the top, so that a Ctrl-C while they load is main()'s to catch.
    from sslbench.bench.cli.commands import stopped
    from sslbench.bench.cli.parser import COMMAND_HELP, build_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    plugins, debug = _early_flags(argv)
    full = any(a in COMMAND_HELP for a in argv)  # no command: the fast parser suffices
    try:
        if full:
            from sslbench.bench.plugins import load_plugins

            load_plugins(plugins)
    except UserError as error:
        if debug:
            traceback.print_exc()
        if _sigints:  # a plugin failed after swallowing the user's Ctrl-C (see main)
            return _interrupted()
        print(f"error: {error}", file=sys.stderr)
        return 2
    args = build_parser(full).parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `sslbench ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as error:  # a full disk or a read-only folder while writing an output
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {error.strerror or error}{where}; free space or choose another output "
              f"folder, then run the same command again (finished results are kept)",
              file=sys.stderr)
        return 2
    except DivergedError as error:  # `ablate` keeps it as a failed cell; `run` ends here
        print(f"error: the run diverged: {error}; lower train.lr or check the config "
              f"(nothing was written)", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as stop:
        return stopped(f" ({stop})" if isinstance(stop, Interrupted) else "")


if __name__ == "__main__":
    sys.exit(main())
