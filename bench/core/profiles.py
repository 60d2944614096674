"""Profiles: a protocol's length and data slice, applied to a config built in paper units."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from sslbench.bench.core.config import PAPER_EPOCHS, RunConfig
from sslbench.bench.errors import ConfigError
from sslbench.methods.registry import Registry


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int
    train_size: int | None = None
    test_size: int | None = None
    description: str = ""


PROFILES: Registry[Profile] = Registry("profile", error=ConfigError)
for _profile in (
        Profile("paper", PAPER_EPOCHS, description="the blog's protocol: 300 epochs, all data"),
        Profile("quick", 30, description="30 epochs, all data; epoch lengths scaled 30/300"),
        Profile("paper_cifar", PAPER_EPOCHS,
                description="the temporal ensembling paper's CIFAR-10 and SVHN protocol: 300 "
                            "epochs, all data (grid cifar10_4000; a GPU's work)"),
        Profile("smoke", 6, train_size=2000, test_size=1000,
                description="a small real slice for tests: 2,000 train / 1,000 test, 6 epochs")):
    PROFILES.add(_profile.name, _profile)


def get_profile(name: str) -> Profile:
    return PROFILES.get(name)


def profile_changes(config: RunConfig, profile: Profile) -> dict[str, Any]:
    """The profile as `{"section.key": value}` overrides of `config` (see apply_profile), so
    that a command's `--set` can join them in one checked step: `--profile smoke --set
    data.train_size=...` of a grid whose labels exceed the smoke slice is then valid."""
    scale = profile.epochs / PAPER_EPOCHS
    changes: dict[str, Any] = {"data.train_size": profile.train_size,
                               "data.test_size": profile.test_size,
                               "train.epochs": profile.epochs}
    for section_name, section in (("method", config.method), ("method", config.method.options),
                                  ("model", config.model), ("train", config.train)):
        for f in fields(section):
            if f.metadata.get("epoch_length"):
                changes[f"{section_name}.{f.name}"] = round(getattr(section, f.name) * scale)
    return changes


def apply_profile(config: RunConfig, profile: Profile) -> RunConfig:
    """Set the profile's epochs and data slice; scale every epoch-length field.

    Lengths are scaled by profile.epochs / PAPER_EPOCHS and rounded (ramp-up 80 of 300
    epochs becomes 8 of 30), so a grid written in paper units keeps its shape.
    """
    scale = profile.epochs / PAPER_EPOCHS

    def scaled(section: Any) -> Any:
        changes = {
            f.name: round(getattr(section, f.name) * scale)
            for f in fields(section)
            if f.metadata.get("epoch_length")
        }
        return replace(section, **changes)

    return replace(
        config,
        data=replace(config.data, train_size=profile.train_size, test_size=profile.test_size),
        method=replace(scaled(config.method), options=scaled(config.method.options)),
        model=scaled(config.model),
        train=replace(scaled(config.train), epochs=profile.epochs),
    )


