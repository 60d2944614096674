"""The report of one grid, from the store alone: gather its data (ReportData), write the CSV
tables and seaborn figures, and report.md (rendered by markdown.py)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from sslbench.ablations import get_grid
from sslbench.ablations.grid import Grid, Variant
from sslbench.bench.core.legacy import legacy_variant_name
from sslbench.bench.errors import ConfigError, UserError
from sslbench.bench.store.names import grid_study_name, grid_study_prefix, stored_profile_key
from sslbench.bench.store.runstore import CellRun, RunStore, latest_by_cell
from sslbench.reports import figures, planning, tables
from sslbench.reports.aggregates import aggregates
from sslbench.reports.markdown import FOREST_FILE, render_report
from sslbench.reports.stats import DEFAULT_SESOI


def stored_profiles(store: RunStore, grid: str) -> list[str]:
    """The profiles (with `@SETTINGS` for labeled sets) of the grid's studies in the store."""
    prefix = grid_study_prefix(grid)
    return sorted(stored_profile_key(n, grid) for n in store.study_names()
                  if n.startswith(prefix))


def resolve_profile(store: RunStore, grid: str, profile: str | None) -> str:
    stored = stored_profiles(store, grid)
    if profile is not None:
        if profile not in stored:
            raise UserError(f"the store {store.url} has no runs of grid {grid!r} with profile "
                            f"{profile!r}" + (f" (it has: {', '.join(stored)})" if stored else
                                              f"; run `sslbench ablate --grid {grid}` first"))
        return profile
    if not stored:
        raise UserError(f"the store {store.url} has no runs of grid {grid!r}; run "
                        f"`sslbench ablate --grid {grid} ...` first or pass --storage")
    if len(stored) > 1:
        raise UserError(f"the store holds grid {grid!r} with profiles {', '.join(stored)}; "
                        f"choose one with --profile")
    return stored[0]


def load_runs(store: RunStore, grid: str, profile: str) -> list[CellRun]:
    study_id = store.find_study(grid_study_name(grid, profile))
    if study_id is None:
        raise UserError(f"no runs of grid {grid!r} with profile {profile!r} in {store.url}")
    return separate_settings(list(latest_by_cell(store.cell_runs(study_id)).values()))


def _settings_key(config: dict) -> str:
    """A config's identity apart from its seed, as the run ids see it: a config stored before
    a later field existed (train.batches, say) is the same settings as one that holds the
    field at its default (bench.identity.settings_id). Unreadable configs compare raw."""
    from sslbench.bench.store.identity import settings_id

    return settings_id(config) or json.dumps({k: v for k, v in config.items() if k != "seed"},
                                             sort_keys=True)


def separate_settings(runs: list[CellRun]) -> list[CellRun]:
    """A report never mixes configs within a variant: when a variant's finished runs hold
    several settings (a store written before cells were checked against their run ids),
    the most common set keeps the variant's name and each other set is shown apart as
    `variant@key=value` (its first differing key)."""
    from sslbench.bench.store.identity import differing_keys

    by_variant: dict[str, dict[str, list[CellRun]]] = {}
    for run in runs:
        if run.record is not None:
            key = _settings_key(run.record["config"])
            by_variant.setdefault(run.variant, {}).setdefault(key, []).append(run)
    renamed: dict[int, str] = {}
    for variant, groups in by_variant.items():
        if len(groups) < 2:
            continue
        ordered = sorted(groups.values(), key=lambda g: (-len(g), min(r.seed for r in g)))
        main = ordered[0][0].record
        assert main is not None
        for group in ordered[1:]:
            other = group[0].record
            assert other is not None
            diff = differing_keys(main["config"], other["config"])
            diff.pop("seed", None)
            label = next((f"{k}={new}" for k, (_, new) in diff.items()), "other")
            for run in group:
                renamed[run.trial_id] = f"{variant}@{label}"
    return [replace(r, variant=renamed[r.trial_id], cell=renamed[r.trial_id] + "/seed"
                    + str(r.seed)) if r.trial_id in renamed else r for r in runs]



def shown_store_url(url: str, out: Path) -> str:
    """The store URL as a report shows it, in markdown: a store file inside the git work
    tree that holds the report (or inside the report's folder, outside any work tree) by its
    path relative to that folder, so a committed report names no machine's paths and the URL
    works from the repository root as `--storage`. Other URLs (a server, a file elsewhere)
    are shown as given."""
    scheme = next((s for s in ("sqlite:///", "journal:///") if url.startswith(s)), None)
    if scheme is None:
        return f"`{url}`"
    folder = Path(out).resolve()
    base = next((p for p in (folder, *folder.parents) if (p / ".git").exists()), folder)
    path = Path(url.removeprefix(scheme)).expanduser().resolve()
    if not path.is_relative_to(base):
        return f"`{url}`"
    where = "the repository root" if (base / ".git").exists() else "the report's folder"
    return f"`{scheme}{path.relative_to(base).as_posix()}` (from {where})"


