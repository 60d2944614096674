"""Method contract tests, parametrized over the registry, and hand-checked state updates.

The contract runs each method on the real model (2 stacked runs, random images), so
"the unsupervised term reaches the student" is checked on the student's parameters,
the test that a consistency loss comparing the teacher with itself would fail.
"""

import pytest
import torch

from sslbench.bench.core.config import ModelConfig, RunConfig
from sslbench.bench.core.model import forward, init_params
from sslbench.bench.core.overrides import with_overrides
from sslbench.bench.core.seeds import generator
from sslbench.methods import Batch, MethodContext, get_method, method_names

MODEL = ModelConfig()


def setup(name: str, **changes):
    params = init_params(MODEL, 10, 28, [generator(s, "init") for s in (0, 1)],
                         torch.device("cpu"))
    method_config = with_overrides(RunConfig(), {
        "method.name": name, **get_method(name).default_overrides,
        **{f"method.{k}": v for k, v in changes.items()}}).method
    context = MethodContext(config=method_config, num_runs=2, num_train=6,
                            num_classes=10, num_labels=2, device=torch.device("cpu"),
                            params=params)
    return get_method(name)(context), params


def make_batch(images=None, streams=None):
    """A batch whose extra passes draw from `streams` (fresh ones if None). Pass the same
    streams across epochs, as the trainer does, so each pass gets new noise and dropout."""
    images = torch.randn(2, 3, 1, 28, 28) if images is None else images
    noise, dropout = streams or ([generator(s, "noise") for s in (0, 1)],
                                 [generator(s, "dropout") for s in (0, 1)])

    def another_pass(params):
        return forward(params, MODEL, images, training=True, noise_gens=noise,
                       dropout_gens=dropout)

    return Batch(indices=torch.tensor([[0, 1, 2], [3, 4, 5]]),
                 labels=torch.tensor([[1, -1, -1], [-1, 2, -1]]), forward=another_pass)


@pytest.mark.parametrize("name", method_names())
def test_contract_finite_losses_of_the_right_shape(name):
    method, params = setup(name)
    for epoch in range(3):
        batch = make_batch()
        losses = method.losses(batch.forward(params), batch, epoch)
        assert losses.supervised.shape == (2,) and losses.unsupervised.shape == (2,)
        assert torch.isfinite(losses.supervised).all() and torch.isfinite(losses.unsupervised).all()
        method.after_step(epoch)
        method.end_epoch(epoch)
    assert next(iter(method.evaluation_params().values())).keys() == params.keys()


@pytest.mark.parametrize("name", [n for n in method_names() if get_method(n).uses_unlabeled])
def test_contract_unsupervised_term_gives_the_student_a_gradient(name):
    method, params = setup(name)
    images = torch.randn(2, 3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    # One set of streams for both epochs: were the epoch-1 pass a replay of epoch 0 (same
    # noise, same dropout), the ensemble target would equal the output and the gradient be 0.
    streams = ([generator(s, "noise") for s in (0, 1)], [generator(s, "dropout") for s in (0, 1)])
    for epoch in range(2):  # epoch 0 fills the temporal ensemble's targets
        batch = make_batch(images, streams)
        losses = method.losses(batch.forward(params), batch, epoch)
        method.end_epoch(epoch)
    grads = torch.autograd.grad(losses.unsupervised.sum(), list(params.values()))
    assert sum(g.abs().sum() for g in grads) > 0
    assert method.weight(1) > 0 and method.weight(0) == 0


def test_supervised_has_no_unsupervised_term():
    method, params = setup("supervised")
    batch = make_batch()
    losses = method.losses(batch.forward(params), batch, 5)
    assert losses.unsupervised.abs().sum() == 0 and method.weight(50) == 0


@pytest.mark.parametrize("target", ["raw", "prob"])
def test_temporal_ensemble_bias_correction_hand_computed(target):
    a = 0.6
    method, _ = setup("temporal_ensembling", ensemble_momentum=a, ensemble_target=target)
    z1, z2 = torch.randn(2, 3, 10), torch.randn(2, 3, 10)
    stored = (lambda z: torch.softmax(z, -1)) if target == "prob" else (lambda z: z)
    batch = make_batch()
    method.losses(z1, batch, 0)
    method.end_epoch(0)
    # After one epoch: Z = (1 - a) z1, target = Z / (1 - a) = z1 (for the visited samples).
    assert torch.allclose(method.targets[0, :3], stored(z1)[0], atol=1e-6)
    assert torch.allclose(method.targets[1, 3:], stored(z1)[1], atol=1e-6)
    method.losses(z2, batch, 1)
    method.end_epoch(1)
    expected = (a * (1 - a) * stored(z1) + (1 - a) * stored(z2)) / (1 - a**2)
    assert torch.allclose(method.targets[0, :3], expected[0], atol=1e-6)
    assert torch.allclose(method.targets[1, 3:], expected[1], atol=1e-6)


def test_ensemble_target_switch_changes_the_unsupervised_loss():
    losses = {}
    outputs = [torch.randn(2, 3, 10) * 3 for _ in range(3)]
    for target in ("raw", "prob"):
        method, _ = setup("temporal_ensembling", ensemble_target=target)
        batch = make_batch()
        for epoch in range(2):
            method.losses(outputs[epoch], batch, epoch)
            method.end_epoch(epoch)
        losses[target] = method.losses(outputs[2], batch, 2).unsupervised
    # After one epoch both targets are softmax(z1) (the bias correction is exact); from the
    # second on, softmax of averaged logits differs from averaged softmaxes.
    assert not torch.allclose(losses["raw"], losses["prob"])


def test_mean_teacher_is_the_exponential_average_of_the_student():
    method, params = setup("mean_teacher", ema_decay=0.9, ema_decay_after_ramp=0.99,
                           ramp_epochs=5)
    start = {k: v.detach().clone() for k, v in params.items()}
    with torch.no_grad():
        for tensor in params.values():
            tensor.add_(1.0)  # as if the optimizer moved every weight by +1
    method.after_step(epoch=0)
    for name, teacher in method.teacher.items():
        # teacher = 0.9 * start + 0.1 * (start + 1) = start + 0.1
        assert torch.allclose(teacher, start[name] + 0.1, atol=1e-6)
    method.after_step(epoch=5)  # after the ramp-up: decay 0.99
    for name, teacher in method.teacher.items():
        expected = 0.99 * (start[name] + 0.1) + 0.01 * (start[name] + 1)
        assert torch.allclose(teacher, expected, atol=1e-6)
    assert not any(t.requires_grad for t in method.teacher.values())
    assert list(method.evaluation_params()) == ["teacher", "student"]
