"""The training loop: R runs of one config (differing only in seed) trained as one stack.

Data, labels, method state and random generators live on the training device; batches
are drawn by index from a per-run seeded permutation. Inside the step nothing is read
back to the host: loss sums accumulate on the device and are read once per epoch.

The loop (`train_until_stopped`) is a flat sequence in the manner of nanoGPT's train.py:
    state = init_state(...)            model, optimizer, method, generators, batch plan
    for epoch: for step: train_step   forward, losses, backward, Adam, method update
               end_epoch               the method's epoch update, the one read-back
               evaluate                test (and validation) accuracy of each run
    state_dict / load_state_dict       what a checkpoint holds, and resuming from it
The micro-benchmarks (benchmarks/test_micro.py) time `train_step` itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sslbench.bench.core.allocator import flush_denormals, keep_freed_memory
from sslbench.bench.core.checkpoint import (
    CheckpointPolicy,
    Interrupted,
    generator_states,
    restore_generators,
)
from sslbench.bench.core.checkpoint import load as load_checkpoint
from sslbench.bench.core.checkpoint import save as save_checkpoint
from sslbench.bench.core.compiled import network_for
from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.data import PreparedData, prepare
from sslbench.bench.core.graphed import GraphedStep
from sslbench.bench.core.model import NetworkFn, Params, augment
from sslbench.bench.core.networks import Network, NetworkContext, build_network
from sslbench.bench.core.precision import pass_context, resolve
from sslbench.bench.core.sampling import BatchPlan, batch_plan, epoch_order
from sslbench.bench.core.seeds import generator
from sslbench.bench.core.step import apply_losses
from sslbench.bench.core.throughput import peak_memory_mib, reset_peak_memory
from sslbench.bench.errors import DivergedError
from sslbench.methods import Batch, Method, MethodContext, StepLosses, get_method


@dataclass(frozen=True)
class EpochSummary:
    """What one epoch produced, per run (lists have one entry per run of the stack)."""

    epoch: int  # counted from 0
    epochs: int
    weight: float  # unsupervised weight w(t) this epoch
    supervised_loss: list[float]  # mean over the epoch's batches
    unsupervised_loss: list[float]  # mean over the epoch's batches, before the weight
    train_loss: list[float]  # mean of supervised + w * unsupervised
    test_accuracy: list[float]  # fraction in [0, 1]
    val_accuracy: list[float] | None
    epoch_seconds: float  # training steps only
    eval_seconds: float
    train_images_per_s: float  # all runs of the stack together
    elapsed_seconds: float  # since training started, evaluation included


ProgressFn = Callable[[EpochSummary], None]


@dataclass
class RunResult:
    """The outcome of one run of a stack; `bench.record` turns it into the stored record."""

    seed: int
    labeled_indices: list[int]
    curves: dict[str, list[float]] = field(default_factory=dict)
    final_test_accuracy: float = math.nan
    stack_size: int = 1
    precision: str = "fp32"  # the training passes' arithmetic, `train.precision` resolved
    # Which images the batches held and how many optimizer steps were taken (bench.sampling).
    schedule: dict[str, Any] = field(default_factory=dict)
    # Each stretch of training and the code it ran: commit, dirty, from and to epoch.
    segments: list[dict[str, Any]] = field(default_factory=list)
    num_classes: int = 0  # of the dataset as read (chance is 1 / num_classes)


# A checkpoint written before segments were recorded: its training ran at a commit unknown.
EARLIER_SEGMENT = {"commit": "unknown (checkpoint from before segments were recorded)",
                   "dirty": None, "from_epoch": 0}


def new_segment(epoch: int, step: int) -> dict[str, Any]:
    """A stretch of training starting at (epoch, step) with the code this process loaded."""
    from sslbench.bench.core.record import git_commit  # record imports this module's types

    git = git_commit()
    return {"commit": git["commit"], "dirty": git["dirty"], "from_epoch": epoch,
            "from_step": step}


def closed_segments(segments: list[dict[str, Any]], epoch: int) -> list[dict[str, Any]]:
    """The segments with the last one ended at `epoch` (the epochs it finished)."""
    if not segments:
        return []
    return [*segments[:-1], {**segments[-1], "to_epoch": epoch}]


@dataclass(frozen=True)
class Stopped:
    """Training stopped on request at a step boundary, its state saved in `checkpoint`."""

    checkpoint: Path
    epoch: int  # the epoch (from 0) and step a resumed run starts at
    step: int


CURVE_KEYS = ("supervised_loss", "unsupervised_loss", "train_loss", "test_accuracy")
SHARED_KEYS = ("weight", "epoch_seconds", "eval_seconds", "train_images_per_s")
LOSS_KEYS = ("supervised_loss", "unsupervised_loss", "train_loss")  # the rows of `sums`


@dataclass
class TrainState:
    """A stack in training: what each step reads and what it changes.

    Everything in the checkpoint (`state_dict`) is here; the rest is rebuilt from the config.
    """

    config: RunConfig
    seeds: list[int]
    device: torch.device
    data: PreparedData
    plan: BatchPlan  # which images each batch holds, and the steps per epoch
    precision: str  # the passes' arithmetic (fp32, bf16)
    network_fn: NetworkFn  # the blog CNN's network, compiled when the config asks
    network: Network  # model.name's network (bench.core.networks), with its buffers
    params: Params  # each (R, ...)
    optimizer: torch.optim.Adam
    method: Method
    # Per-run generators by stream: "order" on the CPU (permutations match across devices),
    # "noise", "dropout" and "augment" on the training device.
    generators: dict[str, list[torch.Generator]]
    sums: torch.Tensor  # (3, R) loss sums of this epoch so far, rows as LOSS_KEYS
    order: torch.Tensor | None = None  # this epoch's sample order per run, (R, N)
    epoch: int = 0  # the next epoch (from 0) and step to run
    step: int = 0
    curves: dict[str, list[list[float]]] = field(default_factory=dict)  # per epoch, per run
    shared: dict[str, list[float]] = field(default_factory=dict)  # per epoch, the stack's
    graphed: GraphedStep | None = None  # the step as a CUDA graph (train.step_graph)
    # The code each stretch of training ran (segment): a resumed run appends one, so a record
    # says which commits made it, not only the last (bench.core.record).
    segments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.seeds)


def init_state(config: RunConfig, seeds: Sequence[int], data: PreparedData,
               device: torch.device) -> TrainState:
    """A fresh stack: parameters drawn from each seed's init stream, Adam, the method."""
    runs, cfg_train = len(seeds), config.train
    network_fn = network_for(cfg_train, device)  # UserError: CUDA graphs without CUDA
    network = build_network(NetworkContext(
        config=config.model, in_channels=int(data.train_images.shape[1]),
        image_size=int(data.train_images.shape[-1]), num_classes=data.num_classes,
        device=device, network_fn=network_fn))
    params = network.init_params([generator(s, "init") for s in seeds])
    # capturable: Adam's step count on the device, as a CUDA graph of the step needs.
    optimizer = torch.optim.Adam(params.values(), lr=cfg_train.lr,
                                 betas=(cfg_train.beta1, cfg_train.beta2),
                                 capturable=cfg_train.step_graph and device.type == "cuda")
    method = get_method(config.method.name)(MethodContext(
        config=config.method, num_runs=runs, num_train=data.num_train,
        num_classes=data.num_classes, num_labels=config.data.num_labels, device=device,
        params=params))
    generators = {"order": [generator(s, "order") for s in seeds],
                  **{stream: [generator(s, stream, device) for s in seeds]
                     for stream in ("noise", "dropout", "augment")}}
    state = TrainState(
        config=config, seeds=list(seeds), device=device, data=data,
        plan=batch_plan(cfg_train, data.num_train, config.data.num_labels),
        precision=resolve(cfg_train.precision, device),
        network_fn=network_fn, network=network, params=params, optimizer=optimizer,
        method=method, generators=generators,
        sums=torch.zeros(3, runs, device=device),
        curves={k: [] for k in (*CURVE_KEYS, "val_accuracy")},
        shared={k: [] for k in SHARED_KEYS})
    if cfg_train.step_graph:
        state.graphed = GraphedStep(state)
    return state


