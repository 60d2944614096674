"""The tail of one training step, shared by the eager step (bench.core.train.train_step) and
the static-buffer step that CUDA graphs capture (bench.core.graphed): one function, so the
two cannot drift apart, and tests/test_step_graph.py's bit-for-bit equality of the two keeps
meaning what it says."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sslbench.methods import StepLosses

if TYPE_CHECKING:
    from sslbench.bench.core.train import TrainState


def apply_losses(state: TrainState, losses: StepLosses, weight: torch.Tensor | float,
                 epoch: int) -> None:
    """Backward through supervised + w(t) * unsupervised, the optimizer's step, the method's
    per-step update, and the epoch's loss sums (3, R) left on the device. The gradients must
    be zeroed before (the graphed step zeroes them outside its graph)."""
    total = losses.supervised + weight * losses.unsupervised  # (R,)
    # Runs are independent: the gradient of the sum is each run's own gradient.
    total.sum().backward()
    state.optimizer.step()
    state.method.after_step(epoch)
    state.sums += torch.stack([losses.supervised, losses.unsupervised, total]).detach()
