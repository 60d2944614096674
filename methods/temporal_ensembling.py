"""Temporal ensembling (Laine & Aila, ICLR 2017), as the blog ran it, matched by sample index.

Per-sample ensemble Z (R, N, C): after each epoch Z = a Z + (1 - a) z, z the epoch's outputs
of every sample; the target is Z / (1 - a^t) (startup bias correction, t epochs done).
The unsupervised loss compares softmax(current outputs) with the target's probabilities:
softmax(target) when raw outputs are ensembled (the blog's code), the target itself when
softmax probabilities are (the paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from sslbench.methods.base import Batch, Method, MethodContext, StepLosses
from sslbench.methods.losses import softmax_mse
from sslbench.methods.registry import register


@dataclass(frozen=True)
class TemporalEnsemblingOptions:
    # Z = a Z + (1 - a) z after each epoch: a = ensemble_momentum.
    ensemble_momentum: float = 0.6
    # What is ensembled: raw outputs (the blog's code) or softmax probabilities (the paper).
    ensemble_target: Literal["raw", "prob"] = "raw"

    def __post_init__(self) -> None:
        if not 0 <= self.ensemble_momentum < 1:
            raise ValueError(f"method.ensemble_momentum must be in [0, 1), "
                             f"got {self.ensemble_momentum}")


@register("temporal_ensembling")
class TemporalEnsembling(Method):
    Options = TemporalEnsemblingOptions
    description = "per-sample ensemble of past epochs' outputs as the target (Laine & Aila)"
    options: TemporalEnsemblingOptions

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        shape = (context.num_runs, context.num_train, context.num_classes)
        self.ensemble = torch.zeros(shape, device=context.device)  # Z
        self.targets = torch.zeros(shape, device=context.device)  # Z / (1 - a^t)
        self.epoch_outputs = torch.zeros(shape, device=context.device)  # z of this epoch
        self.epochs_done = 0
        self.ensemble_probs = self.options.ensemble_target == "prob"

    def losses(self, logits: torch.Tensor, batch: Batch, epoch: int) -> StepLosses:
        classes = logits.shape[-1]
        index = batch.indices.unsqueeze(-1).expand(-1, -1, classes)  # (R, B, C)
        outputs = logits.detach()
        self.epoch_outputs.scatter_(
            1, index, torch.softmax(outputs, dim=-1) if self.ensemble_probs else outputs)
        target = self.targets.gather(1, index)
        target_probs = target if self.ensemble_probs else torch.softmax(target, dim=-1)
        return StepLosses(supervised=self.supervised(logits, batch),
                          unsupervised=softmax_mse(logits, target_probs))

    def end_epoch(self, epoch: int) -> None:
        momentum = self.options.ensemble_momentum
        self.ensemble.mul_(momentum).add_(self.epoch_outputs, alpha=1.0 - momentum)
        self.epochs_done += 1
        torch.div(self.ensemble, 1.0 - momentum**self.epochs_done, out=self.targets)

    def state_dict(self) -> dict[str, Any]:
        return {"ensemble": self.ensemble, "targets": self.targets,
                "epoch_outputs": self.epoch_outputs, "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ensemble.copy_(state["ensemble"])
        self.targets.copy_(state["targets"])
        self.epoch_outputs.copy_(state["epoch_outputs"])
        self.epochs_done = int(state["epochs_done"])
