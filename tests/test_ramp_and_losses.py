import math

import pytest
import torch

from sslbench.methods.losses import softmax_mse, supervised_loss
from sslbench.methods.ramp import ramp_up, unsupervised_weight

BLOG = {"w_max": 30.0, "ramp_epochs": 80, "shape": 5.0, "num_labels": 100, "num_train": 60000}


def test_weight_schedule_hand_values():
    assert unsupervised_weight(0, **BLOG) == 0.0
    assert unsupervised_weight(80, **BLOG) == pytest.approx(0.05)
    assert unsupervised_weight(300, **BLOG) == pytest.approx(0.05)
    # t = 40: 0.05 * exp(-5 * 0.5^2) = 0.05 * 0.2865048 = 0.01432524
    assert unsupervised_weight(40, **BLOG) == pytest.approx(0.01432524, rel=1e-6)


def test_no_ramp_gives_full_weight_from_epoch_one():
    assert ramp_up(0, 0) == 0.0
    assert ramp_up(1, 0) == 1.0


def test_supervised_scaling_hand_values():
    # Run 0: one labeled sample of two; run 1: none labeled.
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    labels = torch.tensor([[-1, 0], [-1, -1]])
    ce = math.log(1 + math.exp(-2.0))  # CE of logits (2, 0) with label 0 = 0.126928
    by_labeled = supervised_loss(logits, labels, "labeled")
    by_batch = supervised_loss(logits, labels, "batch")
    assert by_labeled.tolist() == pytest.approx([ce, 0.0])
    assert by_batch.tolist() == pytest.approx([ce / 2, 0.0])
    assert torch.isfinite(by_labeled).all()  # an unlabeled batch: 0, not 0/0


def test_softmax_mse_hand_value():
    logits = torch.zeros(1, 2, 2)  # softmax = (0.5, 0.5) for both samples
    target = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    # squared diffs: 0.25 + 0.25 + 0 + 0 = 0.5, divided by B*C = 4
    assert softmax_mse(logits, target).tolist() == pytest.approx([0.125])
