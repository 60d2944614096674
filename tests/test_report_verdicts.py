"""Reports that say how sure they are: collapses counted apart, the declared family, the
published references, and byte-identical rebuilds of a committed store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from sslbench.ablations import get_grid
from sslbench.bench.store.runstore import RunStore
from sslbench.reports.build import write_report
from sslbench.reports.stats import holm
from sslbench.reports.tables import paired_against_baselines, variant_summary

ROOT = Path(__file__).resolve().parent.parent
QUICK_STORE = ROOT / "tests" / "fixtures" / "mnist100-quick-pilot.db"


def frame(rows: list[tuple[str, int, float, bool]]) -> pd.DataFrame:
    data = pd.DataFrame(rows, columns=["variant", "seed", "accuracy", "collapsed"])
    data["final"] = data["accuracy"]
    data["blog_accuracy"] = data["accuracy"]
    data["tail_median"] = data["accuracy"]
    return data


def test_a_collapsed_run_never_enters_a_conditional_mean_or_a_pair():
    data = frame([("control", 0, 90.0, False), ("control", 1, 92.0, False),
                  ("control", 2, 94.0, False),
                  ("v", 0, 10.0, True), ("v", 1, 93.0, False), ("v", 2, 96.0, False)])
    summary = variant_summary(data, ["control", "v"]).set_index("variant")
    assert summary.loc["v", "mean"] == pytest.approx(94.5)  # 93 and 96 only
    assert summary.loc["v", "mean_all"] == pytest.approx((10 + 93 + 96) / 3)
    assert (summary.loc["v", "collapses"], summary.loc["v", "n_ok"]) == (1, 2)
    assert summary.loc["v", "collapse_rate"] == pytest.approx(100 / 3)
    paired = paired_against_baselines(data, ["control", "v"], {"v": "control"})
    row = paired.iloc[0]
    assert (row["n"], row["dropped_seeds"]) == (2, "0")
    assert row["mean_diff"] == pytest.approx(((93 - 92) + (96 - 94)) / 2)
    assert row["collapses"] == "1 vs 0"


def test_holm_runs_over_the_declared_family_only():
    grid = get_grid("mnist100")
    assert grid.in_family("pixelwise") and not grid.in_family("supervised")
    assert not grid.in_family("supervised_pipeline") and not grid.in_family("control")
    rows = []
    for seed, shift in enumerate((0.0, 1.5, 3.5, -0.5)):
        rows += [("control", seed, 90.0 + shift, False),
                 ("pixelwise", seed, 88.0 + 1.1 * shift, False),
                 ("ramp_fast", seed, 91.0 + 0.8 * shift, False),
                 ("supervised", seed, 80.0 + 0.5 * shift, False)]
    data = frame(rows)
    order = ["control", "pixelwise", "ramp_fast", "supervised"]
    baselines = {v: grid.baseline_of(v) for v in order}
    family = [v for v in order if grid.in_family(v)]
    paired = paired_against_baselines(data, order, baselines, family)
    assert list(paired["variant"]) == ["pixelwise", "ramp_fast"]
    assert paired["holm_p"].tolist() == pytest.approx(holm(paired["t_p"].tolist()))
    checks = paired_against_baselines(data, order, baselines, ["supervised"], adjust=False)
    assert checks["holm_p"].tolist() == checks["t_p"].tolist()  # alone at alpha


def test_declared_family_members_without_runs_stay_in_holms_family():
    """mnist100 declares 7 comparisons; with runs of 2 of them, Holm still adjusts over 7:
    the 5 without paired seeds count with p = 1, by hand: the smaller p times 7, the larger
    max(that, its p times 6)."""
    from sslbench.reports.build import declared_family

    grid = get_grid("mnist100")
    declared = declared_family(grid)
    assert sorted(declared) == sorted(["pixelwise", "batch_scaling", "ramp_none", "ramp_fast",
                                       "ramp_slow", "prob_targets", "fixed_batches"])
    rows = []
    noise = (0.5, -1.2, 0.9, -0.3, 0.2)  # ramp_fast minus control: no clear sign
    for seed, shift in enumerate((0.0, 1.5, 3.5, -0.5, 0.7)):
        rows += [("control", seed, 90.0 + shift, False),
                 ("pixelwise", seed, 87.0 + 1.1 * shift, False),
                 ("ramp_fast", seed, 90.0 + shift + noise[seed], False)]
    data = frame(rows)
    order = ["control", "pixelwise", "ramp_fast"]
    baselines = {v: grid.baseline_of(v) for v in order}
    paired = paired_against_baselines(data, order, baselines, ["pixelwise", "ramp_fast"],
                                      declared=declared).set_index("variant")
    p = paired["t_p"]
    low, high = sorted(p.index, key=lambda v: p[v])
    assert paired.loc[low, "holm_p"] == pytest.approx(min(1.0, 7 * p[low]))
    assert paired.loc[high, "holm_p"] == pytest.approx(min(1.0, max(7 * p[low], 6 * p[high])))
    # the inconclusive verdict's "at alpha/m" names the declared family's size
    assert paired.loc["ramp_fast", "decision"] == "inconclusive"
    assert "at alpha/7)" in paired.loc["ramp_fast", "verdict"]
    alone = paired_against_baselines(data, order, baselines, ["pixelwise", "ramp_fast"])
    assert alone.set_index("variant").loc[low, "holm_p"] == pytest.approx(2 * p[low])


@pytest.fixture
def quick_store(tmp_path: Path) -> str:
    copy = tmp_path / "store.db"
    shutil.copy(QUICK_STORE, copy)  # a report only reads, but never risk the committed one
    return f"sqlite:///{copy}"


def test_the_committed_quick_store_reports_verdicts_collapses_and_references(quick_store,
                                                                            tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        write_report(RunStore(quick_store, create=False), "mnist100", "quick", out)
    text = (first / "report.md").read_text()
    assert "headline per run: `tail_median`" in text
    assert "## Reproduction" in text and "97.78" in text and "the blog (2018), 5 seeds" in text
    assert "not the published protocol (quick, not paper)" in text
    assert "inconclusive (n=3): could have detected" in text
    assert "no detectable difference" not in text
    # the legacy `supervised` cells are the pipeline baseline, collapsed on 2 of 3 seeds
    assert "| supervised_pipeline | 3 | 2 | 66.7 [9.4, 99.2] |" in text
    reproduction = pd.read_csv(first / "reproduction.csv")
    control = reproduction[(reproduction["variant"] == "control")
                           & (reproduction["figure"] == "lowest_train_loss")].iloc[0]
    assert control["published_mean"] == pytest.approx(97.778)
    assert control["published_sd_ddof0"] == pytest.approx(0.6273, abs=1e-4)  # the blog: 0.63
    for name in ["report.md", *sorted(p.name for p in first.glob("*.csv"))]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.parametrize("metric", ["final", "lowest_train_loss"])
def test_the_headline_metric_is_a_choice(quick_store, tmp_path, metric):
    write_report(RunStore(quick_store, create=False), "mnist100", "quick", tmp_path, metric=metric)
    runs = pd.read_csv(tmp_path / "runs.csv")
    column = "final" if metric == "final" else "blog_accuracy"
    assert runs["accuracy"].tolist() == runs[column].tolist()
    assert f"headline per run: `{metric}`" in (tmp_path / "report.md").read_text()


def test_a_variant_holding_two_configs_is_shown_apart(tmp_path, data_root):
    """A store written before cells were checked against their run ids may hold one variant
    under two settings; the report shows them as two variants, never pooled."""
    import datetime as dt

    import torch

    from sslbench.ablations import get_grid
    from sslbench.bench.core.overrides import build_config
    from sslbench.bench.core.record import build_record
    from sslbench.bench.core.train import single_run
    from sslbench.bench.runs.runner import run_grid
    from sslbench.bench.runs.settings import GridSettings
    from sslbench.bench.store.names import grid_study_name
    from sslbench.bench.store.queue import claim_cell

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = RunStore(url)
    run_grid(get_grid("mnist100"), GridSettings("smoke", (0, 1), variants=("control",),
                                                overrides={"train.epochs": "1"},
                                                data_root=data_root),
             store=store, log=lambda _: None)
    other = build_config("temporal_ensembling", 2, "smoke", {"train.epochs": "2"})
    result = single_run(other, device=torch.device("cpu"), data_root=data_root)
    study = store.find_study(grid_study_name("mnist100", "smoke"))
    trial = claim_cell(store, study, "control/seed2", "control", 2, other.to_dict())
    store.finish_cell(trial, build_record(other, result, torch.device("cpu"),
                                          dt.datetime.now(dt.UTC)))
    write_report(store, "mnist100", "smoke", tmp_path / "report")
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("variant")
    assert summary.loc["control", "n"] == 2
    assert summary.loc["control@train.epochs=2", "n"] == 1


def test_cells_stored_before_a_later_field_are_the_same_settings():
    """A cell stored before train.batches existed and a new one with it at its default have
    one run id: the report keeps them in one variant. A real difference (train.lr) is
    still shown apart."""
    from sslbench.bench.core.overrides import build_config
    from sslbench.bench.store.runstore import CellRun
    from sslbench.reports.build import separate_settings

    def cell(trial_id: int, seed: int, config: dict) -> CellRun:
        return CellRun(trial_id=trial_id, number=trial_id, cell=f"control/seed{seed}",
                       variant="control", seed=seed, state="COMPLETE", failure=None,
                       failure_kind=None, record={"config": config}, config=config,
                       owner=None, heartbeat=None)

    new = [build_config("temporal_ensembling", s, "quick").to_dict() for s in range(3)]
    old = build_config("temporal_ensembling", 3, "quick").to_dict()
    for later in ("batches", "labeled_per_batch", "steps_per_epoch"):
        del old["train"][later]  # as the first stores wrote it
    other = build_config("temporal_ensembling", 4, "quick", {"train.lr": "0.001"}).to_dict()
    runs = [cell(i, s, c) for i, (s, c) in enumerate([(0, new[0]), (1, new[1]), (2, new[2]),
                                                       (3, old), (4, other)])]
    variants = {r.seed: r.variant for r in separate_settings(runs)}
    assert variants == {0: "control", 1: "control", 2: "control", 3: "control",
                        4: "control@train.lr=0.001"}


def test_accuracy_by_labels_takes_the_seed_as_its_unit():
    """Two configs of one method share seeds 0-2: their runs are averaged per seed first,
    and the interval is the t interval over the 3 seed means, not over 6 pooled runs; a
    collapsed run is left out of its seed's mean and counted."""
    from sslbench.reports.stats import t_interval
    from sslbench.reports.tables import by_labels

    data = frame([("a", 0, 90.0, False), ("a", 1, 92.0, False), ("a", 2, 10.0, True),
                  ("b", 0, 94.0, False), ("b", 1, 93.0, False), ("b", 2, 95.0, False)])
    data["method"], data["num_labels"] = "temporal_ensembling", 100
    (row,) = by_labels(data).itertuples()
    seed_means = [(90 + 94) / 2, (92 + 93) / 2, 95.0]
    assert (row.configs, row.seeds, row.n, row.collapses) == (2, 3, 6, 1)
    assert row.mean == pytest.approx(sum(seed_means) / 3)
    assert (row.ci_low, row.ci_high) == pytest.approx(t_interval(seed_means))
    pooled = t_interval([90.0, 92.0, 94.0, 93.0, 95.0])
    assert row.ci_high - row.ci_low > pooled[1] - pooled[0]  # pooling claimed more certainty
    # the figure is drawn from the same table: its point and bar are the table's
    from sslbench.reports.figures import draw_accuracy_by_labels

    axes = draw_accuracy_by_labels(by_labels(data)).axes[0]
    (line,) = [ln for ln in axes.get_lines() if len(ln.get_xdata()) == 1 and ln.get_marker() == "o"]
    assert (line.get_xdata()[0], line.get_ydata()[0]) == (100, pytest.approx(row.mean))
    (bars,) = [c for c in axes.collections if len(c.get_segments())]
    (segment,) = bars.get_segments()
    assert (segment[0][1], segment[1][1]) == pytest.approx((row.ci_low, row.ci_high))


