"""The check's constants, the sizes its sections measure (FULL, TINY), and its options."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from sslbench.bench.errors import UserError
from sslbench.bench.measure.gpucheck.environment import device_slug

SECTIONS = ("correctness", "bench", "profile", "paper_slice", "cifar_projection")
DEFAULT_BUDGET_S = 480.0  # about 8 of the 15 minutes a GPU machine is lent, start-up included
TEST_DEVICE_ENV = "SSLBENCH_TEST_DEVICE"  # the device tests/test_cuda.py runs on
# bench/measure/gpucheck/options.py: a source checkout, tests/ sits beside bench/
REPO = Path(__file__).resolve().parents[3]
# The cuda-marked tests: the engine on the device, and the whole-step CUDA graph.
CUDA_TESTS = (Path("tests") / "test_cuda.py", Path("tests") / "test_step_graph.py")
# `python -m MODULE`: the check, and each section's own process (`--child NAME`).
MODULE = "sslbench.bench.measure.gpucheck"
SCHEMA = "sslbench-gpucheck/1"
GRID = "mnist100"
METHOD = "temporal_ensembling"
PROFILE_EPOCH = 1  # steps as in epoch 2: w(t) > 0, the ensemble targets in use
TAIL_LINES = 12  # of a traceback or a log, kept in results.json
EVAL_SHARE = 1.2  # a grid epoch's cost over its training steps alone: evaluation, records


@dataclass(frozen=True)
class Sizes:
    """What the sections measure: FULL on a GPU, TINY for the CPU plumbing run."""

    name: str
    bench_train_size: int
    bench_test_size: int
    bench_epochs: int  # the first is warm-up (bench.speed)
    bench_stack: int  # bench.speed's stacked measurement
    bench_more_stacks: tuple[int, ...]  # further stacks, one process each
    bench_processes: tuple[tuple[int, int], ...]  # (processes, stack each) sharing the device
    bench_bf16: bool  # also bf16 autocast, where the device computes it natively
    profile_stacks: tuple[int, ...]
    profile_train_size: int
    profile_warmup_steps: int  # untimed: allocation, cuDNN's choices, first-call dispatch
    profile_steps: int  # timed, then profiled
    slice_profile: str
    slice_seeds: int
    slice_variants: tuple[str, ...]  # () = every variant of the grid
    slice_epochs: int  # --epochs-slice default
    slice_min_epochs: int  # below this the slice is skipped rather than shortened
    cifar_train_images: int  # random CIFAR-shaped images the cifar_projection steps draw from
    cifar_batch: int  # its batch (the grid's 100 on a GPU; the CPU plumbing run's smaller)
    cifar_warmup_steps: int
    cifar_steps: int
    cifar_eval_images: int  # evaluated once per variant, timed
    # Costs (s) before anything was measured. FULL: guesses, no GPU has run this yet; put
    # the first GPU run's figures here. TINY: measured on this project's 2-core CPU.
    correctness_s: float
    measurement_s: float  # one bench measurement: spawn, import, load, epochs
    profile_s: float
    job_start_s: float  # a grid job before its first epoch: data, model, store
    slice_epoch_s: float  # a grid job's epoch when the bench measured none
    cifar_s: float  # the cifar_projection section: start-up and its steps, all variants


FULL = Sizes(
    name="full", bench_train_size=60_000, bench_test_size=10_000, bench_epochs=3,
    bench_stack=5, bench_more_stacks=(10,), bench_processes=((2, 5), (4, 5)), bench_bf16=True,
    profile_stacks=(1, 5, 10), profile_train_size=60_000, profile_warmup_steps=20,
    profile_steps=20, slice_profile="paper", slice_seeds=5, slice_variants=(), slice_epochs=3,
    slice_min_epochs=2, cifar_train_images=2000, cifar_batch=100, cifar_warmup_steps=5,
    cifar_steps=20, cifar_eval_images=1000, correctness_s=150, measurement_s=30, profile_s=45,
    job_start_s=5, slice_epoch_s=3, cifar_s=60)
TINY = Sizes(
    name="tiny", bench_train_size=300, bench_test_size=200, bench_epochs=2, bench_stack=2,
    bench_more_stacks=(), bench_processes=((2, 1),), bench_bf16=False, profile_stacks=(1, 2),
    profile_train_size=500, profile_warmup_steps=3, profile_steps=5, slice_profile="smoke",
    slice_seeds=2, slice_variants=("control", "supervised"), slice_epochs=2,
    slice_min_epochs=1, cifar_train_images=200, cifar_batch=8, cifar_warmup_steps=1,
    cifar_steps=2, cifar_eval_images=16, correctness_s=25, measurement_s=6, profile_s=6,
    job_start_s=5, slice_epoch_s=1, cifar_s=20)


@dataclass(frozen=True)
class Options:
    device: str  # resolved: cpu, cuda
    tiny: bool
    budget_s: float
    out: Path
    root: Path
    epochs_slice: int
    sections: tuple[str, ...]

    @property
    def sizes(self) -> Sizes:
        return TINY if self.tiny else FULL


def options_from_args(args: argparse.Namespace, resolve: bool = True) -> Options:
    """Checked options; UserError for an absent device or an impossible number."""
    from sslbench.bench.core.device import resolve_device

    device = str(resolve_device(args.device)) if resolve else args.device
    if not args.budget_s > 0:
        raise UserError(f"--budget-s must be a positive number of seconds, got {args.budget_s}")
    sizes = TINY if args.tiny else FULL
    epochs = sizes.slice_epochs if args.epochs_slice is None else args.epochs_slice
    if epochs < 1:
        raise UserError(f"--epochs-slice must be >= 1, got {epochs}")
    out = Path(args.out) if args.out else Path("reports", "results",
                                               device_slug(device, args.tiny))
    return Options(device=device, tiny=args.tiny, budget_s=float(args.budget_s),
                   out=out.expanduser().resolve(), root=Path(args.root).expanduser().resolve(),
                   epochs_slice=epochs,
                   sections=tuple(s for s in SECTIONS if s in args.sections))


def command_line(options: Options) -> str:
    """The `sslbench gpucheck` call that gives these options (results.json's `command`)."""
    sections = "" if options.sections == SECTIONS else " --sections " + " ".join(options.sections)
    return (f"sslbench gpucheck --device {options.device}{' --tiny' if options.tiny else ''} "
            f"--budget-s {options.budget_s:g} --epochs-slice {options.epochs_slice} "
            f"--out {options.out} --root {options.root}{sections}")


def child_flags(options: Options) -> list[str]:
    """The options a section's own process is started with (`--child NAME ...`)."""
    flags = ["--device", options.device, "--out", str(options.out), "--root", str(options.root),
             "--epochs-slice", str(options.epochs_slice)]
    return flags + (["--tiny"] if options.tiny else [])
