"""The report: markdown, CSV tables and seaborn figures of one grid, from the store alone."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from sslbench.ablations import get_grid
from sslbench.ablations.grid import Grid, Variant
from sslbench.bench.errors import ConfigError, UserError
from sslbench.bench.store.names import grid_study_name, grid_study_prefix, stored_profile_key
from sslbench.bench.store.queue import DEFAULT_GRACE_S, owner_gone
from sslbench.bench.store.runstore import CellRun, RunStore, latest_by_cell, legacy_variant_name
from sslbench.reports import figures, planning, tables
from sslbench.reports.stats import ALPHA, DEFAULT_SESOI


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) < 10 ** -digits and value != 0:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, formats: dict[str, int] | None = None,
                   index: bool = False) -> str:
    """A GitHub markdown table; `formats` gives decimals per float column (default 2)."""
    formats = formats or {}
    data = frame.reset_index() if index else frame
    header = "| " + " | ".join(str(c) for c in data.columns) + " |"
    rule = "|" + "|".join("---" for _ in data.columns) + "|"
    lines = [header, rule]
    # Column by column, so integer columns stay integers (iterrows would upcast them).
    columns = [data[c].tolist() for c in data.columns]
    for row in zip(*columns, strict=True):
        cells = [_fmt(v, formats.get(str(c), 2)) for c, v in zip(data.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def _running(runs: Sequence[CellRun]) -> str:
    """Running cells by name, told apart from stale ones whose owner is gone (a dead
    process on this host, or no heartbeat for the default grace period)."""
    live: list[str] = []
    stale: list[str] = []
    for run in runs:
        if run.state == "RUNNING":
            gone = owner_gone(run.owner, run.heartbeat, DEFAULT_GRACE_S)
            (stale if gone else live).append(run.cell)
    text = f"{len(live)} running" + (f": {', '.join(sorted(live))}" if live else "")
    if stale:
        text += (f"; {len(stale)} stale, their runner gone, resumed by the next `ablate`: "
                 f"{', '.join(sorted(stale))}")
    return text


def _protocol(runs: Sequence[CellRun], grid: str, profile: str, store_shown: str
              ) -> list[str]:
    records = [r.record for r in runs if r.record is not None]
    env = [rec["environment"] for rec in records]
    configs = [rec["config"] for rec in records]
    dirty = " (uncommitted changes)"
    commits = sorted({e["git"]["commit"][:12] + (dirty if e["git"]["dirty"] else "") for e in env})
    started = min((rec["started_at"] for rec in records), default="–")
    finished = max((rec["finished_at"] for rec in records), default="–")
    compute_h = sum(rec["throughput"]["total_seconds"] for rec in records) / 3600
    epochs = sorted({c["train"]["epochs"] for c in configs})

    def values(key: str) -> str:
        found = sorted({str(c["data"][key] or "all") for c in configs}, key=lambda v: (len(v), v))
        return ", ".join(found) or "–"

    return [
        f"- grid: `{grid}`, profile: `{profile}`, epochs: {', '.join(map(str, epochs))}",
        f"- data: {values('dataset')}; labels: {values('num_labels')}; train images: "
        f"{values('train_size')}; test images: {values('test_size')}",
        f"- seeds: {', '.join(map(str, sorted({r.seed for r in runs})))} "
        f"({len(records)} finished runs, "
        f"{sum(r.state == 'FAIL' and r.failure_kind != 'interrupted' for r in runs)} failed, "
        f"{sum(r.failure_kind == 'interrupted' for r in runs if r.state == 'FAIL')} "
        f"interrupted and resumable, {_running(runs)})",
        f"- device: {'; '.join(sorted({e['device'] for e in env}))}",
        f"- torch {', '.join(sorted({e['torch'] for e in env}))}, torchvision "
        f"{', '.join(sorted({e['torchvision'] for e in env}))}, python "
        f"{', '.join(sorted({e['python'] for e in env}))}",
        f"- git commit: {', '.join(commits)}",
        f"- runs from {started} to {finished}; total training and evaluation time "
        f"{compute_h:.2f} h (summed over runs)",
        f"- store: {store_shown}",
    ]


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


PAIRED_NOTE = (
    "Pairs are the seeds where both runs finished and neither collapsed (`dropped_seeds`: "
    "the others). `mean_diff` in points (variant - baseline) with its 95% paired t interval; "
    "`t_p` paired t-test, `wilcoxon_p` Wilcoxon signed-rank (exact; with n <= 5 it cannot "
    "go below 0.0625); `holm_p` the t-test p Holm-adjusted; `tost_holm_p` the Holm-adjusted "
    "two one-sided tests of equivalence within ±{sesoi:g} points; `wins`: seeds on which the "
    "variant beat its baseline; `p_improve`: the probability that it does on a seed, with a "
    "seeded bootstrap interval; `detectable`: the effect these seeds detect with 80% power "
    "at alpha; `collapses` (variant vs baseline) compared by an exact McNemar test "
    "(`collapse_p`). Verdict: better or worse when `holm_p` < alpha, equivalent when "
    "`tost_holm_p` < alpha, else inconclusive with what could have been detected.")


def _paired_table(paired: pd.DataFrame) -> str:
    shown = paired.drop(columns=["decision", "wilcoxon_p", "d_z", "tost_p", "p_improve_low",
                                 "p_improve_high", "sd_diff"])
    return markdown_table(shown, {"n": 0, "t_p": 4, "holm_p": 4, "tost_holm_p": 4,
                                  "collapse_p": 3, "detectable": 1})


def _reproduction_section(reproduced: pd.DataFrame) -> list[str]:
    if reproduced.empty:
        return []
    return [
        "## Reproduction",
        markdown_table(reproduced.drop(columns=["p"]), {"n": 0, "published_n": 0}),
        "",
        "Ours (runs that did not collapse) beside the published values, for each per-run "
        "figure; the published figure is marked. Verdict: reproduced when the interval lies "
        "within ±δ, inconclusive when it holds 0 but is wider, else above or below. "
        "`diff` = ours - published in points, with "
        "its 95% Welch interval against the published seeds (a one-sample t interval against "
        "a single published figure); `published_sd_ddof0` is the population sd, as published.",
        "",
    ]


def _stopping_section(store: RunStore, grid_name: str, profile: str) -> list[str]:
    """The rule and each comparison's stopping round, when the grid ran --until-decided."""
    study_id = store.find_study(grid_study_name(grid_name, profile))
    stored = store.storage.get_study_user_attrs(study_id).get("until_decided") if study_id \
        is not None else None
    if not isinstance(stored, dict):
        return []
    lines = ["## Stopping rule (`ablate --until-decided`)", "",
             f"Seeds were added {stored['round']} per round, up to {stored['max_seeds']}, "
             f"only to comparisons still open. Rule: {stored['rule']} (family alpha "
             f"{stored['alpha']}, δ = {stored['sesoi']:g} points; see reports/sequential.py).",
             "", "| comparison | decision | stopped at round | seeds |", "|---|---|---|---|"]
    for c in stored["comparisons"]:
        where = (str(c["round"]), str(c["seeds"])) if c["round"] else ("budget spent",
                                                                      str(stored["max_seeds"]))
        lines.append(f"| {c['variant']} vs {c['baseline']} | {c['decision']} | {where[0]} "
                     f"| {where[1]} |")
    return [*lines, ""]