def test_a_comparison_whose_pairs_mix_code_versions_is_flagged(tmp_path):
    """collapse-quick: its supervised cells were resumed across commits, some dirty, and
    its control ran at another; the report names the versions under the reference checks."""
    store = tmp_path / "store.db"
    shutil.copy(ROOT / "reports" / "results" / "collapse-quick" / "store.db", store)
    write_report(RunStore(f"sqlite:///{store}", read_only=True), "mnist100", "quick", tmp_path)
    text = (tmp_path / "report.md").read_text()
    flagged = text.split("Pairs trained by more than one code version")[1].split("\n")[0]
    assert "supervised vs control: " in flagged and "(dirty)" in flagged
    checks = pd.read_csv(tmp_path / "reference_checks.csv").set_index("variant")
    assert len(checks.loc["supervised", "code_versions"].split(" + ")) >= 2


def test_code_versions_come_from_every_segment():
    """A record without segments (the pilot's) names its finishing commit; with segments,
    each distinct commit once, in order, marked when dirty."""
    from sslbench.bench.core.schema import Record

    store = RunStore(f"sqlite:///{QUICK_STORE}", read_only=True)
    (name,) = [n for n in store.study_names() if n.startswith("grid:")]
    stored = next(r for r in store.cell_runs(store.find_study(name)) if r.record).record
    git = stored["environment"]["git"]
    assert Record.from_dict(stored).code_versions == [
        git["commit"][:12] + (" (dirty)" if git["dirty"] else "")]
    segments = [{"commit": "a" * 40, "dirty": False, "from_epoch": 0, "to_epoch": 3},
                {"commit": "b" * 40, "dirty": True, "from_epoch": 3, "to_epoch": 5},
                {"commit": "a" * 40, "dirty": False, "from_epoch": 5, "to_epoch": 9}]
    resumed = Record.from_dict({**stored, "segments": segments})
    assert resumed.code_versions == ["a" * 12, "b" * 12 + " (dirty)"]


def test_adding_cells_at_another_commit_is_warned_and_pinned_refused(tmp_path):
    """The pilot's cells ran at 665ff18; this checkout is another commit: a warning that
    names both, and with --pin-code a one-line refusal."""
    from sslbench.bench.errors import UserError
    from sslbench.bench.runs.runner import check_code_version

    copy = tmp_path / "store.db"
    shutil.copy(QUICK_STORE, copy)
    store = RunStore(f"sqlite:///{copy}")
    study = store.find_study("grid:mnist100:quick")
    said: list[str] = []
    check_code_version(store, study, "mnist100/quick", False, said.append)
    (line,) = said
    assert line.startswith("warning: mnist100/quick: its finished cells ran at 665ff182e81f")
    assert "mix code versions" in line
    with pytest.raises(UserError, match="--pin-code"):
        check_code_version(store, study, "mnist100/quick", True, said.append)
