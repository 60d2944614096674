"""The README's Findings: the blog's three claims, answered from the committed stores.

Run from the repository root, after the reports are rebuilt:

    .venv/bin/python reports/results/findings/findings.py

It reads the committed quick and paper stores through the report's own code
(reports.build.gather_report, at δ = SESOI), writes findings.md beside this file and puts
the same table between the markers in README.md. Nothing here is typed by hand:
tests/test_findings.py checks that every number equals the committed reports' paired.csv.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
README = ROOT / "README.md"
START, END = "<!-- findings:start -->", "<!-- findings:end -->"
GRID = "mnist100"
SESOI = 2.0  # points: the smallest effect the blog's "1-2%" claim is about

# The blog's claims, in its words, and the variant of the mnist100 grid that tests each
# against the control (the blog's own settings).
CLAIMS = (
    ("pixelwise", "normalization",
     "channelwise normalization gives \"consistently better results (1-2% accuracy)\" than "
     "pixelwise"),
    ("batch_scaling", "scaling",
     "the supervised loss divided by the labeled count, not the batch size: \"slightly "
     "better and more stable\""),
    ("ramp_none", "ramp-up",
     "the ramp-up must be slow, \"otherwise, the network gets easily stuck in a degenerate "
     "solution\" (no ramp-up)"),
    ("ramp_fast", "ramp-up",
     "the same claim, against a fast ramp-up (20 of 300 epochs)"),
)


@dataclass(frozen=True)
class Source:
    profile: str
    url: str  # from the repository root
    folder: str  # the report's folder under reports/results


SOURCES = (
    Source("quick", "sqlite:///reports/results/mnist100-quick/store.db", "mnist100-quick"),
    Source("paper", "journal:///reports/results/mnist100-paper/runs.log", "mnist100-paper"),
)


@dataclass(frozen=True)
class Finding:
    variant: str
    topic: str
    claim: str
    profile: str
    folder: str
    control_runs: int
    variant_runs: int
    n: int  # paired seeds (both finished, neither collapsed)
    mean_diff: float  # points, variant - control
    ci_low: float
    ci_high: float
    control_collapses: int
    variant_collapses: int
    # Each collapse rate's 95% Clopper-Pearson interval, in percent (the report's summary),
    # and the exact McNemar p of the paired difference in collapses (its paired table).
    control_rate_ci: tuple[float, float]
    variant_rate_ci: tuple[float, float]
    collapse_p: float
    verdict: str  # the report's verdict, word for word
    decision: str  # its word: better | worse | equivalent | inconclusive | undetermined
    rule: str  # the stopping rule's decision, where the grid ran --until-decided
    plan: str  # where open: the seeds and hours `plan` says it needs


def _rule(until: dict[str, Any] | None, variant: str) -> str:
    if not until:
        return ""
    for c in until.get("comparisons", []):
        if c["variant"] == variant:
            if c["decision"] == "open":
                # Mid-run the verdict already says which look the rule is at; only a rule
                # that spent its budget adds that it ended open.
                return (f"stopping rule: open after {until['max_seeds']} seeds (the budget)"
                        if until.get("finished", True) else "")
            return (f"stopping rule: {c['decision']} at round {c['round']} "
                    f"({c['seeds']} seeds, δ = {until['sesoi']:g})")
    return ""


def _plan(steps: Any, variant: str) -> str:
    if steps is None:
        return ""
    row = steps[steps["variant"] == variant]
    if row.empty or row.iloc[0]["decision"] not in ("inconclusive", "undetermined"):
        return ""
    needed, hours = row.iloc[0]["seeds_needed"], row.iloc[0]["hours_to_add"]
    if needed is None or (isinstance(needed, float) and math.isnan(needed)):
        return "plan: too few seeds to estimate the spread; 3 paired seeds first"
    return f"plan: {int(needed)} paired seeds, about {hours:.1f} h more on 2 workers"


@dataclass(frozen=True)
class Compute:
    profile: str
    runs: int  # finished runs
    core_hours: float  # CPU: each run's training and evaluation time x its threads
    gpu_hours: float  # GPU: each run's time (one device per run)


def _threads(device: str) -> int:
    """The CPU threads a run used, from its device text ("cpu (x86_64, 1 threads)")."""
    found = re.search(r"(\d+) threads", device)
    return int(found.group(1)) if found else 1


def compute_spent(frame: Any, profile: str) -> Compute:
    """The compute behind a store's finished runs. A run trained in a stack of seeds shares
    its stack's time (`total_seconds` is the stack's), so each counts 1/stack of it."""
    seconds = frame["total_seconds"] / frame["stack"].clip(lower=1)
    on_cpu = frame["device"].str.startswith("cpu")
    cpu = (seconds[on_cpu] * frame.loc[on_cpu, "device"].map(_threads)).sum()
    return Compute(profile, len(frame), float(cpu) / 3600, float(seconds[~on_cpu].sum()) / 3600)


def findings(root: Path = ROOT) -> list[Finding]:
    """One finding per claim and profile that has runs of the variant."""
    return gather(root)[0]


def gather(root: Path = ROOT) -> tuple[list[Finding], list[Compute]]:
    """The findings, and the compute each profile's store holds."""
    from sslbench.bench.store.runstore import RunStore
    from sslbench.reports.build import gather_report

    rows, spent = [], []
    for source in SOURCES:
        scheme, _, path = source.url.partition(":///")
        store = RunStore(f"{scheme}:///{root / path}", read_only=True)
        data = gather_report(store, GRID, source.profile, sesoi=SESOI)
        frame = data.frame
        spent.append(compute_spent(frame, source.profile))
        for variant, topic, claim in CLAIMS:
            paired = data.paired[data.paired["variant"] == variant]
            if paired.empty:
                continue
            p = paired.iloc[0]
            runs = {v: frame[frame["variant"] == v] for v in ("control", variant)}
            rates = data.summary.set_index("variant")
            rows.append(Finding(
                variant, topic, claim, source.profile, source.folder,
                len(runs["control"]), len(runs[variant]), int(p["n"]), float(p["mean_diff"]),
                float(p["ci_low"]), float(p["ci_high"]),
                int(runs["control"]["collapsed"].sum()), int(runs[variant]["collapsed"].sum()),
                _rate_ci(rates, "control"), _rate_ci(rates, variant), float(p["collapse_p"]),
                str(p["verdict"]), str(p["decision"]),
                _rule(data.until_decided, variant), _plan(data.steps, variant)))
    return rows, spent


