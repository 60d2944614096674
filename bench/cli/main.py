"""`sslbench`: the command line. Side effects live here; the engine stays pure.

    sslbench data fetch [--dataset mnist|fashion_mnist|all] [--root DIR]  # or $SSLBENCH_DATA
    sslbench run --method NAME --seed N --profile P [--set key=value ...] [--device D] [--out FILE]
    sslbench ablate --grid NAME --profile P --seeds N [--storage URL] [--workers N] | --list
    sslbench search --space NAME --profile P --trials N [--workers N] [--storage URL]
    sslbench search --space NAME --profile P --finalize [--final-seeds 5] [--out DIR]
    sslbench report --grid NAME [--profile P] [--storage URL] --out DIR
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sslbench.bench.errors import DivergedError, Interrupted, UserError
from sslbench.bench.files import check_writable, write_json_atomic
from sslbench.bench.messages import say


def _data_root(args: argparse.Namespace) -> Path:
    from sslbench.bench.core.datasets import default_root

    return Path(args.root).expanduser() if args.root else default_root()


# -- commands ------------------------------------------------------------------------------


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from sslbench.bench.core.datasets import DATASETS, fetch, get_dataset

    names = DATASETS.names() if args.dataset == "all" else [args.dataset]
    for name in names:
        print(fetch(_data_root(args), get_dataset(name), log=say))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from sslbench.bench.core.checkpoint import CheckpointPolicy, stop_on_signals
    from sslbench.bench.core.checkpoint import load as load_checkpoint
    from sslbench.bench.core.config import build_config, parse_set_args
    from sslbench.bench.core.datasets import get_dataset, verify
    from sslbench.bench.core.device import resolve_device
    from sslbench.bench.core.record import build_record, git_commit
    from sslbench.bench.core.train import EpochSummary, single_run
    from sslbench.bench.runs.runner import default_threads

    git_commit()  # the code that trains, read before it does
    config = build_config(args.method, args.seed, args.profile, parse_set_args(args.set or []))
    device = resolve_device(args.device)
    verify(_data_root(args), get_dataset(config.data.dataset))  # before any output
    if device.type == "cpu":
        torch.set_num_threads(args.threads or default_threads(1))
    out = Path(args.out) if args.out else Path("runs") / (
        f"{args.method}-seed{args.seed}-{args.profile}-{config.config_hash()}.json")
    check_writable(out.parent)
    _refuse_other_record(out, config.config_hash())
    if out.exists():  # this run's own record: it is done, never trained twice
        print(f"run {config.config_hash()} already finished: record {out} (delete it to "
              f"train again)")
        return 0

    def progress(s: EpochSummary) -> None:
        left = s.elapsed_seconds / (s.epoch + 1) * (s.epochs - s.epoch - 1)
        say(f"epoch {s.epoch + 1}/{s.epochs}  sup {s.supervised_loss[0]:.4f}  "
             f"unsup {s.unsupervised_loss[0]:.5f}  w {s.weight:.4f}  "
             f"test acc {s.test_accuracy[0]:.2%}  {s.train_images_per_s:,.0f} img/s  "
             f"{s.epoch_seconds:.1f} s  ~{left:.0f} s left")

    policy = CheckpointPolicy(Path(args.checkpoint) if args.checkpoint
                              else out.with_suffix(".ckpt"), every_epochs=args.checkpoint_every)
    resumable = load_checkpoint(policy.path, config.config_hash(), [config.seed], device)
    say(f"run {config.config_hash()}: {args.method}, seed {args.seed}, profile {args.profile}, "
         f"{config.train.epochs} epochs, device {device}")
    if resumable is not None:  # checked first: a checkpoint of another run is an error
        say(f"resuming from epoch {int(resumable['epoch']) + 1} of {policy.path}")
        del resumable
    started = dt.datetime.now(dt.UTC)
    with stop_on_signals(policy.stop):
        result = single_run(config, device=device, data_root=_data_root(args), progress=progress,
                            checkpoint=policy)
    record = build_record(config, result, device, started)
    write_json_atomic(out, record)
    policy.path.unlink(missing_ok=True)  # the record is written: the checkpoint is spent
    metrics = record["metrics"]
    print(f"{args.method} seed {args.seed}: test accuracy {metrics['final_test_accuracy']:.2%} "
          f"(last epoch; lowest-train-loss epoch {metrics['lowest_train_loss_epoch'] + 1}: "
          f"{metrics['lowest_train_loss_test_accuracy']:.2%}), "
          f"{record['throughput']['train_images_per_s_median']:,.0f} train img/s; "
          f"record: {out}")
    return 0


def _refuse_other_record(out: Path, run_id: str) -> None:
    """`run --out` onto a file that is not this run's record would destroy it."""
    if not out.exists():
        return
    try:
        held = json.loads(out.read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        held = None
    if held != run_id:
        what = f"the record of run {held}" if held else "a file that is not a run record"
        raise UserError(f"{out} holds {what}, not of run {run_id}; choose another --out or "
                        f"move it away")


def grid_listing(grid: Any) -> list[str]:
    """`ablate --list`: a grid's variants with their method, baseline and overrides, aligned.
    The control has no baseline (-); a reference variant names itself (reference only)."""
    rows = [("variant", "method", "compared with", "overrides (paper units)", "description")]
    for variant in grid.variants:
        baseline = variant.baseline or grid.control
        compared = ("-" if variant.name == grid.control else
                    "(reference only)" if baseline == variant.name else baseline)
        overrides = ", ".join(f"{k}={v}" for k, v in variant.overrides.items()) or "-"
        rows.append((variant.name, variant.method, compared, overrides, variant.description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{grid.name}: {grid.description}"]
    lines += ["  " + "  ".join(f"{cell:<{w}}" for cell, w in zip(row[:4], widths, strict=True))
              + "  " + row[4] for row in rows]
    return lines


# One default seed count for `sslbench ablate` and `nox -s ablations`.
DEFAULT_SEEDS = 3


def cmd_ablate(args: argparse.Namespace) -> int:
    from sslbench.ablations import get_grid, grid_names
    from sslbench.bench.core.config import get_profile, parse_set_args
    from sslbench.bench.core.datasets import get_dataset, verify
    from sslbench.bench.runs.runner import plan_cells, run_grid
    from sslbench.bench.store.runstore import RunStore, default_checkpoint_dir

    if args.list:
        for name in grid_names():
            print("\n".join(grid_listing(get_grid(name))))
        return 0
    if not args.grid:
        raise UserError("ablate needs --grid NAME (or --list to see the grids)")
    get_profile(args.profile)
    seeds = seed_list(args.seeds)
    if args.until_decided and not (2 <= args.round <= args.max_seeds):
        raise UserError(f"--until-decided needs 2 <= --round <= --max-seeds, got --round "
                        f"{args.round} and --max-seeds {args.max_seeds}")
    if args.until_decided and args.settings:
        raise UserError("--until-decided keeps its decisions on the grid's own cells; drop "
                        "--settings or use another --storage")
    if args.until_decided and not (math.isfinite(args.sesoi) and args.sesoi > 0):
        raise UserError(f"--sesoi must be a positive number of accuracy points, got "
                        f"{args.sesoi}")
    if args.workers is None:
        from sslbench.bench.core.device import resolve_device

        args.workers = (os.cpu_count() or 1) if resolve_device(args.device).type == "cpu" else 1
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if args.stack is not None and args.stack < 1:
        raise UserError(f"--stack must be >= 1 (seeds trained together as one stacked model), "
                        f"got {args.stack}")
    _check_grace(args.heartbeat_grace)
    # Every cell's config and the data are checked before the store is opened or created.
    cells = plan_cells(get_grid(args.grid), args.profile, seeds,
                       args.variants, parse_set_args(args.set or []))
    for dataset in sorted({cell.config.data.dataset for cell in cells}):
        verify(_data_root(args), get_dataset(dataset))
    store = RunStore(args.storage)
    options = dict(overrides=parse_set_args(args.set or []), workers=args.workers,
                   device=args.device, threads=args.threads, data_root=_data_root(args),
                   retry_failed=args.retry_failed,
                   checkpoint_dir=Path(args.checkpoints) if args.checkpoints
                   else default_checkpoint_dir(args.storage),
                   checkpoint_every=args.checkpoint_every, grace_s=args.heartbeat_grace,
                   stack=args.stack, settings=args.settings)
    if args.until_decided:
        return _until_decided(args, store, options)
    outcome = run_grid(args.grid, args.profile, seeds, store=store,
                       variants=args.variants, log=say, **options)
    print(f"{args.grid}/{args.profile}: {outcome.already_done} already finished, "
          f"{len(outcome.finished)} run now, {len(outcome.failed)} failed "
          f"({outcome.total} cells); store {store.url}")
    if outcome.stopped:
        return _stopped()
    return 1 if outcome.failed else 0


def _until_decided(args: argparse.Namespace, store: Any, options: dict[str, Any]) -> int:
    from sslbench.bench.runs.adaptive import run_until_decided

    outcome = run_until_decided(args.grid, args.profile, store=store, max_seeds=args.max_seeds,
                                round_size=args.round, sesoi=args.sesoi,
                                variants=args.variants, log=say, **options)
    for c in outcome.comparisons:
        where = (f"at round {c.round}, {c.seeds} seeds" if c.round
                 else f"open after {args.max_seeds} seeds (the budget)")
        print(f"{c.variant} vs {c.baseline}: {c.decision} {where}")
    print(f"{args.grid}/{args.profile}: {outcome.cells_run} cells run now, "
          f"{len(outcome.failed)} failed; store {store.url}")
    if outcome.stopped:
        return _stopped()
    return 1 if outcome.failed else 0


def _check_grace(grace_s: float) -> None:
    from sslbench.bench.store.queue import HEARTBEAT_S

    if grace_s <= HEARTBEAT_S:
        raise UserError(f"--heartbeat-grace must exceed the {HEARTBEAT_S:.0f} s between "
                        f"heartbeats, got {grace_s}")


def _stopped(detail: str = "") -> int:
    """The stop the user asked for (Ctrl-C, SIGTERM): exit status 130, as a shell's."""
    print(f"interrupted{detail}: finished results are kept; run the same command to resume",
          file=sys.stderr)
    return 130


def cmd_search(args: argparse.Namespace) -> int:
    from sslbench.ablations.spaces import get_space, space_names
    from sslbench.bench.core.config import get_profile, parse_set_args
    from sslbench.bench.core.datasets import get_dataset, verify
    from sslbench.bench.runs.finalize import finalize
    from sslbench.bench.runs.search import SearchSettings, check_settings, run_search, summary_lines

    if args.list:
        for name in space_names():
            print(f"{name}: {get_space(name).description}")
        return 0
    if not args.space:
        raise UserError("search needs --space NAME (or --list to see the spaces)")
    get_profile(args.profile)
    workers = args.workers or 1
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    _check_grace(args.heartbeat_grace)
    if args.finalize:
        if args.final_seeds < 2:
            raise UserError(f"--final-seeds must be >= 2 for a paired comparison, got "
                            f"{args.final_seeds}")
        out = Path(args.out or f"report/search-{args.space}-{args.profile}")
        check_writable(out)
        path = finalize(args.storage, args.space, args.profile, seeds=args.final_seeds,
                        workers=workers, device=args.device, data_root=_data_root(args),
                        out=out, threads=args.threads, log=say)
        if path is None:
            return _stopped()
        print(f"final comparison written: {path}")
        return 0
    settings = SearchSettings(space=args.space, profile=args.profile, trials=args.trials,
                              seeds_per_trial=args.trial_seeds, val_size=args.val_size,
                              overrides=parse_set_args(args.set or []),
                              sampler_seed=args.sampler_seed, prune=not args.no_prune,
                              grace_s=args.heartbeat_grace)
    check_settings(settings)
    # The training files only: a search never reads the test set.
    verify(_data_root(args), get_dataset(settings.overrides.get("data.dataset", "mnist")),
           test=False)
    study = run_search(settings, args.storage, workers=workers, device=args.device,
                       data_root=_data_root(args), threads=args.threads, log=say)
    print("\n".join(summary_lines(study)))
    print(f"next: sslbench search --space {args.space} --profile {args.profile} --storage "
          f"{args.storage} --finalize")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sslbench.bench.store.runstore import RunStore
    from sslbench.reports.export import parquet_available, write_export

    store = RunStore(args.storage, create=False)  # a store error leaves no --out folder behind
    written = write_export(store, Path(args.out), args.grid)
    print("written: " + ", ".join(str(p) for p in written))
    if not parquet_available():
        print("(CSV only: `pip install pyarrow` adds Parquet)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sslbench.bench.store.names import settings_suffix
    from sslbench.bench.store.runstore import RunStore
    from sslbench.reports.build import write_report

    out = Path(args.out)
    store = RunStore(args.storage, create=False)  # a store error leaves no --out folder behind
    check_writable(out)
    profile = args.profile
    if args.settings is not None:
        suffix = settings_suffix(args.settings)
        if profile is None:
            from sslbench.reports.build import stored_profiles

            matching = [p for p in stored_profiles(store, args.grid) if p.endswith(suffix)]
            profile = matching[0] if len(matching) == 1 else f"?{suffix}"
        else:
            profile += suffix
    path = write_report(store, args.grid, profile, out, metric=args.metric, sesoi=args.sesoi)
    print(f"report written: {path}")
    next_step = [line for line in path.read_text().splitlines() if line.startswith("Next step:")]
    if next_step:  # what the compute bought, and what would settle the question
        print(next_step[0])
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from sslbench.bench.store.runstore import RunStore
    from sslbench.reports.build import stored_profiles
    from sslbench.reports.planning import plan_text

    if not (args.sesoi > 0):
        raise UserError(f"--sesoi must be a positive number of accuracy points, got {args.sesoi}")
    workers = args.workers or os.cpu_count() or 1
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    from sslbench.ablations import get_grid

    get_grid(args.grid)
    store = RunStore(args.storage, create=False)
    profiles = args.profile or [p for p in stored_profiles(store, args.grid) if "@" not in p] \
        or ["quick"]
    if not (0 < args.alpha < 1 and 0 < args.power < 1):
        raise UserError(f"--alpha and --power must be between 0 and 1, got {args.alpha} and "
                        f"{args.power}")
    print(plan_text(store, args.grid, profiles, args.sesoi, workers, args.alpha, args.power))
    return 0


# -- parser --------------------------------------------------------------------------------


def grace_flag(parser: argparse.ArgumentParser, what: str) -> None:
    from sslbench.bench.store.queue import DEFAULT_GRACE_S

    parser.add_argument("--heartbeat-grace", type=float, default=DEFAULT_GRACE_S,
                        metavar="SECONDS", help=f"{what} (default {DEFAULT_GRACE_S:.0f})")


# The subcommands and their one-line help: the whole parser for a command, this alone for
# `sslbench --help`, which must answer without importing torch (tests/test_cli.py).
COMMAND_HELP = {
    "data": "dataset files: fetch and verify MNIST and Fashion-MNIST",
    "run": "train one method with one seed, write its record",
    "ablate": "run a grid of variants x seeds into the store",
    "search": "tune a method's hyperparameters on a validation split (Optuna)",
    "report": "statistical report of a grid from the store",
    "plan": "seeds and hours each comparison needs, before the compute is spent",
    "export": "write a store's runs and per-epoch curves as CSV (and Parquet) for pandas",
    "bench": "measured throughput: the blog's naive pipeline vs the harness",
    "gpucheck": "the one-call GPU check: cuda tests, bench, profile, a timed paper slice",
}


def _top_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="sslbench",
        description="A benchmark and ablation harness for semi-supervised image "
                    "classification: does this tweak really help, or is it seed noise?",
        epilog="`sslbench COMMAND --help` lists a command's choices (methods, grids, search "
               "spaces, profiles) with one line each.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=_version())
    plugin_flag(parser)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def plugin_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", metavar="MODULE_OR_FILE.py",
                        default=argparse.SUPPRESS,
                        help="import a module or .py file that registers methods, grids or "
                             "search spaces (repeatable; installed entry points load anyway)")


def catalog(title: str, entries: dict[str, str]) -> str:
    """An aligned `name  description` block for a --help epilog."""
    width = max(map(len, entries), default=0)
    return "\n".join([f"{title}:", *(f"  {name:<{width}}  {text}"
                                     for name, text in entries.items())])


def _catalogs() -> dict[str, str]:
    """The registries as --help blocks. Imports the methods and grids (and so torch)."""
    from sslbench.ablations import get_grid, grid_names
    from sslbench.ablations.spaces import get_space, space_names
    from sslbench.bench.core.config import PROFILES
    from sslbench.bench.core.datasets import DATASETS
    from sslbench.methods import get_method, method_names

    return {
        "methods": catalog("methods (--method)", {
            m: get_method(m).description or "(no description)" for m in method_names()}),
        "grids": catalog("grids (--grid; `ablate --list` shows their variants)", {
            g: get_grid(g).description for g in grid_names()}),
        "spaces": catalog("search spaces (--space)", {
            n: get_space(n).description for n in space_names()}),
        "profiles": catalog("profiles (--profile)", {
            n: PROFILES.get(n).description for n in PROFILES.names()}),
        "datasets": catalog("datasets (--dataset)", {
            n: f"{DATASETS.get(n).num_train:,} training images, {DATASETS.get(n).num_classes} "
               f"classes" for n in DATASETS.names()}),
    }


def build_parser(full: bool = True) -> argparse.ArgumentParser:
    """The command line. `full=False`: the commands' names and help only (`sslbench --help`,
    `--version`), built without importing the engine."""
    parser, commands = _top_parser()
    if not full:
        for name, text in COMMAND_HELP.items():
            commands.add_parser(name, help=text)
        return parser
    from sslbench.bench.store.runstore import DEFAULT_URL

    blocks = _catalogs()

    def command(name: str, *shown: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=COMMAND_HELP[name], description=COMMAND_HELP[name],
            epilog="\n\n".join(blocks[b] for b in shown) or None,
            formatter_class=argparse.RawDescriptionHelpFormatter)

    def data_root_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", help="data folder (default: $SSLBENCH_DATA or "
                                      "~/.cache/sslbench/data)")

    def training_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", default="quick", help="protocol length and data slice "
                                                          "(default quick; listed below)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.lr=0.001 (repeatable)")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
        p.add_argument("--threads", type=int, default=None,
                       help="CPU threads per process (default: cores / workers)")
        data_root_flag(p)

    data = command("data", "datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", help="download and verify a dataset",
                                     epilog=blocks["datasets"],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    fetch.add_argument("--dataset", default="mnist",
                       help="a dataset below, or all (default mnist)")
    data_root_flag(fetch)
    fetch.set_defaults(func=cmd_data_fetch)

    run = command("run", "methods", "profiles")
    run.add_argument("--method", required=True, metavar="METHOD",
                     help="the method to train (listed below)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", help="record file (default runs/METHOD-seedN-PROFILE-HASH.json)")
    run.add_argument("--checkpoint", help="checkpoint file, resumed from when it exists "
                                          "(default: the record's path with .ckpt)")
    run.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS",
                     help="save a checkpoint every N epochs (default 1; 0: only on SIGTERM/"
                          "SIGINT)")
    training_flags(run)
    run.set_defaults(func=cmd_run)

    ablate = command("ablate", "grids", "profiles")
    ablate.add_argument("--grid", help="the grid to run (listed below)")
    ablate.add_argument("--list", action="store_true", help="list the grids and their variants")
    ablate.add_argument("--seeds", default=str(DEFAULT_SEEDS),
                        help=f"N (seeds 0..N-1), a range a-b, or a list like 0,2,5-7 "
                             f"(default {DEFAULT_SEEDS}, as `nox -s ablations`)")
    ablate.add_argument("--variants", nargs="+", help="only these variants")
    ablate.add_argument("--storage", default=DEFAULT_URL,
                        help=f"store URL: sqlite:///file.db (default {DEFAULT_URL}), "
                             f"journal:///file.log for several processes on one machine, "
                             f"postgresql://user@host/db for many machines")
    ablate.add_argument("--workers", type=int, default=None,
                        help="cells run at once, one process each (default: one per CPU core "
                             "on CPU, 1 on a GPU)")
    ablate.add_argument("--stack", type=int, default=None, metavar="N",
                        help="train up to N seeds of a variant together as one stacked model, "
                             "in one process (default: all seeds on CUDA, 1 on CPU)")
    ablate.add_argument("--checkpoints", metavar="DIR",
                        help="folder of the cells' checkpoints (default: beside a SQLite store, "
                             "else ./sslbench-checkpoints)")
    ablate.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS",
                        help="checkpoint each cell every N epochs (default 1)")
    grace_flag(ablate, "a running cell whose owner sent no heartbeat for this long is taken "
                       "over by another runner")
    ablate.add_argument("--settings", metavar="NAME",
                        help="keep these cells as a separate, labeled set in the store (when "
                             "the store holds the grid with other settings); report it with "
                             "`report --settings NAME`")
    ablate.add_argument("--until-decided", action="store_true",
                        help="add seeds in rounds, only to comparisons still open, until each "
                             "is better, worse or equivalent within --sesoi (a valid "
                             "sequential rule; see reports/sequential.py); --seeds is unused")
    ablate.add_argument("--max-seeds", type=int, default=20,
                        help="with --until-decided: the seed budget per variant (default 20)")
    ablate.add_argument("--round", type=int, default=3,
                        help="with --until-decided: seeds added per round (default 3)")
    ablate.add_argument("--sesoi", type=float, default=1.0, metavar="POINTS",
                        help="with --until-decided: the equivalence margin (default 1.0)")
    ablate.add_argument("--retry-failed", action="store_true",
                        help="also rerun cells that diverged (crashed cells are always retried)")
    training_flags(ablate)
    ablate.set_defaults(func=cmd_ablate)

    search = command("search", "spaces", "profiles")
    search.add_argument("--space", help="search space (listed below)")
    search.add_argument("--list", action="store_true", help="list the search spaces")
    search.add_argument("--trials", type=int, default=20,
                        help="finished trials wanted in the study (default 20); running the "
                             "command again resumes up to this number")
    search.add_argument("--trial-seeds", type=int, default=2,
                        help="seeds per trial, trained as one stack; the score is their mean "
                             "validation accuracy (default 2)")
    search.add_argument("--val-size", type=int, default=1000,
                        help="validation images held out of the training set, their labels "
                             "used only for scoring (default 1,000)")
    search.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed")
    search.add_argument("--no-prune", action="store_true",
                        help="do not stop trials that fall behind the median")
    search.add_argument("--workers", type=int, default=1,
                        help="search processes (default 1; more need a journal or "
                             "PostgreSQL store)")
    search.add_argument("--storage", default=DEFAULT_URL,
                        help=f"store URL (default {DEFAULT_URL}; journal:///file.log or "
                             f"postgresql://... for several workers)")
    grace_flag(search, "a trial whose worker sent no heartbeat for this long is run again")
    search.add_argument("--finalize", action="store_true",
                        help="run the best config and the blog's defaults on fresh seeds "
                             "against the test set and write the comparison report")
    search.add_argument("--final-seeds", type=int, default=5,
                        help="fresh seeds 0..N-1 of the final comparison (default 5)")
    search.add_argument("--out", help="report folder of --finalize (default "
                                      "report/search-SPACE-PROFILE)")
    training_flags(search)
    search.set_defaults(func=cmd_search)

    report = command("report", "grids")
    report.add_argument("--grid", required=True, help="the grid to report (listed below)")
    report.add_argument("--profile", help="which profile's runs (default: the only one stored)")
    report.add_argument("--storage", default=DEFAULT_URL, help=f"store URL (default {DEFAULT_URL})")
    report.add_argument("--out", default="report", help="output folder (default ./report)")
    report.add_argument("--metric", default="tail_median",
                        choices=["tail_median", "final", "lowest_train_loss"],
                        help="per-run headline: median over the last 10%% of epochs (default), "
                             "the last epoch, or the epoch of lowest training loss (the blog's)")
    report.add_argument("--sesoi", type=float, default=1.0, metavar="POINTS",
                        help="smallest effect of interest in accuracy points: the equivalence "
                             "margin of the verdicts (default 1.0)")
    report.add_argument("--settings", metavar="NAME",
                        help="the labeled set of cells `ablate --settings NAME` stored")
    report.set_defaults(func=cmd_report)

    export = command("export", "grids")
    export.add_argument("--storage", default=DEFAULT_URL, help=f"store URL (default {DEFAULT_URL})")
    export.add_argument("--out", required=True, help="folder for runs.csv and curves.csv")
    export.add_argument("--grid", help="only this grid's runs (default: every grid stored)")
    export.set_defaults(func=cmd_export)

    plan = command("plan", "grids", "profiles")
    plan.add_argument("--grid", required=True, help="the grid to plan (listed below)")
    plan.add_argument("--profile", nargs="+", help="profiles to plan (default: those stored)")
    plan.add_argument("--storage", default=DEFAULT_URL, help="store with pilot runs")
    plan.add_argument("--alpha", type=float, default=0.05,
                      help="false-positive rate of the family (default 0.05)")
    plan.add_argument("--power", type=float, default=0.8,
                      help="chance to detect an effect of --sesoi (default 0.8)")
    plan.add_argument("--sesoi", type=float, default=1.0, metavar="POINTS",
                      help="smallest effect of interest in accuracy points (default 1.0)")
    plan.add_argument("--workers", type=int, default=None, help="parallel workers (default: "
                                                                "one per CPU core)")
    plan.set_defaults(func=cmd_plan)

    from sslbench.bench.measure import gpucheck, speed

    speed.add_parser(commands)  # `sslbench bench`: naive pipeline vs harness, side by side
    gpucheck.add_parser(commands)  # `sslbench gpucheck`: the one-call GPU check (nox -s gpu)
    _debug_anywhere([fetch, *commands.choices.values()])
    for sub in (fetch, *commands.choices.values()):
        plugin_flag(sub)
    return parser


def _debug_anywhere(parsers: Sequence[argparse.ArgumentParser]) -> None:
    """`--debug` after the subcommand too; SUPPRESS keeps the top-level value when absent."""
    for sub in parsers:
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show tracebacks on errors")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"sslbench {version('sslbench')}"
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "sslbench (not installed)"


def seed_list(text: str) -> list[int]:
    """`--seeds`: N (seeds 0..N-1), a range a-b (both included), or a comma list of seeds
    and ranges (0,2,5-7)."""
    text = text.strip()
    try:
        if text.isdigit():
            seeds = list(range(int(text)))
        else:
            seeds = []
            for part in text.split(","):
                low, _, high = part.strip().partition("-")
                seeds += list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise UserError(f"--seeds {text!r}: give N (seeds 0..N-1), a range a-b or a list "
                        f"like 0,2,5-7") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {text!r} names no seed, a seed twice or a negative one; "
                        f"give N (seeds 0..N-1), a range a-b or a list like 0,2,5-7")
    return sorted(seeds)


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


def main(argv: Sequence[str] | None = None) -> int:
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
        print(f"error: {error}", file=sys.stderr)
        return 2
    args = build_parser(full).parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None and args.threads < 1:
            raise UserError(f"--threads must be >= 1 (CPU threads per process), got "
                            f"{args.threads}")
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
        return _stopped(f" ({stop})" if isinstance(stop, Interrupted) else "")


if __name__ == "__main__":
    sys.exit(main())
