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
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from sslbench.bench.core.legacy import (
    HASHED_AS,
    LATER_FIELDS,
    LEGACY_METHOD_KEYS,
    legacy_method_name,
)
from sslbench.bench.errors import ConfigError
from sslbench.methods import get_method, method_names
from sslbench.methods.base import EPOCH_LENGTH

FLOAT32_MAX = 3.4028234663852886e38

# The blog's protocol length; epoch-based lengths in grids are written in these units.
PAPER_EPOCHS = 300

Normalization = Literal["channelwise", "pixelwise"]
Activation = Literal["relu", "leaky_relu"]
SupervisedScaling = Literal["labeled", "batch"]
Precision = Literal["fp32", "bf16", "auto"]  # see bench.precision
Batches = Literal["all", "fixed", "labeled"]  # see bench.sampling


def check(condition: bool, message: str) -> None:
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
        from sslbench.bench.core.datasets import (
            DATASETS,
            FILE_DATASETS,
            canonical_file_dataset,
            get_dataset,
            is_dataset,
        )

        check(is_dataset(self.dataset), f"unknown dataset {self.dataset!r}; choose one of: "
                                         f"{', '.join(DATASETS.names())}, npz:PATH or "
                                         f"folder:PATH (or load the plugin that registers "
                                         f"it: --plugin)")
        if self.dataset.startswith(FILE_DATASETS):  # the path absolute and the content's
            # fingerprint: the same run id from any directory, a new one for new content.
            object.__setattr__(self, "dataset", canonical_file_dataset(self.dataset))
        check(self.num_labels > 0, f"data.num_labels must be > 0, got {self.num_labels}")
        spec = get_dataset(self.dataset)
        if spec.num_classes is not None and spec.num_train is not None:
            check_data_sizes(self, spec.num_classes, spec.num_train)  # else once read
        check(not self.hflip or spec.hflip,
               f"data.hflip: a horizontal flip does not suit {self.dataset} (a mirrored digit "
               f"is not that digit); leave it off")
        check(self.train_size is None or self.train_size > 0,
               f"data.train_size must be > 0 or none, got {self.train_size}")
        check(self.test_size is None or self.test_size > 0,
               f"data.test_size must be > 0 or none, got {self.test_size}")
        check(self.val_size >= 0, f"data.val_size must be >= 0, got {self.val_size}")
        check(self.pixel_std_floor > 0,
               f"data.pixel_std_floor must be > 0, got {self.pixel_std_floor}")
        check(0 <= self.translate_px <= 8,
               f"data.translate_px must be in 0..8 pixels, got {self.translate_px}")


def check_data_sizes(data: DataConfig, num_classes: int, num_train: int) -> None:
    """The labeled count, slice and validation split against the dataset's classes and
    training images (ConfigError, one line)."""
    check(num_classes > 0, f"dataset {data.dataset} has no classes")
    check(data.num_labels % num_classes == 0,
           f"data.num_labels={data.num_labels} must be divisible by the {num_classes} classes "
           f"for a balanced split")
    check(data.train_size is None or data.train_size <= num_train,
           f"data.train_size={data.train_size} exceeds the {num_train} training images of "
           f"{data.dataset}")
    available = data.train_size or num_train
    check(data.num_labels + data.val_size <= available,
           f"data.num_labels={data.num_labels} plus data.val_size={data.val_size} exceeds "
           f"the {available} training images; use fewer or a larger data.train_size")


@dataclass(frozen=True)
class ModelConfig:
    # The network (bench.core.networks): the blog's 2-conv `cnn`, the paper's `conv_large`,
    # or one a plugin registers. conv1_channels, conv2_channels, weight_norm and activation
    # are the cnn's; input_noise_std, dropout and leaky_slope every built-in network's.
    name: str = "cnn"
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
        from sslbench.bench.core.networks import NETWORKS

        check(self.name in NETWORKS, f"unknown model {self.name!r}; choose one of: "
                                      f"{', '.join(NETWORKS.names())} (or load the plugin "
                                      f"that registers it: --plugin)")
        check(self.conv1_channels > 0 and self.conv2_channels > 0,
               "model.conv1_channels and model.conv2_channels must be > 0")
        check(self.input_noise_std >= 0,
               f"model.input_noise_std must be >= 0, got {self.input_noise_std}")
        check(0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout}")
        check(0 <= self.leaky_slope < 1,
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
        check(self.name in method_names(),
               f"unknown method {self.name!r}; choose one of: {', '.join(method_names())}")
        check(self.w_max >= 0, f"method.w_max must be >= 0, got {self.w_max}")
        check(self.ramp_epochs >= 0, f"method.ramp_epochs must be >= 0, got {self.ramp_epochs}")
        options_cls = get_method(self.name).Options
        if self.options is None:
            object.__setattr__(self, "options", options_cls())  # frozen: set once, here
        check(type(self.options) is options_cls,
               f"method.options of {self.name} must be a {options_cls.__name__}, "
               f"got {type(self.options).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The stored, flat form: the shared knobs, then the method's own."""
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        return {**shared, **dataclasses.asdict(self.options)}


# The shared knobs of the method section (everything but the method's own options).
SHARED_METHOD_KEYS = tuple(f.name for f in fields(MethodConfig) if f.name != "options")

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
        check(self.epochs > 0, f"train.epochs must be > 0, got {self.epochs}")
        check(self.labeled_per_batch > 0,
               f"train.labeled_per_batch must be > 0, got {self.labeled_per_batch}")
        check(self.steps_per_epoch is None or self.steps_per_epoch > 0,
               f"train.steps_per_epoch must be > 0 or none, got {self.steps_per_epoch}")
        check(self.batch_size > 0, f"train.batch_size must be > 0, got {self.batch_size}")
        check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
               "train.beta1 and train.beta2 must be in [0, 1)")
        check(not (self.step_graph and (self.compile or self.cuda_graphs)),
               "train.step_graph captures the whole step itself; drop train.compile and "
               "train.cuda_graphs, which compile the network alone")


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check(self.model.name == "cnn" or not (self.train.compile or self.train.cuda_graphs
                                                or self.train.step_graph),
               f"train.compile, train.cuda_graphs and train.step_graph compile the cnn only; "
               f"model {self.model.name} runs eagerly (drop them)")
        method = get_method(self.method.name)
        if method.labeled_only:
            check(self.train.batches == "labeled",
                   f"method {self.method.name} trains on the labeled images alone "
                   f"(train.batches=labeled); the SSL pipeline over all images without the "
                   f"consistency term is method supervised_pipeline")
        else:
            check(self.train.batches != "labeled",
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




def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `RunConfig.to_dict()` output (as stored in a record); a
    config stored under an older meaning of its method name gets today's name."""
    data = {**data, "method": {**data.get("method", {}), "name": legacy_method_name(data)}}
    run_types = typing.get_type_hints(RunConfig)
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
    name = str(stored.get("name", MethodConfig.name))
    check(name in method_names(),
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


