"""One handler per `sslbench` command: each takes the parsed arguments, does the work
through the engine, prints its results on stdout and returns the exit status. Side effects
live here; the engine stays pure. The parser is bench.cli.parser; the entry point and its
error handling bench.cli.main."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslbench.bench.cli.flags import check_grace, seed_list
from sslbench.bench.errors import DataError, UserError
from sslbench.bench.files import check_writable, write_json_atomic
from sslbench.bench.messages import say

if TYPE_CHECKING:
    from sslbench.ablations.grid import Grid
    from sslbench.bench.runs.settings import GridSettings
    from sslbench.bench.store.runstore import RunStore


def _data_root(args: argparse.Namespace) -> Path:
    from sslbench.bench.core.datasets import default_root

    return Path(args.root).expanduser() if args.root else default_root()


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from sslbench.bench.core.datasets import DATASETS, fetch, get_dataset

    if args.dataset != "all":
        print(fetch(_data_root(args), get_dataset(args.dataset), log=say))
        return 0
    # Every built-in dataset: one that cannot be fetched here (CIFAR-10 and SVHN need the
    # internet) is said and skipped, the others still fetched; the end says which failed.
    failed = []
    for name in DATASETS.names():
        try:
            print(fetch(_data_root(args), get_dataset(name), log=say))
        except DataError as error:
            say(f"{name}: {error}")
            failed.append(name)
    if failed:
        raise DataError(f"could not fetch {', '.join(failed)} (the others are in place; the "
                        f"lines above say why)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from sslbench.bench.core.checkpoint import CheckpointPolicy, stop_on_signals
    from sslbench.bench.core.checkpoint import load as load_checkpoint
    from sslbench.bench.core.datasets import get_dataset, verify
    from sslbench.bench.core.device import resolve_device
    from sslbench.bench.core.overrides import build_config, parse_set_args
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



def cmd_ablate(args: argparse.Namespace) -> int:
    from sslbench.ablations import get_grid, grid_names
    from sslbench.bench.core.datasets import get_dataset, verify
    from sslbench.bench.core.overrides import parse_set_args
    from sslbench.bench.core.profiles import get_profile
    from sslbench.bench.runs.cells import plan_cells
    from sslbench.bench.runs.runner import run_grid
    from sslbench.bench.runs.settings import GridSettings
    from sslbench.bench.store.runstore import RunStore, default_checkpoint_dir, set_store_grace

    if args.list:
        for name in grid_names():
            print("\n".join(grid_listing(get_grid(name))))
        return 0
    if not args.grid:
        raise UserError("ablate needs --grid NAME (or --list to see the grids)")
    refuse_cluster_flags_here(args)
    grid = get_grid(args.grid)
    get_profile(args.profile)
    if args.until_decided and not (2 <= args.round <= args.max_seeds):
        raise UserError(f"--until-decided needs 2 <= --round <= --max-seeds, got --round "
                        f"{args.round} and --max-seeds {args.max_seeds}")
    if args.until_decided and args.launcher != "here":
        raise UserError(f"--until-decided looks at the results between its rounds, here; "
                        f"with --launcher {args.launcher}, submit a round with --seeds, then "
                        f"`sslbench report` (or drop --launcher)")
    if args.until_decided and args.settings:
        raise UserError("--until-decided keeps its decisions on the grid's own cells; drop "
                        "--settings or use another --storage")
    check_grace(args.heartbeat_grace)
    set_store_grace(args.store_grace)
    settings = GridSettings(
        args.profile, tuple(seed_list(args.seeds)),
        variants=tuple(args.variants) if args.variants else None,
        overrides=parse_set_args(args.set or []), settings_name=args.settings,
        data_root=_data_root(args), workers=_workers(args), device=args.device,
        threads=args.threads, stack=args.stack, retry_failed=args.retry_failed,
        checkpoint_dir=(Path(args.checkpoints) if args.checkpoints
                        else default_checkpoint_dir(args.storage)),
        checkpoint_every=args.checkpoint_every, grace_s=args.heartbeat_grace,
        pin_code=args.pin_code)
    # Every cell's config and the data are checked before the store is opened or created.
    cells = plan_cells(grid, settings.profile, settings.seeds, settings.variants,
                       settings.overrides)
    for dataset in sorted({cell.config.data.dataset for cell in cells}):
        verify(settings.data_root, get_dataset(dataset))
    if args.launcher != "here":
        return _launch_grid(args, grid, settings)
    store = RunStore(args.storage)
    if args.until_decided:
        return _until_decided(args, grid, settings, store)
    outcome = run_grid(grid, settings, store=store, log=say)
    print(f"{args.grid}/{args.profile}: {outcome.already_done} already finished, "
          f"{len(outcome.finished)} run now, {len(outcome.failed)} failed "
          f"({outcome.total} cells); store {store.url}")
    if outcome.stopped:
        return stopped()
    return 1 if outcome.failed else 0


def refuse_cluster_flags_here(args: argparse.Namespace) -> None:
    """A scheduler flag without --launcher would be silently ignored: refuse it."""
    if args.launcher != "here":
        return
    given = [flag for flag, value in (
        ("--jobs", args.jobs), ("--partition", args.partition),
        ("--gpus-per-job", args.gpus_per_job or None),
        ("--cpus-per-job", None if args.cpus_per_job == 1 else args.cpus_per_job),
        ("--time", args.time), ("--mem", args.mem), ("--account", args.account),
        ("--qos", args.qos), ("--slurm-extra", args.slurm_extra or None),
        ("--log-dir", args.log_dir), ("--wait", args.wait or None)) if value is not None]
    if given:
        raise UserError(f"{given[0]} is for a job array: add --launcher slurm (or --launcher "
                        f"local), or drop {given[0]}")


def cluster_options(args: argparse.Namespace) -> Any:
    """The command's cluster flags, checked (bench.cluster.launch.ClusterOptions)."""
    from sslbench.bench.cluster.launch import ClusterOptions, parse_extra, time_minutes

    if args.time is not None:
        time_minutes(args.time)  # a bad form is refused before anything is opened
    return ClusterOptions(
        launcher=args.launcher, jobs=args.jobs, partition=args.partition,
        gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job, time=args.time,
        mem=args.mem, account=args.account, qos=args.qos,
        extra=parse_extra(args.slurm_extra),
        log_dir=Path(args.log_dir) if args.log_dir else None,
        wait=args.wait or args.launcher == "local")