def _grid(store: RunStore, name: str, profile: str) -> Grid:
    """A registered grid, or one a command defined and stored (a search's final runs)."""
    try:
        return get_grid(name)
    except ConfigError:
        study_id = store.find_study(grid_study_name(name, profile))
        stored = (store.storage.get_study_user_attrs(study_id).get("variants")
                  if study_id is not None else None)
        if not stored:
            raise
        return Grid(name=name, description=f"grid {name} as stored",
                    variants=tuple(Variant(**v) for v in stored), control=stored[0]["name"])


def reference_method(frame: pd.DataFrame, baselines: Sequence[str | None]) -> str | None:
    """The method most of the family is compared with (the aggregates' reference)."""
    counts = Counter(b for b in baselines if b is not None and b in set(frame["variant"]))
    if not counts:
        return None
    variant = counts.most_common(1)[0][0]
    return str(frame.loc[frame["variant"] == variant, "method"].iloc[0])


def declared_family(grid: Grid) -> list[str]:
    """The grid's declared question: every variant it compares with a baseline, inside the
    family, whether or not the store holds runs of it."""
    return [v.name for v in grid.variants
            if grid.baseline_of(v.name) not in (None, v.name) and grid.in_family(v.name)]


def comparisons(grid: Grid, runs: Sequence[CellRun], order: Sequence[str]
                ) -> tuple[dict[str, str | None], list[str]]:
    """Each shown variant's baseline, and the variants whose comparison is the question.

    Cells relabeled when read (the pipeline baseline stored as `supervised`) keep the
    comparisons of the variant they were stored under, against the relabeled baseline
    where the store holds no other: the question they were run for is still answered, under
    their true names."""
    present = set(order)
    origin = {r.variant: r.record["relabeled_from"]["variant"] for r in runs
              if r.record is not None and isinstance(r.record.get("relabeled_from"), dict)}
    defined = {v.name for v in grid.variants}

    def baseline(name: str) -> str | None:
        stored_as = name if name in defined else origin.get(name)
        if stored_as not in defined:
            return None
        chosen = grid.baseline_of(stored_as)
        if chosen is not None and chosen not in present and legacy_variant_name(chosen) in present:
            chosen = legacy_variant_name(chosen)
        return None if chosen == name else chosen

    baselines = {v: baseline(v) for v in order}
    family = [v for v in order if baselines[v] is not None
              and grid.in_family(v if v in defined else origin[v])]
    return baselines, family


# The former private name, still imported by tests/test_figures.py and
# reports/results/seeds-and-hours/table.py.

WORKERS = 2  # the workers a report's next step plans for


def apply_stopping_rule(paired: pd.DataFrame, rule: dict[str, Any]) -> pd.DataFrame:
    """The family's verdicts of a grid run with `ablate --until-decided`: the stopping
    rule's, never the fixed-seed tests'. Seeds added in rounds while looking at the answer
    make a fixed-n test's level invalid (optional stopping); only the rule's alpha-spending
    looks keep it. A decided comparison says the look that decided it; an open one says so,
    with the looks judged and the budget, whatever a fixed test on its seeds would say."""
    stored = {c["variant"]: c for c in rule.get("comparisons", [])}
    looks_done = rule.get("looks_done")
    finished = rule.get("finished", True)  # stores from before looks were saved: at the end
    result = paired.copy()
    for index, row in result.iterrows():
        comparison = stored.get(row["variant"])
        if comparison is None:
            continue
        if comparison["decision"] != "open":
            result.loc[index, "decision"] = comparison["decision"]
            result.loc[index, "verdict"] = (
                f"{comparison['decision']} by the stopping rule at round {comparison['round']}"
                f" ({comparison['seeds']} seeds)")
            continue
        where = ("its budget of " if finished else "after ") + (
            f"{rule['max_seeds']} seeds spent" if finished else
            f"{looks_done} of {rule.get('looks', '?')} looks (budget {rule['max_seeds']} "
            f"seeds)")
        result.loc[index, "decision"] = "inconclusive"
        result.loc[index, "verdict"] = (
            f"open under the stopping rule, {where}: no verdict yet; a fixed test on its "
            f"{int(row['n'])} seeds is not valid after looking at them in rounds")
    return result


