"""Search spaces: each a function from an Optuna trial to config overrides (paper units).

The method and its supervised baseline get spaces of the same size and the same ranges for
what they share, so the baseline is tuned with the same effort as the method it is compared
with. Epoch lengths are in paper units (of 300 epochs) and scaled by the profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.overrides import build_config
from sslbench.bench.errors import ConfigError
from sslbench.methods.registry import Registry

Suggest = Callable[[optuna.trial.BaseTrial], dict[str, Any]]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    method: str
    description: str
    suggest: Suggest

    def config(self, trial: optuna.trial.BaseTrial, seed: int, profile: str,
               overrides: dict[str, str] | None = None) -> RunConfig:
        """The run config of `trial` for `seed`: defaults, the trial's values, the profile,
        then `--set` overrides (validation split size among them)."""
        return build_config(self.method, seed, profile, overrides, self.suggest(trial))


SPACES: Registry[SearchSpace] = Registry("search space", error=ConfigError)


def register_space(name: str, method: str, description: str) -> Callable[[Suggest], Suggest]:
    def decorate(suggest: Suggest) -> Suggest:
        SPACES.add(name, SearchSpace(name, method, description, suggest))
        return suggest
    return decorate


def space_names() -> list[str]:
    return SPACES.names()


def get_space(name: str) -> SearchSpace:
    return SPACES.get(name)


def _shared(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    """What every method shares: learning rate, input noise, dropout."""
    return {
        "train.lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "model.input_noise_std": trial.suggest_float("input_noise_std", 0.0, 0.3),
        "model.dropout": trial.suggest_float("dropout", 0.0, 0.7),
    }


@register_space("supervised", "supervised",
                "the supervised baseline: learning rate, input noise, dropout")
def supervised(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    return _shared(trial)


@register_space("temporal_ensembling", "temporal_ensembling",
                "learning rate, ensemble momentum a, w_max, ramp-up length, noise, dropout")
def temporal_ensembling(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    return {
        **_shared(trial),
        "method.ensemble_momentum": trial.suggest_float("ensemble_momentum", 0.3, 0.9),
        "method.w_max": trial.suggest_float("w_max", 3.0, 100.0, log=True),
        "method.ramp_epochs": trial.suggest_int("ramp_epochs", 10, 200, step=10),
    }


@register_space("mean_teacher", "mean_teacher",
                "learning rate, EMA decay, w_max, ramp-up length, noise, dropout")
def mean_teacher(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    return {
        **_shared(trial),
        # Log-uniform in 1 - decay: 0.9 and 0.99 are as far apart as 0.99 and 0.999.
        "method.ema_decay": 1.0 - trial.suggest_float("one_minus_ema_decay", 1e-3, 0.1, log=True),
        "method.w_max": trial.suggest_float("w_max", 3.0, 100.0, log=True),
        "method.ramp_epochs": trial.suggest_int("ramp_epochs", 10, 200, step=10),
    }
