"""Micro-benchmarks: one training step of every method, the temporal ensemble's end-of-epoch
update and the loss terms, on real MNIST images, for stacks of 1 and 5 runs.

Each benchmark first runs its function untimed (warm-up: allocation, first-call dispatch),
then times it, then checks its result: the figures are of code that does its job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
import torch
import torch.nn.functional as F
from pytest_benchmark.fixture import BenchmarkFixture

from sslbench.bench.core.data import PreparedData
from sslbench.bench.core.model import Params, forward
from sslbench.bench.core.overrides import build_config, with_overrides
from sslbench.bench.core.precision import pass_context
from sslbench.bench.core.seeds import generator
from sslbench.bench.core.train import init_state, train_step
from sslbench.methods import Method, MethodContext, StepLosses, method_names
from sslbench.methods.losses import UNLABELED, softmax_mse, supervised_loss
from sslbench.methods.temporal_ensembling import TemporalEnsembling

STACKS = [1, 5]
BATCH = 100  # the blog's batch size
LABELED_PER_BATCH = 10  # so every run's batch has a supervised term
EPOCH = 1  # w(t) > 0 from epoch 1 on (the smoke profile ramps up over 2 epochs)

T = TypeVar("T")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # time the work, not its launch


def batch_indices(data: PreparedData, runs: int) -> torch.Tensor:
    """(R, BATCH) real sample indices per run: 10 of its labeled images, 90 unlabeled."""
    rows = []
    for run in range(runs):
        unlabeled = (data.run_labels[run] == UNLABELED).nonzero().flatten()
        shuffled = unlabeled[torch.randperm(len(unlabeled), generator=generator(run, "order"))
                             .to(unlabeled.device)]
        labeled = data.labeled_indices[run][:LABELED_PER_BATCH].to(unlabeled.device)
        rows.append(torch.cat([labeled, shuffled[:BATCH - LABELED_PER_BATCH]]))
    return torch.stack(rows)


class Step:
    """One training step of `method_name` for a stack of `runs`: bench.train's own
    `train_step`, on a state built by its `init_state`, so the figures are of the code
    that trains."""

    def __init__(self, method_name: str, runs: int, data: PreparedData,
                 device: torch.device, precision: str = "fp32") -> None:
        config = with_overrides(build_config(method_name, 0, "smoke"),
                                {"train.precision": precision})
        self.device = device
        self.state = init_state(config, list(range(runs)), data, device)
        self.method: Method = self.state.method
        self.params: Params = self.state.params
        self.indices = batch_indices(data, runs)
        self.labels = data.run_labels[:runs].gather(1, self.indices)
        self.weight = torch.tensor(self.method.weight(EPOCH), device=device)

    def logits(self) -> torch.Tensor:
        """A training-mode pass of the step's images, without a step."""
        images = self.state.data.train_images[self.indices]
        gens = self.state.generators
        with torch.no_grad(), pass_context(self.state.precision, self.device):
            return forward(self.params, self.state.config.model, images, training=True,
                           noise_gens=gens["noise"], dropout_gens=gens["dropout"]).float()

    def __call__(self) -> StepLosses:
        losses = train_step(self.state, self.indices, self.weight, EPOCH)
        _sync(self.device)
        return losses


def timed(benchmark: BenchmarkFixture, fn: Callable[[], T], images: int) -> T:
    """Warm up untimed, time `fn`, note images per second when timing ran."""
    fn()
    result = benchmark(fn)
    if benchmark.stats is not None and images:  # None under --benchmark-disable
        benchmark.extra_info["images_per_call"] = images
        benchmark.extra_info["images_per_s_median"] = images / benchmark.stats.stats.median
    return result


@pytest.mark.parametrize("runs", STACKS)
@pytest.mark.parametrize("method_name", method_names())
def test_training_step(benchmark, mnist, device, method_name, runs):
    check_step(benchmark, Step(method_name, runs, mnist, device), runs)


@pytest.mark.parametrize("runs", STACKS)
def test_training_step_bf16(benchmark, mnist, device, runs):
    """Temporal ensembling's step with bf16 autocast (train.precision=bf16), beside fp32's."""
    check_step(benchmark, Step("temporal_ensembling", runs, mnist, device, "bf16"), runs)


def check_step(benchmark: BenchmarkFixture, step: Step, runs: int) -> None:
    before = {k: v.detach().clone() for k, v in step.params.items()}
    losses = timed(benchmark, step, runs * BATCH)
    assert isinstance(losses, StepLosses)
    assert losses.supervised.shape == (runs,) and torch.isfinite(losses.supervised).all()
    assert (losses.supervised > 0).all(), "every run's batch holds labeled images"
    assert torch.isfinite(losses.unsupervised).all()
    if step.method.uses_unlabeled:
        assert (losses.unsupervised > 0).all()
    for name, tensor in step.params.items():
        assert torch.isfinite(tensor).all(), name
        changed = (tensor.detach() != before[name]).flatten(1).any(dim=1)
        assert changed.all(), f"{name}: the optimizer left some run's parameters unchanged"


@pytest.mark.parametrize("runs", STACKS)
def test_temporal_ensemble_end_of_epoch(benchmark, device, runs):
    """Z = aZ + (1-a)z and targets Z/(1-a^t) over all 60,000 MNIST training samples."""
    config = build_config("temporal_ensembling", 0, "paper")
    num_train, classes = 60_000, 10
    method = TemporalEnsembling(MethodContext(
        config=config.method, num_runs=runs, num_train=num_train, num_classes=classes,
        num_labels=config.data.num_labels, device=device, params={}))
    outputs = torch.randn(runs, num_train, classes, generator=generator(0, "noise"))
    method.epoch_outputs.copy_(outputs)

    def update() -> None:
        method.end_epoch(EPOCH)
        _sync(device)

    timed(benchmark, update, 0)
    # One more update, checked against the formula.
    momentum = config.method.options.ensemble_momentum
    ensemble = method.ensemble.clone()
    method.end_epoch(EPOCH)
    expected = momentum * ensemble + (1 - momentum) * outputs.to(device)
    torch.testing.assert_close(method.ensemble, expected)
    torch.testing.assert_close(method.targets,
                               expected / (1 - momentum ** method.epochs_done))


@pytest.fixture(scope="module")
def logits_and_labels(mnist, device):
    """Real logits (5, 100, 10) of a freshly initialized stack, and the batch's labels."""
    step = Step("supervised", 5, mnist, device)
    return step.logits(), step.labels


@pytest.mark.parametrize("runs", STACKS)
@pytest.mark.parametrize("scaling", ["labeled", "batch"])
def test_supervised_loss(benchmark, logits_and_labels, runs, scaling):
    logits, labels = (t[:runs] for t in logits_and_labels)
    loss = timed(benchmark, lambda: supervised_loss(logits, labels, scaling), 0)
    for run in range(runs):  # per run: plain cross-entropy over its labeled samples
        mask = labels[run] != UNLABELED
        summed = F.cross_entropy(logits[run][mask], labels[run][mask], reduction="sum")
        divisor = mask.sum() if scaling == "labeled" else BATCH
        torch.testing.assert_close(loss[run], summed / divisor)


@pytest.mark.parametrize("runs", STACKS)
def test_softmax_mse(benchmark, logits_and_labels, runs):
    logits = logits_and_labels[0][:runs]
    targets = torch.softmax(logits.roll(1, dims=1), dim=-1)  # another sample's prediction
    loss = timed(benchmark, lambda: softmax_mse(logits, targets), 0)
    expected = ((torch.softmax(logits, dim=-1) - targets) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(loss, expected)
    assert (loss > 0).all()
