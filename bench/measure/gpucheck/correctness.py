"""Section 1, correctness: the cuda-marked tests on the device, read back from pytest's junit."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from sslbench.bench.measure.gpucheck.document import Check
from sslbench.bench.measure.gpucheck.options import CUDA_TESTS, REPO, TEST_DEVICE_ENV
from sslbench.bench.measure.gpucheck.process import run_logged
from sslbench.bench.measure.gpucheck.render import count_line


def run_correctness(check: Check, reserve_s: float) -> dict[str, Any]:
    """pytest on the device, in its own process group, killed at the budget's end; it has
    no parts of its own to fit in, so `reserve_s` goes unused."""
    del reserve_s
    options = check.options
    missing = [str(REPO / t) for t in CUDA_TESTS if not (REPO / t).is_file()]
    if missing:
        return {"status": "failed", "error": f"{', '.join(missing)} not found: the tests run "
                                             f"from a source checkout of sslbench"}
    junit = options.out / "correctness-junit.xml"
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", *map(str, CUDA_TESTS), "-m", "cuda", "-q",
               "-p", "no:cacheprovider", f"--junitxml={junit}"]
    env = {TEST_DEVICE_ENV: options.device, "SSLBENCH_DATA": str(options.root)}
    finished = run_logged(command, options.out / "logs" / "correctness.log", check.left_s(), env)
    outcome: dict[str, Any] = {"log": "logs/correctness.log", "junit": junit.name}
    if finished.returncode is None:
        return {**outcome, "status": "timeout", "why": f"pytest killed at the end of the "
                                                       f"budget after {finished.seconds:.0f} s"}
    try:
        result = junit_results(junit)
    except (OSError, ET.ParseError) as error:
        return {**outcome, "status": "failed", "traceback": finished.tail,
                "error": f"pytest (exit code {finished.returncode}) wrote no readable "
                         f"{junit.name}: {error}"}
    result["device"] = options.device
    counts = result["counts"]
    outcome["result"] = result
    if finished.returncode == 0 and counts["passed"] > 0:
        return {**outcome, "status": "ok", "note": count_line(counts)}
    return {**outcome, "status": "failed", "traceback": finished.tail,
            "error": f"pytest exit code {finished.returncode}: {count_line(counts)}"}


def junit_results(path: Path) -> dict[str, Any]:
    """Per test: outcome, seconds and the first line of its message; the counts."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                outcome = name
                first = (found.get("message") or found.text or "").strip().splitlines()
                message = first[0][:300] if first else ""
                break
        tests.append({"test": case.get("name", "?"), "outcome": outcome,
                      "seconds": round(float(case.get("time") or 0), 2), "message": message})
    counts = {o: sum(t["outcome"] == o for t in tests)
              for o in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}
