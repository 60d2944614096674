"""The run configuration: frozen, typed dataclasses with a stable hash as the run id.

A config is built in layers, each a small, checked step:
    defaults (the blog's paper protocol)  ->  grid variant overrides (paper units)
    ->  profile (epochs, data slice; epoch-based lengths scaled)  ->  `--set key=value`.
Unknown keys and values of the wrong type are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal

from sslbench.bench.errors import ConfigError
from sslbench.methods.base import EPOCH_LENGTH
from sslbench.methods.registry import Registry

FLOAT32_MAX = 3.4028234663852886e38

# The blog's protocol length; epoch-based lengths in grids are written in these units.
PAPER_EPOCHS = 300

Normalization = Literal["channelwise", "pixelwise"]
Activation = Literal["relu", "leaky_relu"]
SupervisedScaling = Literal["labeled", "batch"]
Precision = Literal["fp32", "bf16", "auto"]  # see bench.precision
Batches = Literal["all", "fixed", "labeled"]  # see bench.sampling


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    num_labels: int = 100  # labeled training images, balanced over classes
    train_size: int | None = None  # first N training images (None: all 60,000)
    test_size: int | None = None  # first N test images (None: all 10,000)
    val_size: int = 0  # held out of the training images, for searches; never the test set
    normalization: Normalization = "channelwise"
    # Floor on the per-pixel std (pixel units in [0, 1]) for pixelwise normalization:
    # border pixels are always 0 (std 0) and near-border ones almost always, which a plain
    # division would blow up by factors of 100 or more.
    pixel_std_floor: float = 0.1
    # Augmentation of training passes, on the device, drawn per sample (off in the control):
    # a random translation by up to this many pixels in each direction (0: off; the
    # original code used 2), and a random horizontal flip (off for digits).
    translate_px: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        from sslbench.bench.core.datasets import DATASETS

        _check(self.dataset in DATASETS, f"unknown dataset {self.dataset!r}; choose one of: "
                                         f"{', '.join(DATASETS.names())}")
        _check(self.num_labels > 0, f"data.num_labels must be > 0, got {self.num_labels}")
        spec = DATASETS.get(self.dataset)
        classes = spec.num_classes
        _check(self.num_labels % classes == 0,
               f"data.num_labels={self.num_labels} must be divisible by the {classes} classes "
               f"for a balanced split")
        total = spec.num_train
        _check(self.train_size is None or self.train_size <= total,
               f"data.train_size={self.train_size} exceeds the {total} training images of "
               f"{self.dataset}")
        available = self.train_size or total
        _check(self.num_labels + self.val_size <= available,
               f"data.num_labels={self.num_labels} plus data.val_size={self.val_size} exceeds "
               f"the {available} training images; use fewer or a larger data.train_size")
        _check(self.train_size is None or self.train_size > 0,
               f"data.train_size must be > 0 or none, got {self.train_size}")
        _check(self.test_size is None or self.test_size > 0,
               f"data.test_size must be > 0 or none, got {self.test_size}")
        _check(self.val_size >= 0, f"data.val_size must be >= 0, got {self.val_size}")
        _check(self.pixel_std_floor > 0,
               f"data.pixel_std_floor must be > 0, got {self.pixel_std_floor}")
        _check(0 <= self.translate_px <= 8,
               f"data.translate_px must be in 0..8 pixels, got {self.translate_px}")


@dataclass(frozen=True)
class ModelConfig:
    conv1_channels: int = 16
    conv2_channels: int = 32
    input_noise_std: float = 0.15  # Gaussian noise on normalized inputs, training only
    dropout: float = 0.5
    weight_norm: bool = True
    # The blog's suggested model tweaks: leaky ReLU (slope 0.1 in the original code) and
    # wider layers (conv1_channels / conv2_channels).
    activation: Activation = "relu"
    leaky_slope: float = 0.1

    def __post_init__(self) -> None:
        _check(self.conv1_channels > 0 and self.conv2_channels > 0,
               "model.conv1_channels and model.conv2_channels must be > 0")
        _check(self.input_noise_std >= 0,
               f"model.input_noise_std must be >= 0, got {self.input_noise_std}")
        _check(0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout}")
        _check(0 <= self.leaky_slope < 1,
               f"model.leaky_slope must be in [0, 1), got {self.leaky_slope}")


@dataclass(frozen=True)
class MethodConfig:
    """The knobs every method reads, and the method's own in `options` (an instance of its
    `Options` dataclass, beside its math in methods/<name>.py). Stored and set flat:
    `method.ensemble_momentum`, never `method.options.ensemble_momentum`."""

    name: str = "temporal_ensembling"
    # Unsupervised weight w(t) = w_max * k/N * exp(-ramp_shape (1 - t/T)^2), T = ramp_epochs.
    w_max: float = 30.0
    ramp_epochs: int = field(default=80, metadata=EPOCH_LENGTH)
    ramp_shape: float = 5.0
    # Supervised cross-entropy divided by the labeled count in the batch (blog) or by the
    # batch size (the original authors).
    supervised_scaling: SupervisedScaling = "labeled"
    options: Any = None  # none: the method's Options at their defaults

    def __post_init__(self) -> None:
        from sslbench.methods import (  # the registry; imported late (methods imports bench)
            get_method,
            method_names,
        )

        _check(self.name in method_names(),
               f"unknown method {self.name!r}; choose one of: {', '.join(method_names())}")
        _check(self.w_max >= 0, f"method.w_max must be >= 0, got {self.w_max}")
        _check(self.ramp_epochs >= 0, f"method.ramp_epochs must be >= 0, got {self.ramp_epochs}")
        options_cls = get_method(self.name).Options
        if self.options is None:
            object.__setattr__(self, "options", options_cls())  # frozen: set once, here
        _check(type(self.options) is options_cls,
               f"method.options of {self.name} must be a {options_cls.__name__}, "
               f"got {type(self.options).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The stored, flat form: the shared knobs, then the method's own."""
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        return {**shared, **dataclasses.asdict(self.options)}


