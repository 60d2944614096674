"""The grid end to end on a real MNIST slice: stored, never rerun, resumable, reported."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from sslbench.ablations import get_grid
from sslbench.ablations.grid import GRIDS, Grid, Variant
from sslbench.bench.runs.runner import run_grid
from sslbench.bench.runs.settings import GridSettings
from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.runstore import RunStore, latest_by_cell
from sslbench.methods import Method, StepLosses, registry
from sslbench.reports.build import write_report

SEEDS = [0, 1]
GRID = get_grid("mnist100")


def start_ablate(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sslbench.bench.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, what: str, timeout_s: float = 300, poll_s: float = 0.05) -> None:
    """Poll until `condition()` holds; fail (rather than go on) if it never does."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll_s)


def smoke_runs(store: RunStore) -> list:
    study = store.find_study(grid_study_name("mnist100", "smoke"))
    return store.cell_runs(study) if study is not None else []


def sslbench(*args: str, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def smoke_grid(tmp_path_factory, data_root):
    """The whole mnist100 grid, smoke profile, 2 seeds, 2 worker processes, via the CLI."""
    folder = tmp_path_factory.mktemp("grid")
    url = f"sqlite:///{folder / 'runs.db'}"
    first = sslbench("ablate", "--grid", "mnist100", "--profile", "smoke", "--seeds", "2",
                     "--workers", "2", "--storage", url, "--root", str(data_root))
    assert first.returncode == 0, first.stderr[-2000:]
    return folder, url, first


def test_whole_grid_runs_every_cell_once(smoke_grid):
    _, url, first = smoke_grid
    store = RunStore(url)
    runs = store.cell_runs(store.find_study(grid_study_name("mnist100", "smoke")))
    assert len(runs) == len(GRID.variants) * len(SEEDS)
    assert all(r.state == "COMPLETE" for r in runs)
    assert len({r.cell for r in runs}) == len(runs)
    assert "20 run now" in first.stdout
    # The start line says what the grid will cost before it spends it (bench.cost).
    start = next(line for line in first.stderr.splitlines() if "cells to run" in line)
    assert "mnist100/smoke: 20 of 20 cells to run" in start
    assert "expected about" in start and "20 cells on 2 worker(s)" in start
    assert "--profile smoke --seeds 2" not in start  # already the short try
    record = runs[0].record
    for key in ("config", "labeled_indices", "curves", "metrics", "throughput", "environment"):
        assert key in record
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.dirname(__file__))).stdout
    assert record["environment"]["git"]["commit"] == head.strip()  # this checkout's commit


def test_same_seed_same_labeled_subset_in_every_variant(smoke_grid):
    _, url, _ = smoke_grid
    store = RunStore(url)
    runs = store.cell_runs(store.find_study(grid_study_name("mnist100", "smoke")))
    for seed in SEEDS:
        subsets = {r.record["labeled_indices_sha256"] for r in runs if r.seed == seed}
        assert len(subsets) == 1


def test_rerunning_runs_nothing_and_says_so(smoke_grid, data_root):
    _, url, _ = smoke_grid
    again = sslbench("ablate", "--grid", "mnist100", "--profile", "smoke", "--seeds", "2",
                     "--storage", url, "--root", str(data_root))
    assert again.returncode == 0
    assert "nothing to run: 20 of 20 cells already finished" in again.stderr
    assert "0 run now" in again.stdout


