"""`sslbench gpucheck` (`nox -s gpu`): a GPU machine's first minutes, as one prepared command.

GPU time comes seldom and short (about 15 minutes, start-up included), so one call checks
and measures everything, within a hard time budget (`--budget-s`, default 480), and leaves
one folder to commit, `reports/results/gpu-<device>/`:

    correctness   `pytest -m cuda tests/test_cuda.py` on the device: stacks against
                  sequential runs, checkpoints of the device's generators, CUDA graphs,
                  bf16, chunked evaluation (junit.xml beside the figures)
    bench         `sslbench bench`'s measurements on all 60,000 images: one run, stacks of
                  5 and 10, 2 and 4 processes sharing the device (5 runs each), bf16, naive
    profile       torch.profiler over a few `train_step`s of stacks of 1, 5 and 10: ms per
                  step, kernels per step, the share of the time the GPU is busy, top ops
    paper_slice   the mnist100 grid, 5 seeds, the first N epochs of the paper protocol, in
                  the (workers, stack) the bench found fastest; then the wall time of the
                  whole 300-epoch grid as a projection, its arithmetic written out

Each section runs in a process of its own (its own process group: a CUDA fault or a hang
ends there, and the group is killed at the deadline). Before a section starts, its
estimated cost is held against the time left; one that does not fit is listed as skipped
with both figures, never dropped. results.json and summary.md are rewritten after every
section, and each section rewrites sections/NAME.json after every measurement, so a call
killed from outside still leaves what it had.

`--device cpu --tiny` runs the same sections on tiny sizes in about a minute: CI runs it,
so the plumbing is tested before a GPU sees it.

The modules, each importing only those above it:

    options          the sections' names, the sizes (FULL, TINY), the checked options
    environment      what produced the figures: device, driver, CUDA, commit
    render           summary.md from results.json's document
    process          a command in its own process group; a section's child process and
                     the file it writes (sections/NAME.json)
    document         results.json being written, and the deadline it is written against
    correctness      section 1: the cuda-marked tests, pytest's junit read back
    bench_section    section 2: bench.speed's measurements; the fastest grid configuration
    profile_section  section 3: torch.profiler over a few training steps
    slice_section    section 4: the grid's first epochs, then the projection
    budget           each section's estimated seconds, and what it must leave the next
    check            the sections in order, each against the budget
    child            `--child NAME`: one section inside its own process
    command          `sslbench gpucheck` and `python -m sslbench.bench.measure.gpucheck`
"""

from sslbench.bench.measure.gpucheck.bench_section import fastest_config
from sslbench.bench.measure.gpucheck.check import passed, run_check
from sslbench.bench.measure.gpucheck.command import (
    add_options,
    add_parser,
    build_parser,
    command,
    main,
)
from sslbench.bench.measure.gpucheck.correctness import junit_results
from sslbench.bench.measure.gpucheck.options import (
    DEFAULT_BUDGET_S,
    FULL,
    SECTIONS,
    TEST_DEVICE_ENV,
    TINY,
    Options,
    Sizes,
    options_from_args,
)
from sslbench.bench.measure.gpucheck.profile_section import union_us
from sslbench.bench.measure.gpucheck.render import render_summary
from sslbench.bench.measure.gpucheck.slice_section import project

__all__ = [
    "DEFAULT_BUDGET_S", "FULL", "SECTIONS", "TEST_DEVICE_ENV", "TINY", "Options", "Sizes",
    "add_options", "add_parser", "build_parser", "command", "fastest_config", "junit_results",
    "main", "options_from_args", "passed", "project", "render_summary", "run_check",
    "union_us",
]
