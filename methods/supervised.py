"""Supervised-only baseline: the identical pipeline with the unsupervised term removed."""

from __future__ import annotations

import torch

from methods.base import Batch, Method, StepLosses
from methods.registry import register


@register("supervised")
class Supervised(Method):
    uses_unlabeled = False

    def losses(self, logits: torch.Tensor, batch: Batch, epoch: int) -> StepLosses:
        supervised = self.supervised(logits, batch)
        return StepLosses(supervised=supervised, unsupervised=torch.zeros_like(supervised))