# The shared knobs of the method section (everything but the method's own options).
SHARED_METHOD_KEYS = tuple(f.name for f in fields(MethodConfig) if f.name != "options")

# Before methods owned their knobs, every config's method section held all of these; run ids
# hash them at these defaults for a method that lacks them, so stored ids stay unchanged
# (tests/test_config.py's golden ids). A stored config that sets one its method lacks to
# anything else was never written by this harness's grids and is refused when read.
LEGACY_METHOD_KEYS: dict[str, object] = {
    "ensemble_momentum": 0.6, "ensemble_target": "raw",  # temporal_ensembling's
    "ema_decay": 0.99, "ema_decay_after_ramp": None}  # mean_teacher's


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = PAPER_EPOCHS
    batch_size: int = 100
    lr: float = 0.002
    beta1: float = 0.9
    beta2: float = 0.99
    # Arithmetic of the training passes: fp32, bf16 (autocast) or auto (bf16 where the
    # device computes it natively). See bench.precision.
    precision: Precision = "fp32"
    # Execution switches that leave the math alone (see bench.compiled): torch.compile of the
    # network, and CUDA graphs of it (CUDA only; implies compile).
    compile: bool = False
    cuda_graphs: bool = False
    # The whole step (forward, losses, backward, Adam, the method's updates) as one CUDA
    # graph per epoch, randomness drawn outside it (bench.graphed); on the CPU the same
    # static-buffer step runs eagerly. Excludes compile and cuda_graphs (those graph the
    # network alone).
    step_graph: bool = False
    # Which images each batch holds (bench.sampling): a plain shuffle of all of them (the
    # blog), `labeled_per_batch` labeled ones in every batch (mean teacher's sampler), or the
    # labeled ones alone (the classic supervised baseline).
    batches: Batches = "all"
    labeled_per_batch: int = 10
    # Optimizer steps per epoch; none: ceil(training images / batch size), the SSL
    # pipeline's count, so that every method and composition gets the same steps.
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        _check(self.epochs > 0, f"train.epochs must be > 0, got {self.epochs}")
        _check(self.labeled_per_batch > 0,
               f"train.labeled_per_batch must be > 0, got {self.labeled_per_batch}")
        _check(self.steps_per_epoch is None or self.steps_per_epoch > 0,
               f"train.steps_per_epoch must be > 0 or none, got {self.steps_per_epoch}")
        _check(self.batch_size > 0, f"train.batch_size must be > 0, got {self.batch_size}")
        _check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
               "train.beta1 and train.beta2 must be in [0, 1)")
        _check(not (self.step_graph and (self.compile or self.cuda_graphs)),
               "train.step_graph captures the whole step itself; drop train.compile and "
               "train.cuda_graphs, which compile the network alone")


