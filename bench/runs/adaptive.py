"""`sslbench ablate --until-decided`: seeds in rounds, spent where the answer is open.

After each round every comparison of the grid's family (a variant against its baseline) is
judged by the stopping rule of reports.sequential; decided ones get no more seeds, open ones
get the next round, and a baseline grows while any of its comparisons is open. The rounds'
cells are ordinary grid cells (bench.runner), so the whole is resumable: a killed run
continues from its store, no finished cell is rerun, and the decisions are replayed from the
stored cells, each look using exactly its round's seeds. Several runners may share the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from sslbench.ablations.grid import Grid
from sslbench.bench.errors import UserError
from sslbench.bench.runs.runner import run_grid
from sslbench.bench.runs.settings import GridSettings
from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.runstore import RunStore
from sslbench.reports import sequential, tables
from sslbench.reports.build import load_runs


@dataclass
class Comparison:
    variant: str
    baseline: str
    decision: str = "open"  # better | worse | equivalent | open
    round: int | None = None  # the look that decided it
    seeds: int | None = None  # the seeds it used


@dataclass
class AdaptiveOutcome:
    comparisons: list[Comparison]
    looks: list[sequential.Look]
    cells_run: int = 0
    failed: list[str] = field(default_factory=list)
    stopped: bool = False

    def open(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.decision == "open"]


def family_comparisons(grid: Grid, variants: Sequence[str] | None) -> list[Comparison]:
    chosen = set(variants) if variants else {v.name for v in grid.variants}
    found = []
    for variant in grid.variants:
        baseline = grid.baseline_of(variant.name)
        if variant.name in chosen and baseline is not None and grid.in_family(variant.name):
            found.append(Comparison(variant.name, baseline))
    if not found:
        raise UserError(f"grid {grid.name!r} has no compared variant among "
                        f"{', '.join(sorted(chosen))}; --until-decided needs a variant and "
                        f"its baseline")
    return found


def judge(comparisons: Sequence[Comparison], frame: pd.DataFrame, look: sequential.Look,
          sesoi: float) -> None:
    """Decide the open comparisons at `look`, on the seeds below look.seeds where both
    runs finished."""
    family_size = len(comparisons)
    seen = frame[frame["seed"] < look.seeds]
    for comparison in comparisons:
        if comparison.decision != "open":
            continue
        pair = seen[seen["variant"].isin([comparison.baseline, comparison.variant])]
        wide = pair.pivot(index="seed", columns="variant", values=["accuracy", "collapsed"])
        wide = wide.dropna()
        names = set(wide["accuracy"].columns) if not wide.empty else set()
        if not {comparison.baseline, comparison.variant} <= names:
            continue
        accuracy, collapsed = wide["accuracy"], wide["collapsed"].astype(bool)
        word = sequential.decide_look(
            accuracy[comparison.baseline].to_numpy(float),
            accuracy[comparison.variant].to_numpy(float),
            collapsed[comparison.baseline].to_numpy(bool),
            collapsed[comparison.variant].to_numpy(bool), look.spent, family_size, sesoi)
        if word != "open":
            comparison.decision, comparison.round, comparison.seeds = word, look.round, look.seeds


def run_until_decided(grid: Grid, settings: GridSettings, *, store: RunStore, max_seeds: int,
                      round_size: int, sesoi: float, metric: str = tables.DEFAULT_METRIC,
                      log: Callable[[str], None] = print) -> AdaptiveOutcome:
    """Rounds of `round_size` seeds up to `max_seeds`, until every comparison is decided.
    Each round runs the grid with `settings` (workers, stack, device, checkpoints...), its
    seeds and variants those of the round; the comparisons are those of `settings.variants`
    (None: the grid's whole family)."""
    comparisons = family_comparisons(grid, settings.variants)
    outcome = AdaptiveOutcome(comparisons, sequential.looks(max_seeds, round_size))
    # The rule is on the store from the start and after every look, so a report of a grid
    # stopped mid-way states the rule's decisions, never a fixed-seed verdict on seeds that
    # were looked at in rounds (reports.build.apply_stopping_rule).
    def save(done: int, finished: bool) -> None:
        save_decisions(store, grid.name, settings.profile, outcome, sesoi, round_size,
                       max_seeds, done, finished)

    looks_done = 0
    for look in outcome.looks:
        still = outcome.open()
        if not still:
            break
        needed = sorted({c.variant for c in still} | {c.baseline for c in still})
        log(f"round {look.round}: seeds 0-{look.seeds - 1} of {', '.join(needed)} "
            f"(alpha spent at this look: {look.spent:.2g} over {len(comparisons)} "
            f"comparisons)")
        ran = run_grid(grid, settings.with_seeds(range(look.seeds)).with_variants(needed),
                       store=store, log=log)
        if look.round == 1:  # the grid's study exists now
            save(0, False)
        outcome.cells_run += len(ran.finished)
        outcome.failed += ran.failed
        if ran.stopped:
            outcome.stopped = True
            return outcome
        frame = tables.runs_frame(load_runs(store, grid.name, settings.profile), metric)
        judge(comparisons, frame, look, sesoi)
        looks_done = look.round
        save(looks_done, False)
        for comparison in still:
            if comparison.decision != "open":
                log(f"{comparison.variant} vs {comparison.baseline}: {comparison.decision} "
                    f"at round {look.round} ({look.seeds} seeds); no more seeds for it")
    save(looks_done, True)
    return outcome


def save_decisions(store: RunStore, grid_name: str, profile: str, outcome: AdaptiveOutcome,
                   sesoi: float, round_size: int, max_seeds: int, looks_done: int,
                   finished: bool) -> None:
    """The rule, the looks judged so far and each comparison's decision and stopping round,
    on the grid's study: the report states them (reports.build). `finished`: every look
    that could run has run (the rounds ended, decided or with the budget spent)."""
    study_id = store.find_study(grid_study_name(grid_name, profile))
    assert study_id is not None, "run_grid made it"
    store.storage.set_study_user_attr(study_id, "until_decided", {
        "rule": sequential.RULE, "sesoi": sesoi, "round": round_size,
        "max_seeds": max_seeds, "alpha": sequential.ALPHA, "looks_done": looks_done,
        "looks": len(outcome.looks), "finished": finished,
        "comparisons": [{"variant": c.variant, "baseline": c.baseline,
                         "decision": c.decision, "round": c.round, "seeds": c.seeds}
                        for c in outcome.comparisons]})
