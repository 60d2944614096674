"""nox sessions: tests, lint, ablations, report, search, bench, gpu.

All sessions share one virtual environment, `.venv`, created and filled on first use:
torch alone is several GB, so one install serves every session. It is refreshed when
pyproject.toml changes.

    nox -s ablations                      # mnist100, quick profile, 3 seeds, then the report
    nox -s ablations -- --profile smoke --seeds 2
    nox -s report -- --grid mnist100 --profile quick
    nox -s search -- --space supervised --trials 30   # search, then best vs defaults
    nox -s bench                          # micro-benchmarks, then naive vs harness
    nox -s gpu                            # on a GPU machine: one call, ~8 min, a folder to commit
    nox -s tests
    nox -s lint
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".sslbench-installed"
# The tested torch, pinned here and not in the package's requirements (a range there): on this
# project's CPU machines pip takes both from local disk.
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
# The reporting standard's aggregates across tasks (reports/aggregates.py), pinned.
RLIABLE_PIN = "rliable==1.2.0"


def _venv(session: nox.Session) -> None:
    """Create .venv and install the project (editable, with dev extras) when needed."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()
                            + " ".join([*TORCH_PINS, RLIABLE_PIN]).encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        session.run(sys.executable, "-m", "venv", str(VENV), external=True)
    session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip",
                external=True)
    # The pins in the same call: the project's range is resolved together with them.
    session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev]",
                *TORCH_PINS, external=True)
    # rliable's metrics (reports.aggregates) need only numpy and scipy; its declared
    # `arch < 8` cannot import with pandas 3, so it is installed without its dependencies.
    session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "--no-deps", RLIABLE_PIN,
                external=True)
    STAMP.write_text(wanted)


def _run(session: nox.Session, tool: str, *args: str, success_codes: list[int] | None = None
         ) -> None:
    session.run(str(BIN / tool), *args, external=True, success_codes=success_codes or [0])


@nox.session
def tests(session: nox.Session) -> None:
    """pytest on real MNIST and Fashion-MNIST slices (fetched first when missing)."""
    _venv(session)
    # The two the tests read (not `all`: CIFAR-10 and SVHN are downloads of 400 MB, and the
    # tests use fabricated files of them).
    for dataset in ("mnist", "fashion_mnist"):
        _run(session, "sslbench", "data", "fetch", "--dataset", dataset)
    # The 15 slowest tests are named at the end, so a CI log shows where its time went.
    _run(session, "pytest", *(session.posargs or ["-q", "--durations=15"]))


PACKAGE_FOLDERS = ("bench", "methods", "ablations", "reports")  # installed as sslbench.<folder>


def _typecheck_tree() -> None:
    """build/typecheck/sslbench/<folder> -> <folder>: the installed names, for mypy."""
    tree = ROOT / "build" / "typecheck" / "sslbench"
    tree.mkdir(parents=True, exist_ok=True)
    for folder in PACKAGE_FOLDERS:
        link = tree / folder
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", "..", folder))


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (docs/, mkdocs.yml), built strictly: a warning fails."""
    _venv(session)
    # Not --quiet: mkdocs then drops the warnings that strict mode counts.
    _run(session, "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy."""
    _venv(session)
    _run(session, "ruff", "check", ".")
    _typecheck_tree()
    _run(session, "mypy")


def _with_defaults(posargs: list[str], defaults: dict[str, str]) -> list[str]:
    """The session's arguments, plus each default flag the user did not give."""
    args = list(posargs)
    for flag, value in defaults.items():
        if flag not in args and not any(a.startswith(flag + "=") for a in args):
            args += [flag, value]
    return args


def _report_args(posargs: list[str]) -> list[str]:
    """The grid, profile and storage of an ablate command line, for the report after it."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--grid", default="mnist100")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--storage", default="sqlite:///sslbench.db")
    known, _ = parser.parse_known_args(posargs)
    out = f"report/{known.grid}-{known.profile}"
    return ["--grid", known.grid, "--profile", known.profile, "--storage", known.storage,
            "--out", out]


@nox.session
def ablations(session: nox.Session) -> None:
    """Run a grid (default: mnist100, quick profile, 3 seeds) and write its report."""
    _venv(session)
    _run(session, "sslbench", "data", "fetch")
    args = _with_defaults(session.posargs,
                          {"--grid": "mnist100", "--profile": "quick",
                           "--seeds": "3"})  # = bench.cli.DEFAULT_SEEDS (tests check it)
    # Exit status 1: some cells failed; they are recorded and the report lists them.
    _run(session, "sslbench", "ablate", *args, success_codes=[0, 1])
    _run(session, "sslbench", "report", *_report_args(args))


@nox.session
def search(session: nox.Session) -> None:
    """An Optuna search (default: temporal ensembling, quick profile, 20 trials), then the
    best config against the blog's defaults on fresh seeds; posargs go to `sslbench search`."""
    _venv(session)
    _run(session, "sslbench", "data", "fetch")
    args = _with_defaults(session.posargs, {"--space": "temporal_ensembling",
                                            "--profile": "quick", "--trials": "20"})
    _run(session, "sslbench", "search", *args)
    parser = argparse.ArgumentParser(add_help=False)
    for flag in ("--space", "--profile", "--storage", "--root", "--device", "--workers"):
        parser.add_argument(flag)
    known, _ = parser.parse_known_args(args)
    final = [f"{flag}={value}" for flag, value in
             (("--space", known.space), ("--profile", known.profile), ("--storage", known.storage),
              ("--root", known.root), ("--device", known.device), ("--workers", known.workers))
             if value is not None]
    _run(session, "sslbench", "search", *final, "--finalize")


@nox.session
def bench(session: nox.Session) -> None:
    """Micro-benchmarks, then `sslbench bench` (naive pipeline vs harness; posargs go to it),
    then the CPU step against this core's roofline."""
    _venv(session)
    _run(session, "sslbench", "data", "fetch")
    Path("report/bench").mkdir(parents=True, exist_ok=True)  # --benchmark-json needs the folder
    _run(session, "pytest", "benchmarks", "--benchmark-only", "-p", "no:cacheprovider",
         "--benchmark-json", "report/bench/micro.json")
    _run(session, "sslbench", "bench", "--out", "report/bench", *session.posargs)
    _run(session, "python", "-m", "sslbench.bench.measure.roofline", "--out", "report/bench")


@nox.session
def gpu(session: nox.Session) -> None:
    """The one-call GPU check, `sslbench gpucheck` (posargs go to it): the cuda tests, the
    bench on 60,000 images, a profile of train_step and a timed paper slice, within
    --budget-s (default 480 s), into reports/results/gpu-DEVICE/. On a CPU:
    `nox -s gpu -- --device cpu --tiny` (about a minute; CI runs it)."""
    _venv(session)
    _run(session, "sslbench", "data", "fetch")
    _run(session, "sslbench", "gpucheck", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """Rebuild a grid's report from the store (arguments as `sslbench report`)."""
    _venv(session)
    args = list(session.posargs) or ["--grid", "mnist100"]
    if "--out" not in args:
        args += ["--out", "report"]
    _run(session, "sslbench", "report", *args)
