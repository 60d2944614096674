"""The time budget: what each section is expected to take, what it needs to start, and what
it must leave the sections after it."""

from __future__ import annotations

from sslbench.bench.measure.gpucheck.bench_section import bench_plan, bench_settings
from sslbench.bench.measure.gpucheck.document import Check
from sslbench.bench.measure.gpucheck.options import SECTIONS
from sslbench.bench.measure.gpucheck.slice_section import slice_estimate_s, slice_plan


def estimate_s(check: Check, name: str) -> float:
    """The seconds a whole section is expected to take (Sizes' figures; the slice's from
    the bench's measured epoch when there is one)."""
    sizes = check.options.sizes
    if name == "correctness":
        return sizes.correctness_s
    if name == "bench":
        return sizes.measurement_s * len(bench_plan(bench_settings(check.options), sizes))
    if name == "profile":
        return sizes.profile_s
    if name == "cifar_projection":
        return sizes.cifar_s
    plan = slice_plan(check)
    return slice_estimate_s(plan, plan["epochs"])


def needs_s(check: Check, name: str) -> float:
    """The seconds a section needs to start: its estimate, except the bench's, which is
    its first two measurements (it skips the others itself when they do not fit)."""
    if name == "bench":
        return 2 * check.options.sizes.measurement_s
    if name == "paper_slice":  # at its fewest epochs
        plan = slice_plan(check)
        return slice_estimate_s(plan, min(plan["epochs"], check.options.sizes.slice_min_epochs))
    return estimate_s(check, name)


def reserve_s(check: Check, name: str) -> float:
    """What the selected sections after `name` need to start: a section plans its own
    parts to leave them that much."""
    later = [n for n in SECTIONS[SECTIONS.index(name) + 1:] if n in check.options.sections]
    return sum(needs_s(check, n) for n in later)