def start_epoch(state: TrainState) -> None:
    """Zero the loss sums and draw the epoch's sample order (not when resuming mid-epoch)."""
    if state.step == 0:
        state.sums = torch.zeros(3, state.runs, device=state.device)
        state.order = epoch_order(state.plan, state.data.labeled_indices, state.data.num_train,
                                  state.generators["order"]).to(state.device)


def batch_indices(state: TrainState, step: int) -> torch.Tensor:
    """(R, B) sample indices of `step` in this epoch's order."""
    assert state.order is not None, "start_epoch draws the order"
    size = state.plan.batch_size
    return state.order[:, step * size:(step + 1) * size]


def train_step(state: TrainState, indices: torch.Tensor, weight: torch.Tensor,
               epoch: int) -> StepLosses:
    """One optimizer step of every run on its batch `indices` (R, B), unsupervised term
    weighted by `weight` (a device scalar: no sync in the step)."""
    if state.graphed is not None:  # the same step from static buffers (bench.graphed)
        return state.graphed(indices, weight, epoch)
    data, cfg_data = state.data, state.config.data
    images = data.train_images[indices]
    augmented = cfg_data.translate_px > 0 or cfg_data.hflip
    gens = state.generators

    def another_pass(pass_params: Params, images: torch.Tensor = images) -> torch.Tensor:
        if augmented:  # each pass its own translation, as noise and dropout
            images = augment(images, cfg_data.translate_px, cfg_data.hflip, gens["augment"])
        with pass_context(state.precision, state.device):  # losses, state, Adam stay fp32
            return state.network.forward(pass_params, images, training=True,
                                         noise_gens=gens["noise"],
                                         dropout_gens=gens["dropout"]).float()

    batch = Batch(indices=indices, labels=data.run_labels.gather(1, indices),
                  forward=another_pass)
    losses = state.method.losses(another_pass(state.params), batch, epoch)
    state.optimizer.zero_grad(set_to_none=True)
    apply_losses(state, losses, weight, epoch)
    return losses


