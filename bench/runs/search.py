"""Hyperparameter search with Optuna on a validation split; the test set is never read.

A trial trains `seeds_per_trial` runs of one config as a stack, on the training images
minus a validation split (data.val_size, drawn once for all trials), and scores the mean
validation accuracy of the last epoch. Every epoch's mean validation accuracy is reported
to Optuna, so the median pruner stops trials that fall behind. The sampler is a seeded TPE;
the study lives in the run store and resumes when the same command runs again.

Search seeds (SEARCH_SEED_BASE + i) are never the seeds of the final comparison (0..n-1):
`finalize` runs the best config and the blog's defaults on fresh seeds against the test
set, as a two-variant grid, with the ablation report's statistics.

Several workers (processes, or machines sharing a PostgreSQL or journal store) can work on
one study. A trial whose worker died (dead process on this host, or no heartbeat for the
grace period) is marked failed and its parameters are queued again, once.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from sslbench.ablations.grid import Grid, Variant
from sslbench.ablations.spaces import get_space
from sslbench.bench.core.device import resolve_device
from sslbench.bench.core.train import EpochSummary, train_stack
from sslbench.bench.errors import DivergedError, UserError
from sslbench.bench.messages import Log, say
from sslbench.bench.runs.pool import WorkerPool
from sslbench.bench.store.names import search_study_name
from sslbench.bench.store.queue import (
    DEFAULT_GRACE_S,
    HEARTBEAT_S,
    Heartbeat,
    beat_interval,
    owner_gone,
    reap_trials,
)
from sslbench.bench.store.runstore import RunStore, is_sqlite

SEARCH_SEED_BASE = 1000




@dataclass(frozen=True)
class SearchSettings:
    space: str
    profile: str
    trials: int  # finished (complete or pruned) trials wanted in the study
    seeds_per_trial: int = 2
    val_size: int = 1000  # validation images held out of the training set, labels for scoring
    overrides: dict[str, str] = field(default_factory=dict)  # --set, on top of the trial's
    sampler_seed: int = 0
    prune: bool = True
    grace_s: float = DEFAULT_GRACE_S

    def identity(self) -> dict[str, Any]:
        """What must match for a study to be resumed rather than mixed with another."""
        return {"space": self.space, "profile": self.profile,
                "seeds_per_trial": self.seeds_per_trial, "val_size": self.val_size,
                "overrides": dict(sorted(self.overrides.items()))}

    @property
    def search_seeds(self) -> list[int]:
        return [SEARCH_SEED_BASE + i for i in range(self.seeds_per_trial)]

    @property
    def run_overrides(self) -> dict[str, str]:
        return {**self.overrides, "data.val_size": str(self.val_size)}


def check_settings(settings: SearchSettings) -> None:
    get_space(settings.space)
    for name, value, low in (("--trials", settings.trials, 1),
                             ("--trial-seeds", settings.seeds_per_trial, 1),
                             ("--val-size", settings.val_size, 1)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if "data.val_size" in settings.overrides:
        raise UserError("set the validation split with --val-size, not --set data.val_size")


def open_study(store: RunStore, settings: SearchSettings, worker: int = 0) -> optuna.Study:
    epochs = _probe_config(settings).train.epochs
    name = search_study_name(settings.space, settings.profile)
    study_id = store.find_study(name)
    stored_trials = (len(store.storage.get_all_trials(study_id, deepcopy=False))
                     if study_id is not None else 0)
    sampler = optuna.samplers.TPESampler(
        # Workers must not propose the same points, nor a resumed search the points of its
        # first run (a sampler restarted with the same seed would replay them): the seed
        # moves with the worker and with the trials already stored.
        seed=settings.sampler_seed + 1000 * worker + stored_trials,
        n_startup_trials=max(3, min(10, settings.trials // 3)))
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 3))
        if settings.prune else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=store.storage, study_name=name,
                                direction="maximize", sampler=sampler, pruner=pruner,
                                load_if_exists=True)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings.identity())
        study.set_user_attr("kind", "search")
    elif stored != settings.identity():
        differing = sorted(k for k in stored if stored[k] != settings.identity().get(k))
        raise UserError(f"the store already holds search {study.study_name!r} with other "
                        f"settings ({', '.join(f'{k}={stored[k]}' for k in differing)}); "
                        f"pass the same settings to resume it, or another --storage")
    return study


def _probe_config(settings: SearchSettings) -> Any:
    """A config of the space at its defaults: checks --set and gives the epoch count."""
    from sslbench.bench.core.overrides import build_config

    return build_config(get_space(settings.space).method, settings.search_seeds[0],
                        settings.profile, settings.run_overrides)


# -- one trial -------------------------------------------------------------------------------


def objective(trial: optuna.Trial, settings: SearchSettings, device: torch.device,
              data_root: Path, log: Log) -> float:
    space = get_space(settings.space)
    seeds = settings.search_seeds
    config = space.config(trial, seeds[0], settings.profile, settings.run_overrides)
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("seeds", seeds)

    def report(summary: EpochSummary) -> None:
        assert summary.val_accuracy is not None  # data.val_size > 0
        value = statistics.fmean(summary.val_accuracy)
        trial.report(value, summary.epoch)  # the worker's Heartbeat thread beats for it
        log(f"  trial {trial.number} epoch {summary.epoch + 1}/{summary.epochs} "
            f"val acc {value:.2%}")
        if trial.should_prune():
            raise optuna.TrialPruned(f"val acc {value:.2%} at epoch {summary.epoch + 1}")

    results = train_stack(config, seeds, device=device, data_root=data_root, progress=report,
                          with_test=False)
    per_seed = [r.curves["val_accuracy"][-1] for r in results]
    trial.set_user_attr("val_accuracy_per_seed", per_seed)
    return statistics.fmean(per_seed)


# -- workers ---------------------------------------------------------------------------------


def _finished(study: optuna.Study) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return done, running


def refuse_unsafe_sqlite(store: RunStore, settings: SearchSettings, workers: int) -> None:
    """Several processes on one SQLite file can pop the same queued trial and run it twice;
    refuse before that can happen."""
    if not is_sqlite(store.url):
        return
    hint = ("use --storage journal:///path/search.log (several processes, one machine) or "
            "a postgresql:// URL (many machines)")
    if workers > 1:
        raise UserError(f"a SQLite store is not safe for {workers} search workers; {hint}")
    study_id = store.find_study(search_study_name(settings.space, settings.profile))
    if study_id is None:
        return
    for trial in store.storage.get_all_trials(study_id, deepcopy=False,
                                              states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("owner")
        if owner and owner_gone(owner, trial.user_attrs.get("heartbeat"),
                                settings.grace_s) is None:
            raise UserError(f"search trial {trial.number} is running in process {owner} on "
                            f"this SQLite store, which is not safe for two searches; wait for "
                            f"it, or {hint}")


def search_worker(settings: SearchSettings, url: str, device_name: str, data_root: str,
                  worker: int = 0, log: Log = say) -> int:
    """Run trials until the study holds `settings.trials` finished ones; return how many
    this worker ran. Trials are popped with Optuna's `ask` (queued retries first)."""
    device = resolve_device(device_name)
    store = RunStore(url)
    study = open_study(store, settings, worker)
    ran = failures = 0
    with Heartbeat(url, beat_interval(settings.grace_s)) as heartbeat:
        while True:
            for line in reap_trials(store, study, settings.grace_s):
                log(line)
            done, running = _finished(study)
            if done >= settings.trials:
                return ran
            if done + running >= settings.trials:  # the rest are being run elsewhere
                time.sleep(min(HEARTBEAT_S, settings.grace_s / 4))
                continue
            if failures > settings.trials:
                raise UserError(f"{failures} trials failed in this worker; see the failures "
                                f"with `sslbench search --space {settings.space} --status`")
            trial = study.ask()
            trial.set_user_attr("owner", store.owner)
            trial.set_user_attr("heartbeat", time.time())
            trial_id = store.trial_id(study.study_name, trial.number)
            heartbeat.add(trial_id)
            log(f"trial {trial.number} ({done} of {settings.trials} finished) starts")
            try:
                failures += _run_trial(study, trial, settings, device, Path(data_root), log)
            finally:
                heartbeat.remove(trial_id)
            ran += 1