def _launch_grid(args: argparse.Namespace, grid: Grid, settings: GridSettings) -> int:
    """`ablate --launcher slurm|local`: submit the grid's tasks; with --wait, follow them."""
    from sslbench.bench.cluster.grid import launch_grid

    options = cluster_options(args)
    try:
        launched = launch_grid(grid, settings, args.storage, options, log=say)
    except KeyboardInterrupt:
        print("stopped following: the submitted tasks go on (`sslbench status` shows them)",
              file=sys.stderr)
        return 130
    followed = launched.followed
    if followed is None:
        return 0
    line = (f"{args.grid}/{args.profile}: {launched.already_done} already finished, "
            f"{len(followed.finished)} run now, {len(followed.failed)} failed")
    if followed.open:
        line += (f", {len(followed.open)} not finished when the tasks ended (run the same "
                 f"command again: they resume from their checkpoints)")
    print(f"{line} ({launched.total} cells)")
    return 1 if followed.failed or followed.open else 0


def _workers(args: argparse.Namespace) -> int:
    """--workers, or one per core on the CPU and one on a GPU."""
    if args.workers is not None:
        return int(args.workers)
    from sslbench.bench.core.device import resolve_device

    return (os.cpu_count() or 1) if resolve_device(args.device).type == "cpu" else 1


def _until_decided(args: argparse.Namespace, grid: Grid, settings: GridSettings,
                   store: RunStore) -> int:
    from sslbench.bench.runs.adaptive import run_until_decided

    outcome = run_until_decided(grid, settings, store=store, max_seeds=args.max_seeds,
                                round_size=args.round, sesoi=args.sesoi, log=say)
    for c in outcome.comparisons:
        where = (f"at round {c.round}, {c.seeds} seeds" if c.round
                 else "(stopped before the rule's next look)" if outcome.stopped
                 else f"after {args.max_seeds} seeds (the budget)")
        print(f"{c.variant} vs {c.baseline}: {c.decision} {where}")
    print(f"{args.grid}/{args.profile}: {outcome.cells_run} cells run now, "
          f"{len(outcome.failed)} failed; store {store.url}")
    if outcome.stopped:
        return stopped()
    return 1 if outcome.failed else 0


def stopped(detail: str = "") -> int:
    """The stop the user asked for (Ctrl-C, SIGTERM): exit status 130, as a shell's."""
    print(f"interrupted{detail}: finished results are kept; run the same command to resume",
          file=sys.stderr)
    return 130