# Fields added after the first stores were written, with the value that computes what the
# code did before they existed: left out of the run id at that value (see config_hash).
LATER_FIELDS: dict[tuple[str, str], object] = {
    ("train", "precision"): "fp32", ("train", "compile"): False, ("train", "cuda_graphs"): False,
    ("train", "batches"): "all", ("train", "labeled_per_batch"): 10,
    ("train", "steps_per_epoch"): None, ("train", "step_graph"): False}

# Methods renamed after stores were written: the run id hashes the old name, so stored
# cells keep their ids. `supervised` meant the SSL pipeline with the consistency term
# removed until the classic baseline (the labeled images alone) took the name; that
# baseline always has train.batches=labeled in its id, so the two never share one.
HASHED_AS: dict[str, str] = {"supervised_pipeline": "supervised"}


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        from sslbench.methods import get_method

        method = get_method(self.method.name)
        if method.labeled_only:
            _check(self.train.batches == "labeled",
                   f"method {self.method.name} trains on the labeled images alone "
                   f"(train.batches=labeled); the SSL pipeline over all images without the "
                   f"consistency term is method supervised_pipeline")
        else:
            _check(self.train.batches != "labeled",
                   f"train.batches=labeled trains on the labeled images alone, which only "
                   f"the supervised baseline does; method {self.method.name} needs all or fixed")

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "data": dataclasses.asdict(self.data),
                "model": dataclasses.asdict(self.model), "method": self.method.to_dict(),
                "train": dataclasses.asdict(self.train)}

    def config_hash(self) -> str:
        """Stable id of the run: the same config and seed always hash the same.

        Fields added after stores were written (LATER_FIELDS) are left out while they hold
        the value that reproduces the older code, so existing stores keep their run ids.
        """
        values = self.to_dict()
        values["method"] = {**LEGACY_METHOD_KEYS, **values["method"],
                            "name": HASHED_AS.get(self.method.name, self.method.name)}
        for (section, name), old_behaviour in LATER_FIELDS.items():
            if values[section][name] == old_behaviour:
                del values[section][name]
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Profiles: protocol lengths and data slices.


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
        Profile("smoke", 6, train_size=2000, test_size=1000,
                description="a small real slice for tests: 2,000 train / 1,000 test, 6 epochs")):
    PROFILES.add(_profile.name, _profile)


def get_profile(name: str) -> Profile:
    return PROFILES.get(name)


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


# ---------------------------------------------------------------------------------------
# Overrides: `section.key=value`, type-checked against the dataclass field types.