def _run_trial(study: optuna.Study, trial: optuna.Trial, settings: SearchSettings,
               device: torch.device, data_root: Path, log: Log) -> int:
    """Train and tell one trial; 1 if it failed (diverged), else 0."""
    try:
        value = objective(trial, settings, device, data_root, log)
    except optuna.TrialPruned as pruned:
        study.tell(trial, state=TrialState.PRUNED)
        log(f"trial {trial.number} pruned: {pruned}")
    except DivergedError as error:
        trial.set_user_attr("failure", str(error))
        study.tell(trial, state=TrialState.FAIL)
        log(f"trial {trial.number} failed: {error}")
        return 1
    except BaseException:
        trial.set_user_attr("failure", "interrupted or crashed")
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        study.tell(trial, value)
        log(f"trial {trial.number}: val acc {value:.2%} with {_params(trial.params)} "
            f"(best so far {study.best_value:.2%}, trial {study.best_trial.number})")
    return 0


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def run_search(settings: SearchSettings, url: str, *, workers: int, device: str,
               data_root: Path, threads: int | None = None,
               log: Log = say) -> optuna.Study:
    check_settings(settings)
    _probe_config(settings)
    store = RunStore(url)
    refuse_unsafe_sqlite(store, settings, workers)
    study = open_study(store, settings)
    done, _ = _finished(study)
    log(f"search {study.study_name}: {done} of {settings.trials} trials finished, "
        f"{settings.seeds_per_trial} seeds per trial, validation split {settings.val_size} "
        f"images, {workers} worker(s), store {url}")
    # On CPU the cores are shared out, one process per core at most (never oversubscribed).
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    # A stop (Ctrl-C) raises KeyboardInterrupt here: the trial in progress is told failed.
    with WorkerPool[int, int](workers, threads, catch_signals=False) as pool:
        for w in range(workers):  # the in-process worker logs where the caller asked
            pool.submit(w, search_worker, settings, url, device, str(data_root), w,
                        *([log] if workers <= 1 else []))
        while pool.in_flight:
            for _, future in pool.poll():
                future.result()  # a worker's error ends the search with it
        for _, future in pool.poll():  # the in-process worker's
            future.result()
    return optuna.load_study(study_name=study.study_name, storage=RunStore(url).storage)