def cmd_search(args: argparse.Namespace) -> int:
    from sslbench.ablations.spaces import get_space, space_names
    from sslbench.bench.core.datasets import get_dataset, verify
    from sslbench.bench.core.overrides import parse_set_args
    from sslbench.bench.core.profiles import get_profile
    from sslbench.bench.runs.finalize import finalize
    from sslbench.bench.runs.search import SearchSettings, check_settings, run_search, summary_lines
    from sslbench.bench.store.runstore import set_store_grace

    if args.list:
        for name in space_names():
            print(f"{name}: {get_space(name).description}")
        return 0
    if not args.space:
        raise UserError("search needs --space NAME (or --list to see the spaces)")
    refuse_cluster_flags_here(args)
    get_profile(args.profile)
    workers = args.workers
    check_grace(args.heartbeat_grace)
    set_store_grace(args.store_grace)
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
            return stopped()
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
    if args.launcher != "here":
        from sslbench.bench.cluster.search import launch_search

        try:
            launch_search(settings, args.storage, cluster_options(args), device=args.device,
                          data_root=_data_root(args), threads=args.threads, log=say)
        except KeyboardInterrupt:
            print("stopped following: the submitted tasks go on (`sslbench status` shows "
                  "them)", file=sys.stderr)
            return 130
        return 0
    study = run_search(settings, args.storage, workers=workers, device=args.device,
                       data_root=_data_root(args), threads=args.threads, log=say)
    print("\n".join(summary_lines(study)))
    print(f"next: sslbench search --space {args.space} --profile {args.profile} --storage "
          f"{args.storage} --finalize")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sslbench.bench.store.runstore import RunStore
    from sslbench.reports.export import parquet_available, write_export

    store = RunStore(args.storage, read_only=True)  # a store error leaves no --out folder behind
    written = write_export(store, Path(args.out), args.grid)
    print("written: " + ", ".join(str(p) for p in written))
    if not parquet_available():
        print("(CSV only: `pip install pyarrow` adds Parquet)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sslbench.bench.store.runstore import RunStore
    from sslbench.bench.store.status import status_lines

    if args.grid is not None:
        from sslbench.ablations import get_grid

        get_grid(args.grid)  # an unknown name is refused with the list of grids
    store = RunStore(args.storage, read_only=True)
    while True:
        print(f"store {args.storage} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        for line in status_lines(store, args.grid):
            print(line)
        if not args.watch:
            return 0
        time.sleep(args.watch)  # Ctrl-C ends it: one line, exit status 130 (bench.cli.main)


def cmd_store_check(args: argparse.Namespace) -> int:
    from sslbench.bench.store.health import check_store, repaired_copy

    health = check_store(args.storage)
    print(f"store {args.storage}")
    for line in health.lines:
        print(line)
    for problem in health.problems:
        print(f"damaged: {problem}")
    if args.repair_to:
        kept = repaired_copy(args.storage, Path(args.repair_to))
        print(f"repaired copy: {args.repair_to}, {kept:,} operations; the store is unchanged "
              f"(move the copy over it yourself once you have checked it)")
    print("healthy" if health.healthy else "damaged: see the lines above")
    return 0 if health.healthy else 1


def cmd_report(args: argparse.Namespace) -> int:
    from sslbench.bench.store.names import settings_suffix
    from sslbench.bench.store.runstore import RunStore
    from sslbench.reports.build import build_report

    out = Path(args.out)
    store = RunStore(args.storage, read_only=True)  # a store error leaves no --out folder behind
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
    outcome = build_report(store, args.grid, profile, out, metric=args.metric, sesoi=args.sesoi)
    print(f"report written: {outcome.path}")
    if outcome.next_step:  # what the compute bought, and what would settle the question
        print(outcome.next_step)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from sslbench.bench.store.runstore import RunStore
    from sslbench.reports.build import stored_profiles
    from sslbench.reports.planning import plan_text

    workers = args.workers or os.cpu_count() or 1
    from sslbench.ablations import get_grid

    get_grid(args.grid)
    store = RunStore(args.storage, read_only=True)
    profiles = args.profile or [p for p in stored_profiles(store, args.grid) if "@" not in p] \
        or ["quick"]
    print(plan_text(store, args.grid, profiles, args.sesoi, workers, args.alpha, args.power))
    return 0
