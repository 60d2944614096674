"""Which samples each batch holds: the labeled-only sampler of the classic baseline and the
batch-composition switch, per run, in a stack; and the two supervised baselines."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
import torch

from sslbench.bench.core import train as bench_train
from sslbench.bench.core.config import config_from_dict
from sslbench.bench.core.overrides import build_config, with_overrides
from sslbench.bench.core.record import build_record
from sslbench.bench.core.sampling import batch_plan, epoch_order
from sslbench.bench.core.seeds import generator
from sslbench.bench.core.train import train_stack
from sslbench.bench.errors import ConfigError
from tests.conftest import smoke_config

CPU = torch.device("cpu")


def order_for(config, labeled: torch.Tensor, num_train: int, seeds=(0, 1, 2)):
    plan = batch_plan(config.train, num_train, int(labeled.shape[1]))
    gens = [generator(s, "order") for s in seeds]
    return plan, epoch_order(plan, labeled, num_train, gens)


def labeled_subsets(runs: int, k: int, num_train: int) -> torch.Tensor:
    # Disjoint, distinct subsets per run, so a batch drawn from another run's would show.
    return torch.stack([torch.arange(r * k, (r + 1) * k) * 7 % num_train for r in range(runs)])


def test_all_is_one_plain_shuffle_per_run_as_before_the_switch():
    config = smoke_config()
    labeled = labeled_subsets(3, 100, 2000)
    plan, order = order_for(config, labeled, 2000)
    assert (plan.steps, plan.batch_size, plan.images_per_epoch) == (20, 100, 2000)
    for run, seed in enumerate((0, 1, 2)):
        # exactly the draw of the loop before train.batches existed
        expected = torch.randperm(2000, generator=generator(seed, "order"))
        assert torch.equal(order[run], expected)


def test_labeled_batches_hold_each_runs_own_labeled_images_alone():
    config = smoke_config("supervised", train__batch_size=64)
    labeled = labeled_subsets(3, 100, 2000)
    plan, order = order_for(config, labeled, 2000)
    # compute-matched: the SSL pipeline's step count, ceil(2000 / 64) = 32 steps of 64
    assert (plan.batches, plan.steps, plan.batch_size) == ("labeled", 32, 64)
    assert order.shape == (3, 32 * 64)
    for run in range(3):
        own = set(labeled[run].tolist())
        batches = order[run].view(32, 64)
        assert all(set(b.tolist()) <= own for b in batches)
        assert all(len(set(b.tolist())) == 64 for b in batches)  # no repeat within a batch
        # one whole batch per shuffle of the 100 (the other 36 wait for the next shuffle),
        # so every labeled image is drawn, none far more often than the others
        counts = torch.bincount(order[run], minlength=2000)[labeled[run]]
        assert counts.min() > 0 and counts.max() <= 32
    # the runs of a stack shuffle independently
    assert not torch.equal(order[0] - labeled[0][0], order[1] - labeled[1][0])


def test_labeled_batch_size_is_capped_at_the_label_count():
    config = smoke_config("supervised", data__num_labels=20)
    plan = batch_plan(config.train, 2000, 20)
    assert (plan.batch_size, plan.steps) == (20, 20)


def test_fixed_batches_hold_exactly_L_labeled_images_of_their_run():
    config = smoke_config(train__batches="fixed", train__labeled_per_batch=10)
    labeled = labeled_subsets(2, 100, 2000)
    plan, order = order_for(config, labeled, 2000, seeds=(0, 1))
    assert (plan.steps, plan.batch_size, plan.labeled_per_batch) == (20, 100, 10)
    for run in range(2):
        own = set(labeled[run].tolist())
        for batch in order[run].view(20, 100):
            members = batch.tolist()
            assert sum(i in own for i in members) == 10
            assert set(members[:10]) <= own and not set(members[10:]) & own
        unlabeled_seen = order[run].view(20, 100)[:, 10:].flatten()
        assert len(set(unlabeled_seen.tolist())) == 1800  # one shuffle: no repeats


def test_random_batches_hold_a_varying_number_of_labeled_images():
    config = smoke_config()
    labeled = labeled_subsets(1, 100, 2000)
    _, order = order_for(config, labeled, 2000, seeds=(0,))
    own = set(labeled[0].tolist())
    per_batch = [sum(i in own for i in b.tolist()) for b in order[0].view(20, 100)]
    assert sum(per_batch) == 100 and len(set(per_batch)) > 1


@pytest.mark.parametrize("bad", [{"train.labeled_per_batch": 100},
                                 {"train.labeled_per_batch": 150}])
def test_impossible_fixed_composition_is_a_one_line_error(bad):
    config = with_overrides(smoke_config(train__batches="fixed"), bad)
    with pytest.raises(ConfigError, match="labeled_per_batch"):
        batch_plan(config.train, 2000, 100)


def test_each_baseline_is_held_to_its_own_batches():
    with pytest.raises(ConfigError, match="supervised_pipeline"):
        build_config("supervised", 0, "smoke", {"train.batches": "all"})
    with pytest.raises(ConfigError, match="only the supervised baseline"):
        build_config("temporal_ensembling", 0, "smoke", {"train.batches": "labeled"})


def test_the_two_baselines_never_share_a_run_id_and_the_pipeline_keeps_its_old_one():
    classic = build_config("supervised", 0, "quick")
    pipeline = build_config("supervised_pipeline", 0, "quick")
    assert classic.config_hash() != pipeline.config_hash()
    # the id the pipeline baseline had when it was called `supervised` (committed store
    # reports/results/mnist100-quick, cell supervised/seed0)
    assert pipeline.config_hash() == "bd35404fb7d02ebb"


def test_a_legacy_supervised_config_reads_as_the_pipeline():
    stored = build_config("supervised_pipeline", 0, "quick").to_dict()
    stored["method"]["name"] = "supervised"
    for later in ("batches", "labeled_per_batch", "steps_per_epoch"):
        del stored["train"][later]  # as written before these fields existed
    assert config_from_dict(stored).method.name == "supervised_pipeline"
    current = build_config("supervised", 0, "quick").to_dict()
    assert config_from_dict(current).method.name == "supervised"


def test_the_classic_baseline_trains_on_its_labeled_images_in_a_stack(data_root, monkeypatch):
    """A real stacked run: every batch of every run holds that run's labeled images only,
    the record says so and gives the step count, and the stack equals the runs alone."""
    config = smoke_config("supervised", train__epochs=2)
    seen: list[torch.Tensor] = []
    real_order = bench_train.epoch_order

    def recording(*args, **kwargs):  # the real sampler, its output kept for inspection
        order = real_order(*args, **kwargs)
        seen.append(order.clone())
        return order

    monkeypatch.setattr(bench_train, "epoch_order", recording)
    stacked = train_stack(config, [0, 1], device=CPU, data_root=data_root)
    assert len(seen) == 2 and all(o.shape == (2, 20 * 100) for o in seen)
    for run, result in enumerate(stacked):
        own = set(result.labeled_indices)
        assert all(set(o[run].tolist()) <= own for o in seen)
    record = build_record(config, stacked[0], CPU, dt.datetime.now(dt.UTC))
    assert record["schedule"] == {"batches": "labeled", "steps_per_epoch": 20, "batch_size": 100,
                                  "labeled_per_batch": 100, "images_per_epoch": 2000,
                                  "total_steps": 40}
    alone = train_stack(replace(config, seed=1), [1], device=CPU, data_root=data_root)[0]
    assert alone.labeled_indices == stacked[1].labeled_indices
    assert alone.curves["supervised_loss"] == pytest.approx(stacked[1].curves["supervised_loss"],
                                                            rel=1e-3)


def test_a_legacy_store_keeps_its_pipeline_cells_and_runs_the_classic_baseline(tmp_path,
                                                                               data_root):
    """A store written when `supervised` meant the pipeline (its cell and claim as the old
    code wrote them) reads that cell as supervised_pipeline, and the classic baseline under
    the same key is claimed and trained beside it, not skipped."""
    import optuna

    from sslbench.ablations import get_grid
    from sslbench.bench.runs.runner import run_grid
    from sslbench.bench.runs.settings import GridSettings
    from sslbench.bench.store.names import grid_study_name
    from sslbench.bench.store.queue import claim_cell
    from sslbench.bench.store.runstore import RunStore

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = RunStore(url)
    legacy = build_config("supervised_pipeline", 0, "smoke", {"train.epochs": "1"}).to_dict()
    legacy["method"]["name"] = "supervised"
    for later in ("batches", "labeled_per_batch", "steps_per_epoch"):
        del legacy["train"][later]
    study = store.study_id(grid_study_name("mnist100", "smoke"))
    store.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE],
                                   "claim:grid:mnist100:smoke:supervised/seed0:0")  # old claim
    trial = claim_cell(store, study, "supervised/seed0", "supervised", 0, legacy)
    assert trial is not None
    # A whole record, as the old code wrote it (a partial one is quarantined when read).
    import datetime as dt

    import torch

    from sslbench.bench.core.record import build_record
    from sslbench.bench.core.train import single_run

    pipeline = build_config("supervised_pipeline", 0, "smoke", {"train.epochs": "1"})
    record = build_record(pipeline, single_run(pipeline, device=torch.device("cpu"),
                                               data_root=data_root),
                          torch.device("cpu"), dt.datetime.now(dt.UTC))
    store.finish_cell(trial, {**record, "method": "supervised", "config": legacy})
    settings = GridSettings("smoke", (0,), variants=("supervised",),
                            overrides={"train.epochs": "1"}, data_root=data_root)
    outcome = run_grid(get_grid("mnist100"), settings, store=store, log=lambda _: None)
    assert outcome.finished == ["supervised/seed0"], outcome  # trained, not "running elsewhere"
    runs = {r.cell: r for r in store.cell_runs(study) if r.state == "COMPLETE"}
    assert sorted(runs) == ["supervised/seed0", "supervised_pipeline/seed0"]
    assert runs["supervised_pipeline/seed0"].record["method"] == "supervised_pipeline"
    assert runs["supervised/seed0"].record["schedule"]["batches"] == "labeled"
