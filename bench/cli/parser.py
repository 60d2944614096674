"""The `sslbench` parser: one builder per command, the shared flags from bench.cli.flags.
`build_parser(full=False)` answers `sslbench --help` and `--version` without importing the
engine (tests/test_cli.py); the full parser lists the registries' choices in each --help."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from sslbench.bench.cli import commands as run_command
from sslbench.bench.cli.flags import (
    MAX_SEEDS,
    Parser,
    at_least,
    cluster_flags,
    data_root_flag,
    debug_flag,
    grace_flag,
    plugin_flag,
    probability,
    sesoi_flag,
    storage_flag,
    store_grace_flag,
    training_flags,
    workers_flag,
)

DEFAULT_SEEDS = 3  # seeds of `ablate` and so of `nox -s ablations`

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
    "status": "where a store's grids and searches stand: finished, running where, failed, left",
    "store": "a store's health: bad lines, damaged or quarantined records; a repaired copy",
    "bench": "measured throughput: the blog's naive pipeline vs the harness",
    "gpucheck": "the one-call GPU check: cuda tests, bench, profile, a timed paper slice",
}

if TYPE_CHECKING:
    from sslbench.bench.core.datasets import DatasetSpec


def _top_parser() -> tuple[Parser, Any]:
    parser = Parser(
        prog="sslbench",
        description="A benchmark and ablation harness for semi-supervised image "
                    "classification: does this tweak really help, or is it seed noise?",
        epilog="`sslbench COMMAND --help` lists a command's choices (methods, grids, search "
               "spaces, profiles) with one line each.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=_version())
    plugin_flag(parser)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def catalog(title: str, entries: dict[str, str]) -> str:
    """An aligned `name  description` block for a --help epilog."""
    width = max(map(len, entries), default=0)
    return "\n".join([f"{title}:", *(f"  {name:<{width}}  {text}"
                                     for name, text in entries.items())])


def _catalogs() -> dict[str, str]:
    """The registries as --help blocks. Imports the methods and grids (and so torch)."""
    from sslbench.ablations import get_grid, grid_names
    from sslbench.ablations.spaces import get_space, space_names
    from sslbench.bench.core.datasets import DATASETS
    from sslbench.bench.core.networks import NETWORKS
    from sslbench.bench.core.profiles import PROFILES
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
            n: _dataset_line(DATASETS.get(n)) for n in DATASETS.names()}),
        "models": catalog("models (--set model.name=...)", {
            n: (NETWORKS.get(n).__doc__ or "(no description)").split("\n")[0].rstrip(".")
            for n in NETWORKS.names()}),
    }


def _dataset_line(spec: DatasetSpec) -> str:
    size = f"{spec.num_train:,} training images, " if spec.num_train else ""
    shape = f"{spec.channels}x{spec.image_size}x{spec.image_size}"
    extra = f"; {spec.description}" if spec.description else ""
    return f"{size}{spec.num_classes} classes, {shape}{extra}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"sslbench {version('sslbench')}"
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "sslbench (not installed)"




class Builder:
    """Adds the commands to the top parser, each with its catalogs in its --help epilog."""

    def __init__(self, commands: Any, blocks: dict[str, str], default_url: str) -> None:
        self.commands, self.blocks, self.url = commands, blocks, default_url

    def command(self, name: str, *shown: str) -> argparse.ArgumentParser:
        return self.commands.add_parser(
            name, help=COMMAND_HELP[name], description=COMMAND_HELP[name],
            epilog="\n\n".join(self.blocks[b] for b in shown) or None,
            formatter_class=argparse.RawDescriptionHelpFormatter)

    def data(self) -> argparse.ArgumentParser:
        data = self.command("data", "datasets")
        fetch = data.add_subparsers(dest="data_command", required=True).add_parser(
            "fetch", help="download and verify a dataset", epilog=self.blocks["datasets"],
            formatter_class=argparse.RawDescriptionHelpFormatter)
        fetch.add_argument("--dataset", default="mnist",
                           help="a dataset below, or all (default mnist)")
        data_root_flag(fetch)
        fetch.set_defaults(func=run_command.cmd_data_fetch)
        return fetch

    def run(self) -> None:
        run = self.command("run", "methods", "profiles")
        run.add_argument("--method", required=True, metavar="METHOD",
                         help="the method to train (listed below)")
        run.add_argument("--seed", type=at_least(0), default=0)
        run.add_argument("--out",
                         help="record file (default runs/METHOD-seedN-PROFILE-HASH.json)")
        run.add_argument("--checkpoint", help="checkpoint file, resumed from when it exists "
                                              "(default: the record's path with .ckpt)")
        run.add_argument("--checkpoint-every", type=at_least(0), default=1, metavar="EPOCHS",
                         help="save a checkpoint every N epochs (default 1; 0: only on "
                              "SIGTERM/SIGINT)")
        training_flags(run)
        run.set_defaults(func=run_command.cmd_run)

    def ablate(self, default_sesoi: float) -> None:
        ablate = self.command("ablate", "grids", "profiles")
        ablate.add_argument("--grid", help="the grid to run (listed below)")
        ablate.add_argument("--list", action="store_true",
                            help="list the grids and their variants")
        ablate.add_argument("--seeds", default=str(DEFAULT_SEEDS),
                            help=f"N (seeds 0..N-1), a range a-b, or a list like 0,2,5-7 "
                                 f"(default {DEFAULT_SEEDS}, as `nox -s ablations`)")
        ablate.add_argument("--variants", nargs="+", help="only these variants")
        storage_flag(ablate, self.url)
        workers_flag(ablate, "cells run at once, one process each (default: one per CPU "
                             "core on CPU, 1 on a GPU)")
        ablate.add_argument("--stack", type=at_least(1, "seeds trained together as one "
                                                        "stacked model"),
                            default=None, metavar="N",
                            help="train up to N seeds of a variant together as one stacked "
                                 "model, in one process (default: all seeds on CUDA, 1 on CPU)")
        self._ablate_storage(ablate)
        self._ablate_rounds(ablate, default_sesoi)
        training_flags(ablate)
        cluster_flags(ablate, "cells", "one per job of the grid, never more")
        ablate.set_defaults(func=run_command.cmd_ablate)

    @staticmethod
    def _ablate_storage(ablate: argparse.ArgumentParser) -> None:
        ablate.add_argument("--checkpoints", metavar="DIR",
                            help="folder of the cells' checkpoints (default: beside a SQLite "
                                 "store, else ./sslbench-checkpoints)")
        ablate.add_argument("--checkpoint-every", type=at_least(0), default=1, metavar="EPOCHS",
                            help="checkpoint each cell every N epochs (default 1)")
        store_grace_flag(ablate)
        grace_flag(ablate, "a running cell whose owner sent no heartbeat for this long is "
                           "taken over by another runner")
        ablate.add_argument("--settings", metavar="NAME",
                            help="keep these cells as a separate, labeled set in the store "
                                 "(when the store holds the grid with other settings); report "
                                 "it with `report --settings NAME`")
        ablate.add_argument("--retry-failed", action="store_true",
                            help="also rerun cells that diverged (crashed cells are always "
                                 "retried)")
        ablate.add_argument("--pin-code", action="store_true",
                            help="keep the grid to one code version: refuse a tree with "
                                 "uncommitted changes, or a commit other than the one the "
                                 "grid's finished cells ran at (without it, a warning)")

    @staticmethod
    def _ablate_rounds(ablate: argparse.ArgumentParser, default_sesoi: float) -> None:
        ablate.add_argument("--until-decided", action="store_true",
                            help="add seeds in rounds, only to comparisons still open, until "
                                 "each is better, worse or equivalent within --sesoi (a valid "
                                 "sequential rule; see reports/sequential.py); --seeds is "
                                 "unused")
        ablate.add_argument("--max-seeds", type=at_least(2, high=MAX_SEEDS), default=20,
                            help="with --until-decided: the seed budget per variant "
                                 "(default 20)")
        ablate.add_argument("--round", type=at_least(1), default=3,
                            help="with --until-decided: seeds added per round (default 3)")
        sesoi_flag(ablate, default_sesoi, "with --until-decided: the equivalence margin")

    def search(self) -> None:
        search = self.command("search", "spaces", "profiles")
        search.add_argument("--space", help="search space (listed below)")
        search.add_argument("--list", action="store_true", help="list the search spaces")
        search.add_argument("--trials", type=at_least(1), default=20,
                            help="finished trials wanted in the study (default 20); running "
                                 "the command again resumes up to this number")
        search.add_argument("--trial-seeds", type=at_least(1), default=2,
                            help="seeds per trial, trained as one stack; the score is their "
                                 "mean validation accuracy (default 2)")
        search.add_argument("--val-size", type=at_least(1), default=1000,
                            help="validation images held out of the training set, their "
                                 "labels used only for scoring (default 1,000)")
        search.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed")
        search.add_argument("--no-prune", action="store_true",
                            help="do not stop trials that fall behind the median")
        workers_flag(search, "search processes (default 1; more need a journal or PostgreSQL "
                             "store)", default=1)
        storage_flag(search, self.url)
        grace_flag(search, "a trial whose worker sent no heartbeat for this long is run again")
        store_grace_flag(search)
        search.add_argument("--finalize", action="store_true",
                            help="run the best config and the blog's defaults on fresh seeds "
                                 "against the test set and write the comparison report")
        search.add_argument("--final-seeds", type=at_least(2, "a paired comparison"), default=5,
                            help="fresh seeds 0..N-1 of the final comparison (default 5)")
        search.add_argument("--out", help="report folder of --finalize (default "
                                          "report/search-SPACE-PROFILE)")
        training_flags(search)
        cluster_flags(search, "trials", "one per trial, at most 4")
        search.set_defaults(func=run_command.cmd_search)

    def report(self, default_sesoi: float) -> None:
        report = self.command("report", "grids")
        report.add_argument("--grid", required=True, help="the grid to report (listed below)")
        report.add_argument("--profile",
                            help="which profile's runs (default: the only one stored)")
        storage_flag(report, self.url)
        report.add_argument("--out", default="report", help="output folder (default ./report)")
        report.add_argument("--metric", default="tail_median",
                            choices=["tail_median", "final", "lowest_train_loss"],
                            help="per-run headline: median over the last 10%% of epochs "
                                 "(default), the last epoch, or the epoch of lowest training "
                                 "loss (the blog's)")
        sesoi_flag(report, default_sesoi, "smallest effect of interest in accuracy points: "
                                          "the equivalence margin of the verdicts")
        report.add_argument("--settings", metavar="NAME",
                            help="the labeled set of cells `ablate --settings NAME` stored")
        report.set_defaults(func=run_command.cmd_report)

    def export(self) -> None:
        export = self.command("export", "grids")
        storage_flag(export, self.url)
        export.add_argument("--out", required=True, help="folder for runs.csv and curves.csv")
        export.add_argument("--grid", help="only this grid's runs (default: every grid stored)")
        export.set_defaults(func=run_command.cmd_export)

    def store(self) -> None:
        store = self.command("store")
        check = store.add_subparsers(dest="store_command", required=True).add_parser(
            "check", help="read a store (never write it) and say what is in it and what is "
                          "damaged; exit status 1 when something is")
        storage_flag(check, self.url)
        check.add_argument("--repair-to", metavar="FILE",
                           help="write a new journal holding every valid operation of the "
                                "store's journal, and nothing else (the store is untouched)")
        check.set_defaults(func=run_command.cmd_store_check)

    def status(self) -> None:
        status = self.command("status", "grids")
        storage_flag(status, self.url)
        status.add_argument("--grid", help="only this grid's cells (default: every grid and "
                                           "search in the store)")
        status.add_argument("--watch", type=at_least(1, "seconds"), metavar="SECONDS",
                            help="print the status again every SECONDS until Ctrl-C")
        status.set_defaults(func=run_command.cmd_status)

    def plan(self, default_sesoi: float, alpha: float, power: float) -> None:
        plan = self.command("plan", "grids", "profiles")
        plan.add_argument("--grid", required=True, help="the grid to plan (listed below)")
        plan.add_argument("--profile", nargs="+",
                          help="profiles to plan (default: those stored)")
        storage_flag(plan, self.url, "store with pilot runs")
        plan.add_argument("--alpha", type=probability, default=alpha,
                          help=f"false-positive rate of the family (default {alpha:g})")
        plan.add_argument("--power", type=probability, default=power,
                          help=f"chance to detect an effect of --sesoi (default {power:g})")
        sesoi_flag(plan, default_sesoi, "smallest effect of interest in accuracy points")
        workers_flag(plan, "parallel workers (default: one per CPU core)")
        plan.set_defaults(func=run_command.cmd_plan)


def build_parser(full: bool = True) -> argparse.ArgumentParser:
    """The command line. `full=False`: the commands' names and help only (`sslbench --help`,
    `--version`), built without importing the engine."""
    parser, commands = _top_parser()
    if not full:
        for name, text in COMMAND_HELP.items():
            commands.add_parser(name, help=text)
        return parser
    from sslbench.bench.cli import bench_command
    from sslbench.bench.measure import gpucheck
    from sslbench.bench.store.runstore import DEFAULT_URL
    from sslbench.reports.stats import ALPHA, DEFAULT_SESOI, POWER

    build = Builder(commands, _catalogs(), DEFAULT_URL)
    fetch = build.data()
    build.run()
    build.ablate(DEFAULT_SESOI)
    build.search()
    build.report(DEFAULT_SESOI)
    build.export()
    build.status()
    build.store()
    build.plan(DEFAULT_SESOI, ALPHA, POWER)
    bench_command.add_parser(commands)  # `sslbench bench`: naive pipeline vs harness, side by side
    gpucheck.add_parser(commands)  # `sslbench gpucheck`: the one-call GPU check (nox -s gpu)
    for sub in (fetch, *commands.choices.values()):
        debug_flag(sub)
        plugin_flag(sub)
    return parser