def _until_decided(store: RunStore, grid_name: str, profile: str) -> dict | None:
    """The stopping rule and rounds the grid stored when it ran `ablate --until-decided`."""
    study_id = store.find_study(grid_study_name(grid_name, profile))
    stored = store.storage.get_study_user_attrs(study_id).get("until_decided") if study_id \
        is not None else None
    return stored if isinstance(stored, dict) else None


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything a report shows, gathered from the store before anything is written.

    `order`: the variants shown, the grid's then those it no longer defines (`undefined`);
    `baselines`: each one's baseline or None; `family`: the compared variants that are the
    grid's question (Holm-adjusted in `paired`), `checks` the others (`references`);
    `steps` the next step per comparison (None without paired seeds) and `next_step` its
    one-line summary. The frames are those of tables.py."""

    grid_name: str
    profile: str
    grid: Grid
    metric: str
    sesoi: float
    preamble: tuple[str, ...]
    runs: list[CellRun]
    until_decided: dict | None
    frame: pd.DataFrame
    order: list[str]
    undefined: list[str]
    summary: pd.DataFrame
    seeds: pd.DataFrame
    baselines: dict[str, str | None]
    family: list[str]
    unrun: list[str]  # declared family members without paired seeds (Holm counts p = 1)
    checks: list[str]
    paired: pd.DataFrame
    references: pd.DataFrame
    reproduced: pd.DataFrame
    steps: pd.DataFrame | None
    next_step: str | None
    labels: pd.DataFrame
    speed: pd.DataFrame
    failures: pd.DataFrame
    curves: pd.DataFrame
    # Per method across tasks (reports.aggregates, rliable): None without rliable, empty
    # with a single task; the reference method the probability of improvement is over.
    aggregated: pd.DataFrame | None = None
    reference_method: str | None = None

    @property
    def several_budgets(self) -> bool:
        """Runs with more than one number of labels (an accuracy-by-labels section)."""
        return bool(self.frame["num_labels"].nunique() > 1)


def gather_report(store: RunStore, grid_name: str, profile: str | None,
                  metric: str = tables.DEFAULT_METRIC, sesoi: float = DEFAULT_SESOI,
                  preamble: Sequence[str] = ()) -> ReportData:
    """Read the grid's runs and compute every table of its report; write nothing.

    UserError for a bad `sesoi`, an unknown grid or profile, or no finished runs."""
    if not (math.isfinite(sesoi) and sesoi > 0):
        raise UserError(f"--sesoi must be a positive number of accuracy points, got {sesoi}")
    if not any(n.startswith(grid_study_prefix(grid_name)) for n in store.study_names()):
        get_grid(grid_name)  # an unknown grid is named as such before anything else
    profile = resolve_profile(store, grid_name, profile)
    grid = _grid(store, grid_name, profile)
    runs = load_runs(store, grid_name, profile)
    frame = tables.runs_frame(runs, metric)
    if frame.empty:
        raise UserError(f"no finished runs of grid {grid_name!r} ({profile}) in {store.url} yet")
    order = [v.name for v in grid.variants if v.name in set(frame["variant"])]
    # Variants the store holds that the grid no longer defines (cells of an older meaning,
    # relabeled when read) are shown as references, never dropped.
    undefined = sorted(set(frame["variant"]) - set(order))
    order += undefined
    summary = tables.variant_summary(frame, order)
    seeds = tables.per_seed(frame, order)
    baselines, family = comparisons(grid, runs, order)
    checks = [v for v in order if baselines[v] is not None and v not in family]
    # Declared members of the family with no paired seeds yet stay in Holm's family (p = 1).
    declared = declared_family(grid)
    paired = tables.paired_against_baselines(frame, order, baselines, family, sesoi,
                                             declared=declared)
    unrun = [v for v in declared if v not in set(paired["variant"])]
    rule = _until_decided(store, grid_name, profile)
    if rule is not None:
        paired = apply_stopping_rule(paired, rule)
    references = tables.paired_against_baselines(frame, order, baselines, checks, sesoi,
                                                 adjust=False)
    reproduced = tables.reproduction(frame, grid.references, profile, sesoi)
    reference = reference_method(frame, [baselines[v] for v in family])
    steps = (planning.next_steps(paired, frame, sesoi, workers=WORKERS)
             if not paired.empty else None)
    return ReportData(
        grid_name=grid_name, profile=profile, grid=grid, metric=metric, sesoi=sesoi,
        preamble=tuple(preamble), runs=runs,
        until_decided=rule, frame=frame, order=order,
        undefined=undefined, summary=summary, seeds=seeds, baselines=baselines, family=family,
        unrun=unrun,
        checks=checks, paired=paired, references=references, reproduced=reproduced,
        steps=steps, next_step=(planning.next_step_line(steps, frame, sesoi, workers=WORKERS)
                                if steps is not None else None),
        labels=tables.by_labels(frame), speed=tables.throughput(frame, order),
        failures=tables.failures_frame(runs), curves=tables.curves_frame(runs),
        aggregated=aggregates(frame, reference), reference_method=reference)


def write_artifacts(data: ReportData, out: Path) -> list[Path]:
    """The CSV tables and the PNG figures into `out` (created); return the figures in the
    order report.md shows them."""
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("runs", data.frame), ("summary", data.summary),
                        ("per_seed", data.seeds), ("paired", data.paired),
                        ("reference_checks", data.references),
                        ("reproduction", data.reproduced), ("throughput", data.speed),
                        ("failures", data.failures), ("by_labels", data.labels)):
        table.to_csv(out / f"{name}.csv", index=name == "per_seed")
    if data.aggregated is not None and not data.aggregated.empty:
        data.aggregated.to_csv(out / "aggregates.csv", index=False)
    figs = [figures.accuracy_strip(data.frame, data.order, out / "accuracy.png"),
            figures.learning_curves(data.curves, data.order, out / "curves.png"),
            figures.throughput_bars(data.speed, out / "throughput.png")]
    compared = pd.concat([data.paired, data.references], ignore_index=True)
    if not compared.empty:
        figs.insert(1, figures.paired_forest(compared, data.seeds, out / FOREST_FILE,
                                             data.sesoi))
    if data.several_budgets:
        figs.insert(0, figures.accuracy_by_labels(data.labels, out / "accuracy_by_labels.png"))
    return figs


@dataclass(frozen=True)
class ReportOutcome:
    """A written report: report.md's path and its "Next step:" line (None when no
    comparison of the question has paired seeds yet, and report.md has no such section)."""

    path: Path
    next_step: str | None


# Every file a report writes into its folder; a rebuild removes the ones it no longer
# writes (a figure of an earlier build) and leaves anything else there (a store, a README,
# a search's own figures) alone.
REPORT_FILES = frozenset({
    "report.md", "runs.csv", "summary.csv", "per_seed.csv", "paired.csv",
    "reference_checks.csv", "reproduction.csv", "throughput.csv", "failures.csv",
    "by_labels.csv", "aggregates.csv", "accuracy.png", "curves.png", "throughput.png", "paired.png",
    "accuracy_by_labels.png"})


def build_report(store: RunStore, grid_name: str, profile: str | None, out: Path,
                 metric: str = tables.DEFAULT_METRIC, sesoi: float = DEFAULT_SESOI,
                 preamble: Sequence[str] = ()) -> ReportOutcome:
    """Write report.md, CSV tables and PNG figures into `out`, whole or not at all.

    `metric` is the per-run headline (tables.METRICS); `sesoi` the smallest effect of
    interest in points, the equivalence margin of the verdicts; `preamble` markdown lines
    before the protocol (a search's summary). Everything is written into a temporary folder
    beside `out` first, so an interrupt or an error leaves the old report as it was; then
    each file replaces its old copy (report.md last) and the report files the new build
    does not write are removed."""
    data = gather_report(store, grid_name, profile, metric, sesoi, preamble)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-building-", dir=out.parent) as tmp:
        staging = Path(tmp)
        figs = write_artifacts(data, staging)
        (staging / "report.md").write_text(
            render_report(data, figs, shown_store_url(store.url, out)))
        written = sorted(f.name for f in staging.iterdir())
        for name in sorted(written, key=lambda n: n == "report.md"):  # report.md last
            os.replace(staging / name, out / name)
    for stale in REPORT_FILES - set(written):
        (out / stale).unlink(missing_ok=True)
    return ReportOutcome(path=out / "report.md", next_step=data.next_step)


def write_report(store: RunStore, grid_name: str, profile: str | None, out: Path,
                 metric: str = tables.DEFAULT_METRIC, sesoi: float = DEFAULT_SESOI,
                 preamble: Sequence[str] = ()) -> Path:
    """Write report.md, CSV tables and PNG figures into `out`; return report.md's path
    (build_report, which also gives the next-step line)."""
    return build_report(store, grid_name, profile, out, metric, sesoi, preamble).path
