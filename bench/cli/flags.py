"""Every flag that more than one command takes, declared once, and the value types that check
them as argparse parses (`type=`), so each check is written once and says the same thing.

A bad value ends in one line, `error: --workers must be >= 1, got 0`, with exit status 2
(`Parser.error`), like every other input error of the command line.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

from sslbench.bench.errors import UserError

SEED_FORMS = "give N (seeds 0..N-1), a range a-b or a list like 0,2,5-7"
# The most seeds one command takes (--seeds, --max-seeds): far past any power analysis
# (plan asks for hundreds at most), and small enough to plan at once. A seed itself is
# below 2**31, what every random generator the runs seed accepts.
MAX_SEEDS = 10_000
MAX_SEED = 2**31 - 1


class Parser(argparse.ArgumentParser):
    """argparse's parser, with its errors in the command line's one-line form."""

    def error(self, message: str) -> NoReturn:
        # "argument --workers: must be >= 1, got 0" -> "--workers must be >= 1, got 0"
        if message.startswith("argument ") and ": " in message:
            flag, _, reason = message.removeprefix("argument ").partition(": ")
            flag = flag.split("/")[-1]  # "-h/--help" -> "--help"
            message = f"{flag} {reason}"
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def at_least(low: int, what: str = "", high: int | None = None) -> Callable[[str], int]:
    """An integer >= `low` (and <= `high`, when given); `what` says what the number
    counts, for the error line."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(
                f"must be >= {low}{f' ({what})' if what else ''}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(
                f"must be <= {high:,}{f' ({what})' if what else ''}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _number(text: str, fits: Callable[[float], bool], must: str) -> float:
    """`text` as a float that `fits`; an argparse error saying what it `must` be else."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and fits(value)):
        raise argparse.ArgumentTypeError(f"must be {must}, got {text}")
    return value


def positive_points(text: str) -> float:
    """A positive, finite number of accuracy points (`--sesoi`)."""
    return _number(text, lambda v: v > 0, "a positive number of accuracy points")


def probability(text: str) -> float:
    """A number strictly between 0 and 1 (`--alpha`, `--power`)."""
    return _number(text, lambda v: 0 < v < 1, "between 0 and 1")


def seed_list(text: str) -> list[int]:
    """`--seeds`: N (seeds 0..N-1), a range a-b (both included), or a comma list of seeds
    and ranges (0,2,5-7); at most MAX_SEEDS seeds, each at most MAX_SEED."""
    text = text.strip()
    try:
        spans = [(0, int(text) - 1)] if text.isdigit() else [
            (int(low), int(high or low))
            for low, _, high in (part.strip().partition("-") for part in text.split(","))]
    except ValueError:
        raise UserError(f"--seeds {text!r}: {SEED_FORMS}") from None
    if sum(max(0, high - low + 1) for low, high in spans) > MAX_SEEDS or \
            any(high > MAX_SEED for _, high in spans):
        raise UserError(f"--seeds {text[:40]!r} asks for more than {MAX_SEEDS:,} seeds or a "
                        f"seed above {MAX_SEED:,}; give fewer")
    seeds = [seed for low, high in spans for seed in range(low, high + 1)]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {text!r} names no seed, a seed twice or a negative one; "
                        f"{SEED_FORMS}")
    return sorted(seeds)


# -- flags ---------------------------------------------------------------------------------


def storage_flag(parser: argparse.ArgumentParser, default: str, what: str = "store URL"
                 ) -> None:
    parser.add_argument("--storage", default=default,
                        help=f"{what}: sqlite:///file.db (default {default}), "
                             f"journal:///file.log for several processes on one machine, "
                             f"postgresql://user@host/db for many machines")


def sesoi_flag(parser: argparse.ArgumentParser, default: float, what: str) -> None:
    parser.add_argument("--sesoi", type=positive_points, default=default, metavar="POINTS",
                        help=f"{what} (default {default:g})")


def workers_flag(parser: argparse.ArgumentParser, what: str, default: int | None = None
                 ) -> None:
    parser.add_argument("--workers", type=at_least(1, "processes"), default=default,
                        help=what)


def grace_flag(parser: argparse.ArgumentParser, what: str) -> None:
    from sslbench.bench.store.queue import DEFAULT_GRACE_S

    parser.add_argument("--heartbeat-grace", type=float, default=DEFAULT_GRACE_S,
                        metavar="SECONDS", help=f"{what} (default {DEFAULT_GRACE_S:.0f})")


def store_grace_flag(parser: argparse.ArgumentParser) -> None:
    from sslbench.bench.store.runstore import STORE_GRACE_S

    parser.add_argument("--store-grace", type=positive_seconds, default=STORE_GRACE_S,
                        metavar="SECONDS",
                        help=f"wait this long for a store server that restarts or is "
                             f"unreachable, retrying, before giving up (default "
                             f"{STORE_GRACE_S:.0f})")


def positive_seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    return _number(text, lambda v: v > 0, "a positive number of seconds")


def check_grace(grace_s: float) -> None:
    from sslbench.bench.store.queue import HEARTBEAT_S

    if grace_s <= HEARTBEAT_S:
        raise UserError(f"--heartbeat-grace must exceed the {HEARTBEAT_S:.0f} s between "
                        f"heartbeats, got {grace_s}")


def data_root_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="data folder (default: $SSLBENCH_DATA or "
                                       "~/.cache/sslbench/data)")


def training_flags(parser: argparse.ArgumentParser) -> None:
    """What every command that trains takes: profile, overrides, device, threads, data."""
    parser.add_argument("--profile", default="quick", help="protocol length and data slice "
                                                           "(default quick; listed below)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=0.001 (repeatable)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--threads", type=at_least(1, "CPU threads per process"), default=None,
                        help="CPU threads per process (default: cores / workers)")
    data_root_flag(parser)


def plugin_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", metavar="MODULE_OR_FILE.py",
                        default=argparse.SUPPRESS,
                        help="import a module or .py file that registers methods, grids or "
                             "search spaces (repeatable; installed entry points load anyway)")


def debug_flag(parser: argparse.ArgumentParser) -> None:
    """`--debug` after the subcommand too; SUPPRESS keeps the top-level value when absent."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")