def test_report_numbers_match_an_independent_computation(smoke_grid):
    """Every number of the report recomputed by hand from the raw records: the tail-median
    headline, collapses kept out of means and pairs, Holm over the declared family only,
    reference checks each at alpha."""
    folder, url, _ = smoke_grid
    out = folder / "report"
    path = write_report(RunStore(url), "mnist100", None, out)
    markdown = path.read_text()
    store = RunStore(url)
    runs = store.cell_runs(store.find_study(grid_study_name("mnist100", "smoke")))
    # the headline: the median of the last 3 of the 6 epochs
    acc = {(r.variant, r.seed): 100 * float(np.median(r.record["curves"]["test_accuracy"][-3:]))
           for r in runs}
    collapsed = {(r.variant, r.seed): r.record["metrics"]["collapsed"] for r in runs}

    summary = pd.read_csv(out / "summary.csv").set_index("variant")
    paired = pd.read_csv(out / "paired.csv").set_index("variant")
    checks = pd.read_csv(out / "reference_checks.csv").set_index("variant")
    assert set(paired.index) <= set(GRID.family) and set(checks.index) <= {
        "supervised", "supervised_pipeline"}
    p_values = {}
    for variant in (v.name for v in GRID.variants):
        ok = [s for s in SEEDS if not collapsed[(variant, s)]]
        values = np.array([acc[(variant, s)] for s in ok])
        row = summary.loc[variant]
        assert row["n"] == 2 and row["collapses"] == 2 - len(ok)
        assert f"| {variant} | 2 | {2 - len(ok)} |" in markdown
        if len(ok) == 2:
            assert row["mean"] == pytest.approx(values.mean())
            assert row["std"] == pytest.approx(np.sqrt(((values - values.mean()) ** 2).sum()))
            assert (row["min"], row["max"]) == pytest.approx((values.min(), values.max()))
        if variant == "control":
            continue
        both = [s for s in SEEDS if not collapsed[(variant, s)] and not collapsed[("control", s)]]
        table = paired if variant in GRID.family else checks
        assert table.loc[variant, "n"] == len(both)
        if not both:
            continue
        d = np.array([acc[(variant, s)] - acc[("control", s)] for s in both])
        assert table.loc[variant, "mean_diff"] == pytest.approx(d.mean())
        if len(d) == 2 and d.std(ddof=1) > 0:
            sd = d.std(ddof=1)
            p = 2 * stats.t.sf(abs(d.mean() / (sd / np.sqrt(2))), df=1)
            assert table.loc[variant, "t_p"] == pytest.approx(p)
            assert table.loc[variant, "d_z"] == pytest.approx(d.mean() / sd)
            if variant in GRID.family:
                p_values[variant] = p
            else:  # a reference check is tested alone
                assert table.loc[variant, "holm_p"] == pytest.approx(p)
    # Holm by hand over the family's variants with a defined p.
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    running = 0.0
    for rank, (variant, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        assert paired.loc[variant, "holm_p"] == pytest.approx(running)
    per_seed = pd.read_csv(out / "per_seed.csv").set_index("seed")
    assert per_seed.loc[1, "pixelwise"] == pytest.approx(acc[("pixelwise", 1)])
    for figure in ("accuracy.png", "paired.png", "curves.png", "throughput.png"):
        assert (out / figure).stat().st_size > 10_000
        assert f"({figure})" in markdown
    assert "torch 2." in markdown and "git commit:" in markdown


def test_killed_grid_resumes_and_finishes_with_the_same_cells(tmp_path, data_root):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    args = ["ablate", "--grid", "mnist100", "--profile", "smoke", "--seeds", "2",
            "--variants", "control", "supervised", "--workers", "1", "--storage", url,
            "--root", str(data_root), "--set", "train.epochs=3"]
    process = start_ablate(args)
    store = RunStore(url)
    checkpoints = tmp_path / "runs.db.checkpoints"

    def one_stored_one_checkpointed() -> bool:
        states = {r.state for r in smoke_runs(store)}
        return {"COMPLETE", "RUNNING"} <= states and any(checkpoints.glob("*.pt"))

    wait_for(one_stored_one_checkpointed, "one cell stored and another checkpointed")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    study = store.find_study(grid_study_name("mnist100", "smoke"))
    before = store.cell_runs(study)
    finished_before = {r.cell: r.trial_id for r in before if r.state == "COMPLETE"}
    assert 0 < len(finished_before) < 4 and any(r.state == "RUNNING" for r in before)

    resumed = sslbench(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "its process ended before it finished; it will be rerun" in resumed.stderr
    assert "resuming from its checkpoint" in resumed.stderr  # not from scratch
    latest = latest_by_cell(store.cell_runs(study))
    assert len(latest) == 4 and all(r.state == "COMPLETE" for r in latest.values())
    for cell, trial_id in finished_before.items():  # finished cells were kept, not rerun
        assert latest[cell].trial_id == trial_id
    interrupted = [r for r in store.cell_runs(study) if r.state == "FAIL"]
    assert len(interrupted) == 1 and interrupted[0].failure_kind == "interrupted"


class Raises(Method):
    """A method with a bug: it crashes in its second epoch."""

    def losses(self, logits, batch, epoch):
        if epoch == 1:
            raise RuntimeError("boom in epoch 1")
        return StepLosses(self.supervised(logits, batch), torch.zeros(logits.shape[0]))


BROKEN = Grid(
    name="test_broken",
    description="control plus a cell that raises and one that diverges",
    variants=(
        Variant("control", "supervised", {"train.epochs": 2}),
        Variant("raises", "test_raises"),
        Variant("diverges", "temporal_ensembling", {"train.lr": 1e30}),
    ),
)


@pytest.fixture
def broken_grid():
    """The grid and its crashing method, registered for this test only."""
    with registry.METHODS.scoped("test_raises", Raises), GRIDS.scoped(BROKEN.name, BROKEN):
        yield BROKEN


def test_failed_cells_are_recorded_and_the_grid_goes_on(tmp_path, data_root, broken_grid):
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    settings = GridSettings("smoke", (0,), overrides={"train.epochs": "2"}, data_root=data_root)
    outcome = run_grid(broken_grid, settings, store=store, log=lambda _: None)
    assert outcome.finished == ["control/seed0"]
    assert sorted(outcome.failed) == ["diverges/seed0", "raises/seed0"]
    runs = {r.cell: r for r in store.cell_runs(store.find_study(grid_study_name("test_broken",
                                                                                  "smoke")))}
    assert runs["raises/seed0"].failure_kind == "error"
    assert "RuntimeError: boom in epoch 1" in runs["raises/seed0"].failure
    assert runs["diverges/seed0"].failure_kind == "diverged"
    assert "not finite" in runs["diverges/seed0"].failure

    again = run_grid(broken_grid, settings, store=store, log=lambda _: None)
    assert again.already_done == 1 and again.skipped_diverged == ["diverges/seed0"]
    assert again.failed == ["raises/seed0"]  # a crash is retried (and fails again)

    path = write_report(store, "test_broken", "smoke", tmp_path / "report")
    text = path.read_text()
    assert "| raises/seed0 | error |" in text and "| diverges/seed0 | diverged |" in text
    assert not math.isnan(pd.read_csv(tmp_path / "report" / "summary.csv")["mean"][0])


def test_sigterm_stops_workers_with_checkpoints_and_the_grid_resumes(tmp_path, data_root):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    args = ["ablate", "--grid", "mnist100", "--profile", "smoke", "--seeds", "1",
            "--variants", "control", "ramp_none", "--workers", "2", "--storage", url,
            "--root", str(data_root), "--set", "train.epochs=12"]
    process = start_ablate(args)
    checkpoints = tmp_path / "runs.db.checkpoints"
    wait_for(lambda: len(list(checkpoints.glob("*.pt"))) == 2, "both workers' checkpoints")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr.splitlines()[-1]
    store = RunStore(url)
    study = store.find_study(grid_study_name("mnist100", "smoke"))
    stopped = store.cell_runs(study)
    assert sorted(r.failure_kind for r in stopped) == ["interrupted", "interrupted"]
    assert len(list(checkpoints.glob("*.pt"))) == 2

    resumed = sslbench(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stderr.count("resuming from its checkpoint") == 2
    latest = latest_by_cell(store.cell_runs(study))
    assert all(r.state == "COMPLETE" for r in latest.values()) and len(latest) == 2
    assert not list(checkpoints.glob("*.pt"))


def test_two_runners_on_one_store_run_each_cell_once(tmp_path, data_root):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    args = ["ablate", "--grid", "mnist100", "--profile", "smoke", "--seeds", "1",
            "--variants", "control", "supervised", "--workers", "1", "--storage", url,
            "--root", str(data_root), "--set", "train.epochs=4"]
    first = start_ablate(args)
    store = RunStore(url)
    wait_for(lambda: bool(smoke_runs(store)), "the first runner to claim a cell")
    second = sslbench(*args)
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, first_err + second.stderr
    runs = store.cell_runs(store.find_study(grid_study_name("mnist100", "smoke")))
    assert sorted(r.cell for r in runs) == ["control/seed0", "supervised/seed0"]
    assert all(r.state == "COMPLETE" for r in runs)
    assert "elsewhere" in first_err + second.stderr


def test_cells_group_into_stacks_of_one_variant_in_seed_order():
    from sslbench.bench.runs.cells import plan_cells, plan_jobs

    cells = plan_cells(GRID, "smoke", [0, 1, 2], variants=["control", "pixelwise"])
    assert [c.key for c in cells][:2] == ["control/seed0", "pixelwise/seed0"]  # seed-major
    jobs = plan_jobs(cells, stack=2)
    assert [[c.key for c in job.cells] for job in jobs] == [
        ["control/seed0", "control/seed1"], ["control/seed2"],
        ["pixelwise/seed0", "pixelwise/seed1"], ["pixelwise/seed2"]]
    assert jobs[0].key == "control/seeds0,1" and jobs[1].key == "control/seed2"
    assert [job.cells for job in plan_jobs(cells, stack=1)] == [(c,) for c in cells]


def cell_records(store: RunStore, grid: str = "mnist100") -> dict[str, dict]:
    runs = store.cell_runs(store.find_study(grid_study_name(grid, "smoke")))
    return {cell: run.record for cell, run in latest_by_cell(runs).items()}


def test_stacked_grid_matches_the_sequential_grid(tmp_path, data_root):
    """Three seeds as one stack give each cell what it gets alone: the same labeled
    subset and initial losses (grouped convolutions round differently, no more)."""
    settings = GridSettings("smoke", (0, 1, 2), variants=("control",),
                            overrides={"train.epochs": "2"}, data_root=data_root)
    alone, stacked = RunStore(f"sqlite:///{tmp_path / 'a.db'}"), RunStore(
        f"sqlite:///{tmp_path / 's.db'}")
    assert run_grid(GRID, replace(settings, stack=1), store=alone, log=lambda _: None).finished
    outcome = run_grid(GRID, replace(settings, stack=3), store=stacked, log=lambda _: None)
    assert sorted(outcome.finished) == ["control/seed0", "control/seed1", "control/seed2"]
    one, three = cell_records(alone), cell_records(stacked)
    assert set(one) == set(three)
    for cell in one:
        assert (one[cell]["throughput"]["stack_size"], three[cell]["throughput"]["stack_size"]) \
            == (1, 3)
        assert one[cell]["run_id"] == three[cell]["run_id"]
        assert one[cell]["labeled_indices"] == three[cell]["labeled_indices"]
        assert three[cell]["curves"]["supervised_loss"][0] == pytest.approx(
            one[cell]["curves"]["supervised_loss"][0], rel=1e-4)
    assert len({r["labeled_indices_sha256"] for r in three.values()}) == 3  # seeds differ


class DivergesWhenStacked(Method):
    """Finite alone, NaN in any stack of several runs: a stack that must be split."""

    uses_unlabeled = False

    def losses(self, logits, batch, epoch):
        supervised = self.supervised(logits, batch)
        if self.context.num_runs > 1:
            supervised = supervised * float("nan")
        return StepLosses(supervised, torch.zeros(logits.shape[0]))


STACK_SPLIT = Grid(
    name="test_stack_split",
    description="a method that diverges only in stacks",
    variants=(Variant("control", "test_diverges_stacked", {}),),
)


def test_a_diverging_stack_is_rerun_cell_by_cell(tmp_path, data_root):
    with registry.METHODS.scoped("test_diverges_stacked", DivergesWhenStacked), \
            GRIDS.scoped(STACK_SPLIT.name, STACK_SPLIT):
        _rerun_cell_by_cell(tmp_path, data_root)


def _rerun_cell_by_cell(tmp_path, data_root):
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    settings = GridSettings("smoke", (0, 1), overrides={"train.epochs": "2"},
                            data_root=data_root, stack=2,
                            checkpoint_dir=tmp_path / "checkpoints")
    outcome = run_grid(STACK_SPLIT, settings, store=store, log=lambda _: None)
    assert sorted(outcome.finished) == ["control/seed0", "control/seed1"] and not outcome.failed
    records = cell_records(store, "test_stack_split")
    assert {r["throughput"]["stack_size"] for r in records.values()} == {1}
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # the stack's is gone too


class StoppedWhileStacked(DivergesWhenStacked):
    """Diverges in stacks, and the user asks to stop while the stack trains."""

    def losses(self, logits, batch, epoch):
        from sslbench.bench.runs.pool import worker_stop

        if self.context.num_runs > 1:
            worker_stop().set()
        return super().losses(logits, batch, epoch)


def test_a_stop_during_a_diverging_stack_reruns_nothing(data_root):
    from sslbench.bench.core.overrides import build_config

    with registry.METHODS.scoped("test_stopped_stacked", StoppedWhileStacked):
        configs = [build_config("test_stopped_stacked", seed, "smoke",
                                {"train.epochs": 2}).to_dict() for seed in (0, 1)]
        _stop_during_a_stack(configs, data_root)


def _stop_during_a_stack(configs, data_root):
    from sslbench.bench.runs.job import JobSpec, execute_job
    from sslbench.bench.runs.pool import WorkerPool

    epochs: list[str] = []  # the jobs that reported an epoch
    with WorkerPool[str, list](1, 1, lambda message: epochs.append(message[0])) as pool:
        pool.submit("job", execute_job,
                    JobSpec("control/seeds0,1", tuple(configs), "cpu", str(data_root)))
        ((_, future),) = list(pool.poll())
    assert [r.status for r in future.result()] == ["interrupted", "interrupted"]
    assert epochs == []  # no cell was rerun alone: the stack diverged in its first epoch