def end_epoch(state: TrainState, epoch: int) -> torch.Tensor:
    """The method's end-of-epoch update and the epoch's mean losses (3, R) on the host: the
    one read-back of the epoch. DivergedError when a loss is not finite."""
    state.method.end_epoch(epoch)
    means = (state.sums / state.plan.steps).cpu()
    for name, row in zip(LOSS_KEYS, means, strict=True):
        if not torch.isfinite(row).all():
            raise DivergedError(epoch, name)
        state.curves[name].append(row.tolist())
    return means


def evaluate(state: TrainState) -> tuple[list[float], list[float] | None]:
    """Per-run test and validation accuracy of the headline model (the method's first
    evaluated one), appended to the curves with the other models' test accuracy (e.g. the
    mean teacher's student). Without a test set, NaN; without a validation split, None."""
    data, network, runs = state.data, state.network, state.runs
    evaluated = state.method.evaluation_params()
    headline = next(iter(evaluated.values()))
    has_test = data.test_images is not None and data.test_labels is not None
    test_acc = (_accuracy(network, headline, runs, data.test_images, data.test_labels)
                if has_test else [math.nan] * state.runs)
    val_acc = (_accuracy(network, headline, runs, data.val_images, data.val_labels)
               if data.val_images is not None and data.val_labels is not None else None)
    for name, other in list(evaluated.items())[1:] if has_test else []:
        state.curves.setdefault(f"{name}_test_accuracy", []).append(
            _accuracy(network, other, runs, data.test_images, data.test_labels))
    if has_test:
        state.curves["test_accuracy"].append(test_acc)
    if val_acc is not None:
        state.curves["val_accuracy"].append(val_acc)
    return test_acc, val_acc


