"""The parent: the sections in order, each against the budget, results.json saved after each."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sslbench.bench.measure.gpucheck.bench_section import run_bench
from sslbench.bench.measure.gpucheck.budget import estimate_s, needs_s, reserve_s
from sslbench.bench.measure.gpucheck.cifar_section import run_cifar_projection
from sslbench.bench.measure.gpucheck.correctness import run_correctness
from sslbench.bench.measure.gpucheck.document import Check, CheckStopped
from sslbench.bench.measure.gpucheck.options import SECTIONS, Options
from sslbench.bench.measure.gpucheck.process import SectionFile, read_json
from sslbench.bench.measure.gpucheck.profile_section import run_profile
from sslbench.bench.measure.gpucheck.slice_section import run_paper_slice
from sslbench.bench.messages import Log

# Each section's runner in the parent: the check, and the seconds it must leave the
# sections after it (reserve_s); its outcome (status, result, why or error).
SECTION_RUNNERS: dict[str, Callable[[Check, float], dict[str, Any]]] = {
    "correctness": run_correctness, "bench": run_bench, "profile": run_profile,
    "paper_slice": run_paper_slice, "cifar_projection": run_cifar_projection}


def run_check(options: Options, log: Log) -> dict[str, Any]:
    """Every section in order, each only when it fits in the time left; the document."""
    check = Check(options, log)
    check.save()
    for number, name in enumerate(SECTIONS, 1):
        try:
            outcome = _section_outcome(check, name, number)
        except CheckStopped as stop:
            _record_stop(check, name, str(stop))
            break
        check.section(name).update(outcome)
        check.save()
        log(f"gpucheck [{number}/{len(SECTIONS)}] {name}: {_one_line(outcome)}")
    check.save()
    return check.doc


def _section_outcome(check: Check, name: str, number: int) -> dict[str, Any]:
    if name not in check.options.sections:
        return {"status": "skipped", "why": "not selected (--sections)"}
    needs, estimate, left = needs_s(check, name), estimate_s(check, name), check.left_s()
    if needs > left:
        return {"status": "skipped", "estimate_s": round(estimate),
                "why": f"budget: needs ~{needs:.0f} s, {max(left, 0):.0f} s left"}
    check.log(f"gpucheck [{number}/{len(SECTIONS)}] {name}: ~{estimate:.0f} s estimated, "
              f"{left:.0f} s left ...")
    check.section(name).update(status="running", estimate_s=round(estimate))
    check.save()
    started = time.monotonic()
    outcome = SECTION_RUNNERS[name](check, reserve_s(check, name))
    return {"estimate_s": round(estimate), **outcome,
            "seconds": round(time.monotonic() - started, 1)}


def _record_stop(check: Check, current: str, why: str) -> None:
    for name in SECTIONS[SECTIONS.index(current):]:
        section = check.section(name)
        if section["status"] == "running":  # with what its process had written
            written = read_json(SectionFile(check.options.out, name).path)
            section.update(status="stopped", why=why, result=written.get("result", {}))
        elif section["status"] == "pending":
            section.update(status="skipped", why=f"the check was stopped ({why})")


def _one_line(outcome: dict[str, Any]) -> str:
    detail = outcome.get("why") or outcome.get("error") or outcome.get("note") or ""
    return outcome["status"] + (f" ({detail})" if detail else "")


def passed(doc: dict[str, Any]) -> bool:
    """Every section that ran passed (skipped ones allowed)."""
    return all(s["status"] in ("ok", "skipped") for s in doc["sections"].values())
