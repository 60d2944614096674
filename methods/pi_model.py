"""Pi-model (Laine & Aila, ICLR 2017): two stochastic passes of each batch, with independent
input noise and dropout, pulled together by the squared difference of their softmaxes.

Both passes depend on the weights and the gradient flows through both, as in the paper's
Algorithm 1. The original code's weight is w_max = 100, scaled by k/N.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sslbench.methods.base import Batch, Method, StepLosses
from sslbench.methods.losses import softmax_mse
from sslbench.methods.registry import register


@register("pi_model")
class PiModel(Method):
    description = "two noisy passes of each batch pulled together (Laine & Aila)"
    forward_passes = 2
    default_overrides: ClassVar[dict[str, Any]] = {"method.w_max": 100.0}

    def losses(self, logits: torch.Tensor, batch: Batch, epoch: int) -> StepLosses:
        if batch.forward is None:
            raise ValueError("pi_model needs batch.forward for its second pass")
        second = torch.softmax(batch.forward(self.context.params), dim=-1)
        return StepLosses(supervised=self.supervised(logits, batch),
                          unsupervised=softmax_mse(logits, second))