def _section_types(section_cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


def method_key_types(method: str) -> dict[str, Any]:
    """The method section's keys for `method` with their types: the shared ones, then the
    method's own (its Options)."""
    from sslbench.methods import get_method

    shared = {k: v for k, v in _section_types(MethodConfig).items() if k != "options"}
    return {**shared, **typing.get_type_hints(get_method(method).Options)}


def _methods_owning(key: str) -> list[str]:
    from sslbench.methods import get_method, method_names

    return [m for m in method_names() if key in typing.get_type_hints(get_method(m).Options)]


def all_keys(method: str | None = None) -> list[str]:
    """Every settable key, e.g. `train.lr`; the method section's for `method`, or those of
    every registered method when it is None."""
    from sslbench.methods import method_names

    keys = ["seed"]
    for name, section_cls in _section_types(RunConfig).items():
        if name == "method":
            names = dict.fromkeys(k for m in ([method] if method else method_names())
                                  for k in method_key_types(m))
            keys += [f"method.{k}" for k in names]
        elif is_dataclass(section_cls):
            keys += [f"{name}.{f.name}" for f in fields(section_cls)]
    return keys


def _parse_value(key: str, text: str, annotation: Any) -> Any:
    """Parse `text` as a value of `annotation` (int, float, bool, str, Literal, X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if type(None) in options and text.lower() in ("none", "null", "all"):
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _parse_value(key, text, inner)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if text not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}; got {text!r}")
        return text
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false; got {text!r}")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key} must be an integer; got {text!r}") from None
    if annotation is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{key} must be a number; got {text!r}") from None
        # Training runs in float32: a value past its range overflows inside the step.
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise ConfigError(f"{key} must be a finite number within float32's range "
                              f"(|x| <= {FLOAT32_MAX:.3g}); got {text!r}")
        return value
    if annotation is str:
        return text
    raise ConfigError(f"{key} has a type that cannot be set from the command line")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Accept a string (command line) or a Python value (grid module) for a field."""
    if isinstance(value, str):
        text = value
    elif value is None:
        text = "none"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return _parse_value(key, text, annotation)


def with_overrides(config: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Return `config` with `{"section.key": value}` applied; values may be strings.

    Raises ConfigError for unknown keys, wrong types and impossible values.
    """
    sections: dict[str, dict[str, Any]] = {}
    method_changes: dict[str, Any] = {}
    top: dict[str, Any] = {}
    run_types = _section_types(RunConfig)
    for key, raw in overrides.items():
        if key == "seed":
            top["seed"] = _coerce(key, raw, int)
            continue
        section, _, name = key.partition(".")
        if section == "method" and name:
            method_changes[name] = raw  # applied together: a new name brings its own keys
            continue
        section_cls = run_types.get(section)
        if not name or section_cls is None or not is_dataclass(section_cls):
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(all_keys())}")
        field_types = _section_types(section_cls)
        if name not in field_types:
            raise ConfigError(f"unknown config key {key!r}; valid keys in {section}: "
                              f"{', '.join(f'{section}.{n}' for n in field_types)}")
        sections.setdefault(section, {})[name] = _coerce(key, raw, field_types[name])
    updated = {s: replace(getattr(config, s), **changes) for s, changes in sections.items()}
    if method_changes:
        updated["method"] = _method_with(config.method, method_changes)
    return replace(config, **top, **updated)


def _method_with(method: MethodConfig, changes: Mapping[str, Any]) -> MethodConfig:
    """`method` with `{key: value}` applied; a new `name` starts from that method's own
    Options at their defaults, and only its keys (and the shared ones) may be set."""
    from sslbench.methods import get_method, method_names

    name = method.name
    if "name" in changes:
        name = _coerce("method.name", changes["name"], str)
        _check(name in method_names(),
               f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
    key_types = method_key_types(name)
    shared: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, raw in changes.items():
        if key == "name":
            continue
        if key not in key_types:
            owners = _methods_owning(key)
            whose = f"; method.{key} is a knob of {', '.join(owners)}" if owners else ""
            raise ConfigError(f"unknown config key 'method.{key}' for method {name}; its keys: "
                              f"{', '.join(f'method.{k}' for k in key_types)}{whose}")
        value = _coerce(f"method.{key}", raw, key_types[key])
        (shared if key in SHARED_METHOD_KEYS else own)[key] = value
    options = method.options if name == method.name else get_method(name).Options()
    try:
        options = replace(options, **own)
    except ValueError as error:  # the method's own check (methods import no ConfigError)
        raise ConfigError(str(error)) from None
    return replace(method, name=name, options=options, **shared)


# Keys a command sets itself, and the flag that does: `--set` may not change them, or a
# grid of seeds 0..4 would train seed 5 five times, and a console line would disagree with
# the record.
OWNED_KEYS = {"seed": "--seed (run) or --seeds (ablate, search)",
              "method.name": "--method (run), the grid's variants (ablate) or --space (search)"}


def parse_set_args(items: Iterable[str]) -> dict[str, str]:
    """Parse `--set key=value` items into a dict, rejecting malformed ones and the keys
    the command owns (OWNED_KEYS)."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r} (e.g. --set train.lr=0.001)")
        if key.strip() in OWNED_KEYS:
            raise ConfigError(f"--set {key.strip()} is not allowed: the command sets it; use "
                              f"{OWNED_KEYS[key.strip()]}")
        parsed[key.strip()] = value.strip()
    return parsed


def legacy_method_name(config: Mapping[str, Any]) -> str:
    """The method a stored config dict means today: a config stored before train.batches
    existed with method `supervised` is the SSL pipeline baseline, `supervised_pipeline`."""
    name = str(config.get("method", {}).get("name", ""))
    if name == "supervised" and "batches" not in config.get("train", {}):
        return "supervised_pipeline"
    return name


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `RunConfig.to_dict()` output (as stored in a record); a
    config stored under an older meaning of its method name gets today's name."""
    data = {**data, "method": {**data.get("method", {}), "name": legacy_method_name(data)}}
    run_types = _section_types(RunConfig)
    kwargs: dict[str, Any] = {"seed": int(data["seed"])}
    for name, section_cls in run_types.items():
        if name == "seed":
            continue
        if name == "method":
            kwargs[name] = _method_from_dict(data.get(name, {}))
            continue
        known = {f.name for f in fields(section_cls)}
        unknown = set(data.get(name, {})) - known
        if unknown:
            raise ConfigError(f"stored config has unknown keys {sorted(unknown)} in {name}")
        kwargs[name] = section_cls(**data.get(name, {}))
    return RunConfig(**kwargs)


def _method_from_dict(stored: Mapping[str, Any]) -> MethodConfig:
    """The method section of a stored config: the shared keys, the method's own, and the
    old all-methods keys at their defaults (left out: they meant nothing for this method)."""
    from sslbench.methods import get_method, method_names

    name = str(stored.get("name", MethodConfig.name))
    _check(name in method_names(),
           f"stored config names unknown method {name!r}; choose one of: "
           f"{', '.join(method_names())} (or load the plugin that registers it: --plugin)")
    options_cls = get_method(name).Options
    own_keys = typing.get_type_hints(options_cls)
    shared: dict[str, Any] = {}
    own: dict[str, Any] = {}
    unknown = []
    for key, value in stored.items():
        if key == "name":
            continue
        if key in SHARED_METHOD_KEYS:
            shared[key] = value
        elif key in own_keys:
            own[key] = value
        elif key not in LEGACY_METHOD_KEYS or value != LEGACY_METHOD_KEYS[key]:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"stored config has unknown keys {sorted(unknown)} in method "
                          f"(for method {name})")
    try:
        options = options_cls(**own)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return MethodConfig(name=name, options=options, **shared)


def build_config(method: str, seed: int, profile: str,
                 overrides: Mapping[str, Any] | None = None,
                 variant_overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults -> the method's defaults -> variant overrides (paper units) -> profile ->
    `--set` overrides."""
    from sslbench.methods import get_method, method_names

    _check(method in method_names(),
           f"unknown method {method!r}; choose one of: {', '.join(method_names())}")
    # One step: a method's own defaults (the classic baseline's train.batches=labeled) must
    # arrive with its name, or the config in between would be refused.
    config = with_overrides(RunConfig(seed=seed),
                            {"method.name": method, **get_method(method).default_overrides})
    config = with_overrides(config, variant_overrides or {})
    config = apply_profile(config, get_profile(profile))
    return with_overrides(config, overrides or {})
