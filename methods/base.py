"""The method contract: a method holds its math and its state, nothing else.

The training loop owns batching, the model, the optimizer and evaluation; per batch it
gives the method the student's outputs of one noisy pass and asks for the loss terms.
Every tensor carries a leading run dimension R (runs trained as one stack; one run is a
stack of one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from sslbench.methods.losses import supervised_loss
from sslbench.methods.ramp import unsupervised_weight

# Field metadata marking lengths measured in epochs: the profile scales them (a ramp of 80
# of the paper's 300 epochs is 8 of the quick profile's 30). For a method's own Options too.
EPOCH_LENGTH = {"epoch_length": True}


class MethodConfig(Protocol):
    """The knobs every method reads, and the method's own (`options`).

    bench.config.MethodConfig holds, validates and hashes them; this layer imports nothing of
    the engine."""

    @property
    def name(self) -> str: ...
    @property
    def w_max(self) -> float: ...
    @property
    def ramp_epochs(self) -> int: ...
    @property
    def ramp_shape(self) -> float: ...
    @property
    def supervised_scaling(self) -> str: ...
    @property
    def options(self) -> Any: ...  # an instance of the method's Options dataclass


@dataclass(frozen=True)
class NoOptions:
    """The Options of a method with no knobs of its own."""


@dataclass(frozen=True)
class MethodContext:
    config: MethodConfig
    num_runs: int  # R
    num_train: int  # N: training samples, indexed 0..N-1 by the batches
    num_classes: int  # C
    num_labels: int  # k: labeled samples per run
    device: torch.device
    # The student's live parameters, each (R, ...): methods read them, the optimizer owns them.
    params: Params


Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Batch:
    indices: torch.Tensor  # (R, B) int64 sample indices into the training set
    labels: torch.Tensor  # (R, B) int64, UNLABELED (-1) for unlabeled samples
    # Another training-mode pass of this batch's images through the model with the given
    # parameters, with fresh input noise and dropout: params -> logits (R, B, C).
    forward: Callable[[Params], torch.Tensor] | None = None


@dataclass(frozen=True)
class StepLosses:
    supervised: torch.Tensor  # (R,)
    unsupervised: torch.Tensor  # (R,), before the weight w(t)


class Method:
    """Base class. Subclasses register with `@register(name)` and override `losses`."""

    name: ClassVar[str] = "base"
    # Whether the method has an unsupervised term; the supervised baseline has none.
    uses_unlabeled: ClassVar[bool] = True
    # Whether its batches hold the labeled images alone (train.batches=labeled): the classic
    # supervised baseline. Every other method iterates the whole training set.
    labeled_only: ClassVar[bool] = False
    # The method's own defaults (e.g. its weight w_max), applied before grid and --set.
    default_overrides: ClassVar[dict[str, Any]] = {}
    # The method's own knobs: a frozen dataclass whose fields have defaults and types
    # (bool, int, float, str, a Literal, or X | None), set as `method.<field>` and hashed into
    # the run id. Its __post_init__ checks values and raises ValueError with a one-line
    # message naming the key (`method.<field> must be ...`). Epoch lengths: EPOCH_LENGTH.
    Options: ClassVar[type[Any]] = NoOptions
    # One line for `--help`.
    description: ClassVar[str] = ""
    # Forward passes per step: the one the trainer makes, plus each `batch.forward` call
    # (Pi-model's and mean teacher's second pass). A whole-step CUDA graph (train.step_graph)
    # draws every pass's randomness before the step, so it must know how many there are.
    forward_passes: ClassVar[int] = 1

    def __init__(self, context: MethodContext) -> None:
        self.context = context
        self.config = context.config
        self.options = context.config.options

    def weight(self, epoch: int) -> float:
        """The unsupervised weight w(t) for `epoch` (counted from 0)."""
        if not self.uses_unlabeled:
            return 0.0
        return unsupervised_weight(
            epoch, w_max=self.config.w_max, ramp_epochs=self.config.ramp_epochs,
            shape=self.config.ramp_shape, num_labels=self.context.num_labels,
            num_train=self.context.num_train)

    def supervised(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return supervised_loss(logits, batch.labels, self.config.supervised_scaling)

    def losses(self, logits: torch.Tensor, batch: Batch, epoch: int) -> StepLosses:
        """logits (R, B, C) of one noisy training pass -> the loss terms."""
        raise NotImplementedError

    def after_step(self, epoch: int) -> None:
        """Called after each optimizer step (the mean teacher's weight average)."""

    def end_epoch(self, epoch: int) -> None:
        """Called after the last step of `epoch` (counted from 0)."""

    def evaluation_params(self) -> dict[str, Params]:
        """The models to evaluate, by name; the first one gives the headline accuracy."""
        return {"student": self.context.params}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state
