"""The unsupervised weight schedule of Laine & Aila (2017), as the blog ran it."""

from __future__ import annotations

import math


def ramp_up(epoch: int, ramp_epochs: int, shape: float = 5.0) -> float:
    """exp(-shape (1 - t/T)^2) for 0 < t < T; 0 at t = 0; 1 from t = T on.

    `epoch` counts from 0. With T = 0 the full weight applies from epoch 1 (the degenerate
    schedule the paper warns about); epoch 0 always gets 0, since its targets are empty.
    """
    if epoch <= 0:
        return 0.0
    if epoch >= ramp_epochs:
        return 1.0
    return math.exp(-shape * (1.0 - epoch / ramp_epochs) ** 2)


def unsupervised_weight(epoch: int, *, w_max: float, ramp_epochs: int, shape: float,
                        num_labels: int, num_train: int) -> float:
    """w(t) = w_max * k/N * ramp_up(t): the max weight is scaled by the labeled fraction k/N."""
    return w_max * num_labels / num_train * ramp_up(epoch, ramp_epochs, shape)