def cluster_flags(parser: argparse.ArgumentParser, unit: str, default_jobs: str) -> None:
    """`--launcher` and what it asks of the scheduler (bench.cluster); `unit` is what one
    task runs (cells, trials), `default_jobs` the tasks when --jobs is not given."""
    group = parser.add_argument_group(
        "cluster", "run as a job array through submitit: a Slurm cluster (the store must be "
                   "PostgreSQL or a journal file every node mounts) or this machine's "
                   "processes (local); see the README's \"On a Slurm cluster\"")
    group.add_argument("--launcher", choices=("here", "slurm", "local"), default="here",
                       help="here: in this process (default); slurm: sbatch a job array; "
                            "local: the same tasks as processes on this machine")
    group.add_argument("--jobs", type=at_least(1, "tasks in the array"), default=None,
                       help=f"tasks in the job array, each running {unit} one after another "
                            f"(default: {default_jobs})")
    group.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    group.add_argument("--gpus-per-job", type=at_least(0), default=0, metavar="N",
                       help="GPUs per task (default 0; with GPUs, a task trains one stack "
                            "of seeds at a time)")
    group.add_argument("--cpus-per-job", type=at_least(1), default=1, metavar="N",
                       help="CPUs per task, its threads (default 1)")
    group.add_argument("--time", help="time limit per task, in Slurm's forms (90, 1:30:00, "
                                      "2-12; default: twice the expected share of a task)")
    group.add_argument("--mem", help="memory per task, as sbatch --mem (16G; default: the "
                                     "partition's)")
    group.add_argument("--account", help="Slurm account")
    group.add_argument("--qos", help="Slurm quality of service")
    group.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. constraint=a100 (repeatable)")
    group.add_argument("--log-dir", metavar="DIR",
                       help="where each task's log goes (default: beside a journal store, "
                            "else ./sslbench-jobs)")
    group.add_argument("--wait", action="store_true",
                       help="follow the tasks from the store until they end (the local "
                            "launcher always waits: its tasks are this machine's processes)")
