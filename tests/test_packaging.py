"""The installed package: one top-level name, `sslbench`, that clashes with nothing.

Builds the real wheel, installs it into a fresh virtual environment that already holds
another package named `reports` (PyPI has one; so does many a data-science project), and
imports both, then runs the installed CLI."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ("bench", "methods", "ablations", "reports")


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_wheel_installs_beside_another_reports_package(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", tmp_path / "dist", ROOT)
    (wheel,) = (tmp_path / "dist").glob("sslbench-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"sslbench", wheel.name.split("-py3")[0] + ".dist-info"}, tops

    other = tmp_path / "other" / "reports"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("WHO = 'the other reports package'\n")
    (tmp_path / "other" / "setup.py").write_text(
        "from setuptools import setup\nsetup(name='reports', version='9.9', "
        "packages=['reports'])\n")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", tmp_path / "other-dist", tmp_path / "other")
    (other_wheel,) = (tmp_path / "other-dist").glob("reports-*.whl")
    # The environment inside a user's own git work tree, with a commit: not ours to record.
    run("git", "init", "-q", tmp_path)
    run("git", "-C", tmp_path, "-c", "user.name=u", "-c", "user.email=u@example.org",
        "commit", "-q", "--allow-empty", "-m", "the user's project")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--no-deps", other_wheel)
    run(python, "-m", "pip", "install", "-q", "--no-deps", wheel)

    probe = ("import importlib.util, reports, sslbench.bench.errors as e\n"
             "spec = importlib.util.find_spec('sslbench.reports')\n"
             "print(reports.WHO); print(spec.origin); print(e.__file__)")
    who, ours, errors = run(python, "-c", probe, cwd=tmp_path).splitlines()
    assert who == "the other reports package"
    site = Path(errors).parents[2]
    assert Path(ours) == site / "sslbench" / "reports" / "__init__.py"
    installed = {p.name for p in site.iterdir()}
    assert not installed & {"bench", "methods", "ablations"} and "reports" in installed

    # With torch reachable (this environment's, appended to the path after the wheel's
    # own site-packages), the installed package runs: its CLI lists the methods, and a
    # record names the release and no commit of some other work tree.
    import torch

    (site / "outer.pth").write_text(str(Path(torch.__file__).parents[1]) + "\n")
    listed = run(python, "-m", "sslbench.bench.cli", "run", "--help", cwd=tmp_path)
    assert "temporal_ensembling" in listed and "sharp_pi" not in listed
    facts = run(python, "-c", "import sslbench.bench.core.record as r; print(r.__file__); "
                "print(r.git_commit()['commit'], r.package_version())", cwd=tmp_path)
    where, commit_and_version = facts.splitlines()
    assert Path(where).is_relative_to(site)  # the wheel's copy, not the checkout
    assert commit_and_version == "unknown 0.1.0"


def test_the_source_checkout_reports_its_own_commit():
    # Moving record.py into bench/core/ once made it look for pyproject.toml one folder too
    # low, and every record said commit "unknown"; only a 20-minute grid test noticed.
    from sslbench.bench.core import record

    head = run("git", "rev-parse", "HEAD", cwd=ROOT).strip()
    record.git_commit.cache_clear()
    assert record.git_commit()["commit"] == head