def state_dict(state: TrainState) -> dict[str, Any]:
    """What a checkpoint holds: enough to resume at (state.epoch, state.step) bit for bit."""
    return {"run_id": state.config.config_hash(), "seeds": list(state.seeds),
            "epoch": state.epoch, "step": state.step,
            "params": {k: v.detach() for k, v in state.params.items()},
            "optimizer": state.optimizer.state_dict(), "method": state.method.state_dict(),
            "generators": {k: generator_states(v) for k, v in state.generators.items()},
            "order": state.order if state.step else None, "sums": state.sums,
            "curves": state.curves, "shared": state.shared,
            "segments": closed_segments(state.segments, state.epoch),
            # Per-run state besides the parameters (batch norm's running means); the cnn has
            # none, and its checkpoints keep the keys they always had.
            **({"buffers": buffers} if (buffers := state.network.buffers()) else {})}


def load_state_dict(state: TrainState, saved: dict[str, Any]) -> None:
    with torch.no_grad():
        for name, tensor in state.params.items():
            tensor.copy_(saved["params"][name])
        for name, tensor in state.network.buffers().items():
            tensor.copy_(saved["buffers"][name])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.method.load_state_dict(saved["method"])
    for name, gens in state.generators.items():
        restore_generators(gens, saved["generators"][name])
    state.curves, state.shared = saved["curves"], saved["shared"]
    state.epoch, state.step = int(saved["epoch"]), int(saved["step"])
    earlier = saved.get("segments") or [{**EARLIER_SEGMENT, "to_epoch": state.epoch}]
    state.segments = [*earlier, new_segment(state.epoch, state.step)]
    state.order, state.sums = saved["order"], saved["sums"].to(state.device)
    if state.graphed is not None:  # new tensors (Adam's state, sums): capture again
        state.graphed = GraphedStep(state)


