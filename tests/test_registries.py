"""The one registry type, and every registered grid and search space checked on its own."""

from __future__ import annotations

import optuna
import pytest

from sslbench.ablations import get_grid, grid_names
from sslbench.ablations.spaces import get_space, space_names
from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.profiles import PROFILES, get_profile
from sslbench.bench.errors import ConfigError
from sslbench.bench.runs.cells import plan_cells
from sslbench.methods.registry import METHODS, Registry, UnknownNameError


def test_a_duplicate_name_is_an_error_and_an_unknown_one_lists_the_choices():
    registry: Registry[int] = Registry("widget", error=ConfigError, hint=" (see --list)")
    registry.add("b", 2)
    registry.add("a", 1)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        registry.add("a", 3)
    assert registry.get("a") == 1  # the first registration stands
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; choose one of: a, b \(see"):
        registry.get("c")
    with pytest.raises(UnknownNameError, match="unknown method 'nope'; choose one of: "):
        METHODS.get("nope")


def test_a_scoped_registration_is_gone_after_its_block_even_on_error():
    registry: Registry[str] = Registry("thing")
    with pytest.raises(RuntimeError), registry.scoped("x", "entry"):
        assert registry.get("x") == "entry"
        raise RuntimeError("the test body fails")
    assert "x" not in registry and registry.names() == []
    with registry.scoped("x", "again"):  # the name is free again
        assert registry.names() == ["x"]


def test_profiles_are_a_registry_too():
    assert PROFILES.names() == ["paper", "paper_cifar", "quick", "smoke"]
    with pytest.raises(ConfigError,
                       match="unknown profile 'fast'; choose one of: paper, paper_cifar, quick"):
        get_profile("fast")


@pytest.mark.parametrize("name", grid_names())
def test_every_grid_plans_on_smoke(name):
    """Every variant of every grid builds a valid smoke config, its cells pair by seed, and
    the variants differ in what they compute (no two share a run id)."""
    grid = get_grid(name)
    cells = plan_cells(grid, "smoke", [0, 1])
    assert [c.key for c in cells[:len(grid.variants)]] == [f"{v.name}/seed0" for v in grid.variants]
    assert len(cells) == 2 * len(grid.variants)
    assert all(c.config.train.epochs == get_profile("smoke").epochs or
               "train.epochs" in dict(grid.variant(c.variant).overrides) for c in cells)
    # At smoke's 6 epochs a scaled ramp-up can round to none (ramp_fast: 20 * 6/300 -> 0);
    # at the profiles that measure, no two variants may compute the same runs.
    for profile in ("quick", "paper"):
        run_ids = {c.config.config_hash() for c in plan_cells(grid, profile, [0])}
        assert len(run_ids) == len(grid.variants), f"two variants are one run at {profile}"
    assert grid.control in {v.name for v in grid.variants}


@pytest.mark.parametrize("name", space_names())
def test_every_search_space_samples_valid_configs(name):
    """Trials drawn by a real (random) sampler give valid configs of the space's method, with
    each sampled value in the config it trains."""
    space = get_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        # The paper profile: spaces suggest epoch lengths in its units, unscaled there.
        config = space.config(trial, 1000, "paper", {"data.val_size": "200"})
        assert isinstance(config, RunConfig) and config.method.name == space.method
        assert config.data.val_size == 200
        suggested = space.suggest(optuna.trial.FixedTrial(trial.params))
        assert suggested, f"space {name} suggests nothing"
        flat = config.to_dict()
        for key, value in suggested.items():
            section, field = key.split(".")
            assert flat[section][field] == pytest.approx(value), key
        study.tell(trial, 0.5)