def _comparisons(grid: Grid, runs: Sequence[CellRun], order: Sequence[str]
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


def _next_step_section(steps: pd.DataFrame | None, frame: pd.DataFrame,
                       sesoi: float) -> list[str]:
    if steps is None:
        return []
    return [
        "## Next step",
        planning.next_step_line(steps, frame, sesoi, workers=2),
        "",
        markdown_table(steps.drop(columns=["decision"]),
                       {"n": 0, "seeds_needed": 0, "seeds_to_add": 0, "hours_to_add": 1}),
        "",
        "Seeds needed for a two-sided paired t-test at alpha / m (the family's Bonferroni "
        "level, Holm's first step) to detect δ with 80% power, from the sd of the paired "
        "differences; the range uses the sd's 95% chi-square interval. Hours: the runs to add "
        "(variant and baseline) at their median measured time, on 2 workers.",
        "",
    ]


def write_report(store: RunStore, grid_name: str, profile: str | None, out: Path,
                 metric: str = tables.DEFAULT_METRIC, sesoi: float = DEFAULT_SESOI,
                 preamble: Sequence[str] = ()) -> Path:
    """Write report.md, CSV tables and PNG figures into `out`; return report.md's path.

    `metric` is the per-run headline (tables.METRICS); `sesoi` the smallest effect of
    interest in points, the equivalence margin of the verdicts; `preamble` markdown lines
    before the protocol (a search's summary)."""
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
    baselines, family = _comparisons(grid, runs, order)
    checks = [v for v in order if baselines[v] is not None and v not in family]
    paired = tables.paired_against_baselines(frame, order, baselines, family, sesoi)
    references = tables.paired_against_baselines(frame, order, baselines, checks, sesoi,
                                                 adjust=False)
    reproduced = tables.reproduction(frame, grid.references, profile, sesoi)
    steps = planning.next_steps(paired, frame, sesoi, workers=2) if not paired.empty else None
    labels = tables.by_labels(frame)
    several_budgets = frame["num_labels"].nunique() > 1
    speed = tables.throughput(frame, order)
    failures = tables.failures_frame(runs)
    curves = tables.curves_frame(runs)

    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("runs", frame), ("summary", summary), ("per_seed", seeds),
                        ("paired", paired), ("reference_checks", references),
                        ("reproduction", reproduced), ("throughput", speed),
                        ("failures", failures), ("by_labels", labels)):
        table.to_csv(out / f"{name}.csv", index=name == "per_seed")
    figs = [figures.accuracy_strip(frame, order, out / "accuracy.png"),
            figures.learning_curves(curves, order, out / "curves.png"),
            figures.throughput_bars(speed, out / "throughput.png")]
    compared = pd.concat([paired, references], ignore_index=True)
    if not compared.empty:
        figs.insert(1, figures.paired_forest(compared, seeds, out / "paired.png"))
    if several_budgets:
        figs.insert(0, figures.accuracy_by_labels(frame, out / "accuracy_by_labels.png"))

    stored = set(frame["variant"])
    variants = "\n".join(
        f"- `{v.name}` ({v.method}): {v.description}"
        + ("" if v.name in stored else " (no finished runs in this store)")
        + (f"; compared with `{b}`" if (b := grid.baseline_of(v.name)) else "; reference")
        for v in grid.variants)
    relabeled = sorted({r.variant for r in runs
                        if r.record is not None and r.record.get("relabeled_from")})
    if relabeled or undefined:
        variants += "\n" + "\n".join(
            [f"- `{name}`: stored cells of the SSL pipeline baseline (`supervised_pipeline`), "
             f"written when that baseline was called `supervised`; relabeled when read, "
             f"never taken for the classic baseline" for name in relabeled]
            + [f"- `{name}`: held by the store, not defined by the grid now; shown as a "
               f"reference" for name in undefined if name not in relabeled])
    labels_section = [
        "## Accuracy against the number of labels",
        markdown_table(labels, {"num_labels": 0, "n": 0, "collapses": 0}),
        "",
        "Mean test accuracy (%) per method and label count over the runs that did not "
        "collapse, with its 95% t interval; `n` counts every run, `collapses` the failed ones.",
        "",
    ] if several_budgets else []
    lines = [
        f"# Grid `{grid_name}`, profile `{profile}`",
        "",
        grid.description + ".",
        "",
        *preamble,
        *_stopping_section(store, grid_name, profile),
        "## Protocol",
        *_protocol(runs, grid_name, profile, shown_store_url(store.url, out)),
        "",
        f"- headline per run: `{metric}`, {tables.METRICS[metric]}; smallest effect of "
        f"interest δ = {sesoi:g} points (`--sesoi`); alpha {ALPHA}, power 80%",
        "",
        "Accuracy is % of the test images. A run collapses when its last-epoch accuracy is "
        "under twice chance: it is counted as a failure, its rate given with an exact "
        "interval, and it enters no mean, interval or paired test below.",
        "",
        "## Variants",
        variants,
        "",
        "## Accuracy per variant",
        markdown_table(summary, {"n": 0, "collapses": 0, "n_ok": 0, "collapse_rate": 1,
                                 "rate_ci_low": 1, "rate_ci_high": 1}),
        "",
        "`collapses` of `n` runs, `collapse_rate` (%) with its 95% Clopper-Pearson interval "
        "(`rate_ci_low`, `rate_ci_high`); `mean_all` over every run, collapsed ones included; "
        "then over the `n_ok` runs that did not collapse: `mean` with its 95% t interval "
        "(`t_ci_low`, `t_ci_high`; none below 2 runs), `std`, `median`, range, and the means "
        "of the last-epoch figure and of the blog's (lowest training loss).",
        "",
        "## Accuracy per seed",
        markdown_table(seeds, index=True),
        "",
        *labels_section,
        *_reproduction_section(reproduced),
        "## The question: each variant against its baseline",
        _paired_table(paired) if not paired.empty
        else "No variant of the family shares seeds with its baseline yet.",
        "",
        f"Holm adjusts over these {len(paired)} comparisons, the grid's declared question. "
        + PAIRED_NOTE.format(sesoi=sesoi),
        "",
        *_next_step_section(steps, frame, sesoi),
        "## Reference checks",
        _paired_table(references) if not references.empty else "None.",
        "",
        "Each reference check (a baseline against the control, say) is tested alone at "
        "alpha, outside the family. " + PAIRED_NOTE.format(sesoi=sesoi),
        "",
        "## Throughput per variant",
        markdown_table(speed, {"runs": 0, "stack": 0, "train_images_per_s": 0,
                               "epoch_seconds": 1, "peak_memory_mib": 0}),
        "",
        "Medians over runs of each run's median train images/s (epochs after the first), "
        "epoch seconds (training only) and peak memory (CUDA allocator peak, or process "
        "peak RSS on CPU). `stack`: seeds trained together as one stacked model; its images/s "
        "count the images of all of them. `precision`: the training passes' arithmetic.",
        "",
        "## Failed and interrupted runs",
        markdown_table(failures) if not failures.empty else "None.",
        "",
        "An interrupted cell was stopped (a signal, or its runner ended) and resumes from its "
        "checkpoint when the same `sslbench ablate` command runs again; a diverged cell hit a "
        "NaN or infinite loss; an error is a crash, with its exception.",
        "",
        "## Figures",
        *[f"![{p.stem}]({p.name})" for p in figs],
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
