"""Method contract tests, parametrized over the registry, and hand-checked state updates."""

import pytest
import torch

from bench.config import MethodConfig
from methods import Batch, MethodContext, get_method, method_names


def context(name: str, **changes) -> MethodContext:
    return MethodContext(config=MethodConfig(name=name, **changes), num_runs=2, num_train=6,
                         num_classes=3, num_labels=2, device=torch.device("cpu"))


def batch() -> Batch:
    return Batch(indices=torch.tensor([[0, 1, 2], [3, 4, 5]]),
                 labels=torch.tensor([[1, -1, -1], [-1, 2, -1]]))


@pytest.mark.parametrize("name", method_names())
def test_contract_finite_losses_of_the_right_shape(name):
    method = get_method(name)(context(name))
    logits = torch.randn(2, 3, 3, requires_grad=True)
    for epoch in range(3):
        losses = method.losses(logits, batch(), epoch)
        assert losses.supervised.shape == (2,) and losses.unsupervised.shape == (2,)
        assert torch.isfinite(losses.supervised).all() and torch.isfinite(losses.unsupervised).all()
        method.end_epoch(epoch)


@pytest.mark.parametrize("name", [n for n in method_names() if get_method(n).uses_unlabeled])
def test_contract_unsupervised_term_reaches_the_student(name):
    method = get_method(name)(context(name))
    for epoch in range(2):  # epoch 0 fills the targets
        logits = torch.randn(2, 3, 3, requires_grad=True)
        losses = method.losses(logits, batch(), epoch)
        method.end_epoch(epoch)
    (grad,) = torch.autograd.grad(losses.unsupervised.sum(), logits)
    assert grad.abs().sum() > 0
    assert method.weight(1) > 0 and method.weight(0) == 0


def test_supervised_has_no_unsupervised_term():
    method = get_method("supervised")(context("supervised"))
    losses = method.losses(torch.randn(2, 3, 3), batch(), 5)
    assert losses.unsupervised.abs().sum() == 0 and method.weight(50) == 0


@pytest.mark.parametrize("target", ["raw", "prob"])
def test_temporal_ensemble_bias_correction_hand_computed(target):
    a = 0.6
    method = get_method("temporal_ensembling")(context("temporal_ensembling",
                                                       ensemble_momentum=a, ensemble_target=target))
    z1 = torch.randn(2, 3, 3)
    z2 = torch.randn(2, 3, 3)
    stored = (lambda z: torch.softmax(z, -1)) if target == "prob" else (lambda z: z)
    method.losses(z1, batch(), 0)
    method.end_epoch(0)
    # After one epoch: Z = (1 - a) z1, target = Z / (1 - a) = z1 (for the visited samples).
    assert torch.allclose(method.targets[:, :3][0], stored(z1)[0], atol=1e-6)
    assert torch.allclose(method.targets[1, 3:], stored(z1)[1], atol=1e-6)
    method.losses(z2, batch(), 1)
    method.end_epoch(1)
    expected = (a * (1 - a) * stored(z1) + (1 - a) * stored(z2)) / (1 - a**2)
    assert torch.allclose(method.targets[0, :3], expected[0], atol=1e-6)
    assert torch.allclose(method.targets[1, 3:], expected[1], atol=1e-6)


def test_ensemble_target_switch_changes_the_unsupervised_loss():
    losses = {}
    for target in ("raw", "prob"):
        torch.manual_seed(0)
        method = get_method("temporal_ensembling")(context("temporal_ensembling",
                                                           ensemble_target=target))
        outputs = [torch.randn(2, 3, 3) * 3 for _ in range(3)]
        for epoch in range(2):
            method.losses(outputs[epoch], batch(), epoch)
            method.end_epoch(epoch)
        losses[target] = method.losses(outputs[2], batch(), 2).unsupervised
    # After one epoch both targets are softmax(z1) (the bias correction is exact); from the
    # second on, softmax of averaged logits differs from averaged softmaxes.
    assert not torch.allclose(losses["raw"], losses["prob"])