def train_until_stopped(config: RunConfig, seeds: Sequence[int], *, device: torch.device,
                        data_root: Path, data: PreparedData | None = None,
                        progress: ProgressFn | None = None,
                        checkpoint: CheckpointPolicy | None = None,
                        with_test: bool = True) -> list[RunResult] | Stopped:
    """Train one run per seed, all sharing `config` apart from the seed; Stopped when the
    checkpoint policy's stop was set (its state saved, to resume from)."""
    keep_freed_memory()  # glibc: no page faults for each step's reallocated activations
    flush_denormals()  # CPU: no slow path for Adam's vanishing second moments
    if data is None:
        data = prepare(config.data, seeds, data_root, device, with_test=with_test)
    state = init_state(config, seeds, data, device)
    state.segments = [new_segment(0, 0)]
    if checkpoint is not None and (saved := load_checkpoint(
            checkpoint.path, config.config_hash(), list(seeds), device)) is not None:
        load_state_dict(state, saved)
    epochs, steps = config.train.epochs, state.plan.steps
    reset_peak_memory(device)
    started = time.perf_counter()
    for epoch in range(state.epoch, epochs):
        state.epoch = epoch
        weight = state.method.weight(epoch)
        weight_t = torch.tensor(weight, device=device)
        start_epoch(state)
        epoch_start = time.perf_counter()
        for step in range(state.step, steps):
            train_step(state, batch_indices(state, step), weight_t, epoch)
            if checkpoint is not None and checkpoint.stop.is_set():  # a host bool: no sync
                state.step = step + 1
                return _save(state, checkpoint)
        state.step = 0
        means = end_epoch(state, epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds = time.perf_counter() - epoch_start
        eval_start = time.perf_counter()
        test_acc, val_acc = evaluate(state)
        eval_seconds = time.perf_counter() - eval_start
        images_per_s = state.runs * state.plan.images_per_epoch / epoch_seconds
        for key, value in zip(SHARED_KEYS, (weight, epoch_seconds, eval_seconds, images_per_s),
                              strict=True):
            state.shared[key].append(value)
        if progress is not None:
            progress(EpochSummary(
                epoch=epoch, epochs=epochs, weight=weight, supervised_loss=means[0].tolist(),
                unsupervised_loss=means[1].tolist(), train_loss=means[2].tolist(),
                test_accuracy=test_acc, val_accuracy=val_acc, epoch_seconds=epoch_seconds,
                eval_seconds=eval_seconds, train_images_per_s=images_per_s,
                elapsed_seconds=time.perf_counter() - started))
        state.epoch = epoch + 1
        if checkpoint is not None and state.epoch < epochs and (
                checkpoint.stop.is_set() or (checkpoint.every_epochs
                                             and state.epoch % checkpoint.every_epochs == 0)):
            saved_at = _save(state, checkpoint)
            if checkpoint.stop.is_set():
                return saved_at
    return _results(state)


def train_stack(config: RunConfig, seeds: Sequence[int], *, device: torch.device,
                data_root: Path, data: PreparedData | None = None,
                progress: ProgressFn | None = None,
                checkpoint: CheckpointPolicy | None = None,
                with_test: bool = True) -> list[RunResult]:
    """`train_until_stopped` for library use: a stop raises Interrupted.

    With with_test=False the test set is never loaded nor evaluated (searches score on the
    validation split, data.val_size); test accuracies are then empty and NaN.

    With a checkpoint policy, the stack resumes from `checkpoint.path` when it exists,
    saves there every `checkpoint.every_epochs` epochs, and when `checkpoint.stop` is set
    saves at the next step boundary and stops.
    """
    outcome = train_until_stopped(config, seeds, device=device, data_root=data_root, data=data,
                                  progress=progress, checkpoint=checkpoint, with_test=with_test)
    if isinstance(outcome, Stopped):
        raise Interrupted(outcome.checkpoint, outcome.epoch, outcome.step)
    return outcome


def _save(state: TrainState, checkpoint: CheckpointPolicy) -> Stopped:
    save_checkpoint(checkpoint.path, state_dict(state))
    return Stopped(checkpoint.path, state.epoch, state.step)


def _results(state: TrainState) -> list[RunResult]:
    """Each run's curves (per epoch), the stack's shared series and peak memory."""
    peak_mib = peak_memory_mib(state.device)
    schedule = state.plan.schedule(state.config.train.epochs)
    results = []
    for run, seed in enumerate(state.seeds):
        curves = {key: [per_run[run] for per_run in values]
                  for key, values in state.curves.items() if values}
        curves.update({k: list(v) for k, v in state.shared.items()})
        curves["peak_memory_mib"] = [peak_mib]
        results.append(RunResult(
            seed=seed, labeled_indices=state.data.labeled_indices[run].tolist(), curves=curves,
            final_test_accuracy=curves.get("test_accuracy", [math.nan])[-1],
            stack_size=state.runs, precision=state.precision, schedule=dict(schedule),
            segments=closed_segments(state.segments, state.config.train.epochs),
            num_classes=state.data.num_classes))
    return results


def _accuracy(network: Network, params: Params, runs: int, images: torch.Tensor | None,
              labels: torch.Tensor | None) -> list[float]:
    """Per-run accuracy in [0, 1] of the evaluation-mode model."""
    assert images is not None and labels is not None
    predictions = network.predict(params, images, runs)
    return (predictions == labels).float().mean(dim=1).cpu().tolist()


def single_run(config: RunConfig, *, device: torch.device, data_root: Path,
               progress: ProgressFn | None = None,
               checkpoint: CheckpointPolicy | None = None) -> RunResult:
    """One run: a stack of one."""
    (result,) = train_stack(config, [config.seed], device=device, data_root=data_root,
                            progress=progress, checkpoint=checkpoint)
    return result