# -- the result ------------------------------------------------------------------------------


def summary_lines(study: optuna.Study) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    lines = [f"- study `{study.study_name}`: " + ", ".join(f"{n} {k}" for k, n in counts.items()
                                                         if n)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        per_seed = best.user_attrs.get("val_accuracy_per_seed", [])
        lines += [f"- best trial {best.number}: mean validation accuracy {best.value:.2%} "
                  f"(per seed: {', '.join(f'{v:.2%}' for v in per_seed)})",
                  f"- best parameters: {_params(best.params)}"]
    return lines


def best_overrides(study: optuna.Study) -> tuple[int, dict[str, Any]]:
    """The best trial's number and its config overrides (paper units), for a final run."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise UserError(f"search {study.study_name!r} has no finished trial yet; run "
                        f"`sslbench search` first")
    best = study.best_trial
    space = get_space(study.user_attrs["settings"]["space"])
    return best.number, space.suggest(optuna.trial.FixedTrial(best.params))


def final_grid(study: optuna.Study) -> Grid:
    """The blog's defaults against the best trial's config, as a two-variant grid."""
    number, tuned = best_overrides(study)
    settings = study.user_attrs["settings"]
    space = get_space(settings["space"])
    name = f"final_{space.name}_trial{number}"
    grid = Grid(
        name=name,
        description=f"{space.method}: the blog's defaults against the best config of search "
                    f"`{study.study_name}` (trial {number}, mean validation accuracy "
                    f"{study.best_value:.2%}), on fresh seeds against the test set",
        variants=(Variant("defaults", space.method, {}, "the blog's defaults"),
                  Variant("tuned", space.method, tuned,
                          "best trial: " + _params(study.best_trial.params))),
        control="defaults")
    return grid  # never registered: run_grid takes the Grid, and the report reads the
    # variants that finalize stores on the study