def _rate_ci(summary: Any, variant: str) -> tuple[float, float]:
    return (float(summary.loc[variant, "rate_ci_low"]),
            float(summary.loc[variant, "rate_ci_high"]))


def _collapses(f: Finding) -> str:
    """Collapses as counts, each rate's 95% interval and the paired test: the ramp-up claim
    is about failures, so how sure the rates are matters as much as the effect."""
    def one(count: int, runs: int, ci: tuple[float, float]) -> str:
        return f"{count}/{runs} ({ci[0]:.0f}-{ci[1]:.0f}%)"
    return (f"{one(f.control_collapses, f.control_runs, f.control_rate_ci)} / "
            f"{one(f.variant_collapses, f.variant_runs, f.variant_rate_ci)}; "
            f"McNemar p {f.collapse_p:.2g}")


def _seeds(n: int) -> str:
    return f"{n} paired seed{'' if n == 1 else 's'}"


def _interval(f: Finding) -> str:
    if not (math.isfinite(f.ci_low) and math.isfinite(f.ci_high)):
        return f"{f.mean_diff:+.2f} (no interval from {f.n} seed)"
    return f"{f.mean_diff:+.2f} [{f.ci_low:+.2f}, {f.ci_high:+.2f}]"


def _spent_line(spent: list[Compute]) -> str:
    parts = []
    for c in spent:
        gpu = f" and {c.gpu_hours:.1f} GPU-hours" if c.gpu_hours > 0 else ""
        parts.append(f"{c.profile}: {c.core_hours:.1f} core-hours{gpu} over {c.runs} "
                     f"finished runs")
    total = sum(c.core_hours for c in spent)
    return (f"Compute spent on these answers so far: {'; '.join(parts)}; {total:.1f} "
            f"core-hours in all (each run's training and evaluation time times its threads; "
            f"a cell still unfinished counts once it finishes).")


def render(rows: list[Finding], spent: list[Compute] | None = None) -> str:
    lines = [
        f"Built by `reports/results/findings/findings.py` from the committed stores, at "
        f"δ = {SESOI:g} points; each row links its report, where the seeds, commits and "
        f"device are stated. Effect: the variant minus the blog's setting (the control), "
        f"in accuracy points, with its 95% paired t interval over the seeds where both "
        f"finished and neither collapsed. A collapsed run (under twice chance) is a "
        f"failure, counted here and left out of the effect; its rate is given with its "
        f"95% Clopper-Pearson interval, and the exact McNemar test compares the two on the "
        f"seeds both ran.",
        "",
        "| claim (the blog's words) | profile | seeds control / variant (paired) | effect, "
        "points [95% CI] | collapses control / variant | verdict | report |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in rows:
        # Under the rule a decided verdict is the rule's ("worse by the stopping rule at
        # round 3"): its text is not repeated.
        rule = "" if _direction(f) != "open" else f.rule
        verdict = "; ".join(x for x in (f.verdict, rule, f.plan) if x)
        lines.append(
            f"| {f.topic}: {f.claim} | {f.profile} | {f.control_runs} / {f.variant_runs} "
            f"({f.n}) | {_interval(f)} | {_collapses(f)} | {verdict} | "
            f"[{f.folder}](reports/results/{f.folder}/report.md) |")
    if spent:
        lines += ["", _spent_line(spent)]
    lines += ["", *_quick_vs_paper(rows)]
    return "\n".join(lines).rstrip() + "\n"


def _direction(f: Finding) -> str:
    return f.decision if f.decision in ("better", "worse", "equivalent") else "open"


def _quick_vs_paper(rows: list[Finding]) -> list[str]:
    """Whether 30 epochs gave the answer 300 did, per claim where both profiles have one."""
    by = {(f.variant, f.profile): f for f in rows}
    out = []
    for variant, _, _ in CLAIMS:
        quick, paper = by.get((variant, "quick")), by.get((variant, "paper"))
        if quick is None:
            continue
        if paper is None:
            out.append(f"- `{variant}`: quick says {_direction(quick)}; no paper runs yet.")
        elif "open" in (_direction(quick), _direction(paper)):
            out.append(f"- `{variant}`: quick says {_direction(quick)}, paper says "
                       f"{_direction(paper)} ({_seeds(paper.n)}): not yet comparable.")
        else:
            same = ("the same answer" if _direction(quick) == _direction(paper)
                    else "DIFFERENT answers")
            out.append(f"- `{variant}`: quick says {_direction(quick)}, paper says "
                       f"{_direction(paper)}: {same}.")
    return ["Does the quick profile (30 epochs) predict the paper's (300)?", "", *out] \
        if out else []


def write(rows: list[Finding], spent: list[Compute]) -> str:
    table = render(rows, spent)
    (HERE / "findings.md").write_text("# Findings\n\n" + table)
    text = README.read_text()
    if START not in text or END not in text:
        sys.exit(f"README.md lacks the markers {START} and {END}; put them where the "
                 f"findings go")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table}{END}{tail}")
    return table


if __name__ == "__main__":
    print(write(*gather()))
