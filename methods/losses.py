"""Loss terms shared by methods. Shapes: R runs stacked, B samples a batch, C classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

UNLABELED = -1  # label of an unlabeled sample


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, scaling: str) -> torch.Tensor:
    """Cross-entropy over the labeled samples of each run's batch.

    logits (R, B, C), labels (R, B) with UNLABELED for unlabeled samples -> (R,).
    `scaling="labeled"` divides the summed loss by the labeled count (the blog),
    `"batch"` by the batch size B (the original authors). A batch with no label gives 0:
    the count is clamped to 1 on the device, so there is no host sync and no 0/0.
    """
    runs, batch, classes = logits.shape
    per_sample = F.cross_entropy(logits.reshape(runs * batch, classes), labels.reshape(-1),
                                 ignore_index=UNLABELED, reduction="none").view(runs, batch)
    summed = per_sample.sum(dim=1)
    if scaling == "labeled":
        return summed / (labels != UNLABELED).sum(dim=1).clamp_min(1)
    if scaling == "batch":
        return summed / batch
    raise ValueError(f"unknown supervised scaling {scaling!r}")


def softmax_mse(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences of softmax(logits) and target probabilities / (B * C).

    logits, target_probs (R, B, C) -> (R,). The blog's `mse_loss`: summed over the batch,
    divided by the number of elements B*C.
    """
    _, batch, classes = logits.shape
    diff = torch.softmax(logits, dim=-1) - target_probs
    return diff.pow(2).sum(dim=(1, 2)) / (batch * classes)
