"""The training loop: R runs of one config (differing only in seed) trained as one stack.

Data, labels, method state and random generators live on the training device; batches
are drawn by index from a per-run seeded permutation. Inside the step nothing is read
back to the host: loss sums accumulate on the device and are read once per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.allocator import flush_denormals, keep_freed_memory
from bench.checkpoint import CheckpointPolicy, Interrupted, generator_states, restore_generators
from bench.checkpoint import load as load_checkpoint
from bench.checkpoint import save as save_checkpoint
from bench.compiled import network_for
from bench.config import RunConfig
from bench.data import PreparedData, prepare
from bench.errors import DivergedError
from bench.model import augment, forward, init_params, predict
from bench.precision import pass_context, resolve
from bench.sampling import batch_plan, epoch_order
from bench.seeds import generator
from bench.throughput import peak_memory_mib, reset_peak_memory
from methods import Batch, MethodContext, get_method


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from bench.errors import UserError

        raise UserError(f"device {name!r} asked for, but no CUDA device is available; "
                        f"use --device cpu or --device auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        from bench.errors import UserError

        raise UserError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


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


CURVE_KEYS = ("supervised_loss", "unsupervised_loss", "train_loss", "test_accuracy")


def train_stack(config: RunConfig, seeds: Sequence[int], *, device: torch.device,
                data_root: Path, data: PreparedData | None = None,
                progress: ProgressFn | None = None,
                checkpoint: CheckpointPolicy | None = None,
                with_test: bool = True) -> list[RunResult]:
    """Train one run per seed, all sharing `config` apart from the seed.

    With with_test=False the test set is never loaded nor evaluated (searches score on the
    validation split, data.val_size); test accuracies are then empty and NaN.

    With a checkpoint policy, the stack resumes from `checkpoint.path` when it exists,
    saves there every `checkpoint.every_epochs` epochs, and when `checkpoint.stop` is set
    saves at the next step boundary and raises Interrupted.
    """
    keep_freed_memory()  # glibc: no page faults for each step's reallocated activations
    flush_denormals()  # CPU: no slow path for Adam's vanishing second moments
    if data is None:
        data = prepare(config.data, seeds, data_root, device, with_test=with_test)
    runs = len(seeds)
    cfg_model, cfg_train = config.model, config.train
    num_train = data.num_train
    image_size = int(data.train_images.shape[-1])

    params = init_params(cfg_model, data.num_classes, image_size,
                         [generator(s, "init") for s in seeds], device)
    optimizer = torch.optim.Adam(params.values(), lr=cfg_train.lr,
                                 betas=(cfg_train.beta1, cfg_train.beta2))
    method = get_method(config.method.name)(MethodContext(
        config=config.method, num_runs=runs, num_train=num_train,
        num_classes=data.num_classes, num_labels=config.data.num_labels, device=device,
        params=params))
    order_gens = [generator(s, "order") for s in seeds]  # CPU: permutations match across devices
    noise_gens = [generator(s, "noise", device) for s in seeds]
    dropout_gens = [generator(s, "dropout", device) for s in seeds]
    augment_gens = [generator(s, "augment", device) for s in seeds]
    cfg_data = config.data
    augmented = cfg_data.translate_px > 0 or cfg_data.hflip
    precision = resolve(cfg_train.precision, device)
    network_fn = network_for(cfg_train, device)  # UserError: CUDA graphs without CUDA

    plan = batch_plan(cfg_train, num_train, config.data.num_labels)  # which images, how many
    batch_size, steps = plan.batch_size, plan.steps
    schedule = {"batches": plan.batches, "steps_per_epoch": steps, "batch_size": batch_size,
                "labeled_per_batch": plan.labeled_per_batch,
                "images_per_epoch": plan.images_per_epoch,
                "total_steps": steps * cfg_train.epochs}
    results = [RunResult(seed=s, labeled_indices=data.labeled_indices[i].tolist(), stack_size=runs,
                         precision=precision, schedule=dict(schedule))
               for i, s in enumerate(seeds)]
    curves: dict[str, list[list[float]]] = {k: [] for k in (*CURVE_KEYS, "val_accuracy")}
    shared: dict[str, list[float]] = {"weight": [], "epoch_seconds": [], "eval_seconds": [],
                                      "train_images_per_s": []}
    run_id = config.config_hash()  # the seed field aside, all runs of a stack share it
    generators = {"order": order_gens, "noise": noise_gens, "dropout": dropout_gens,
                  "augment": augment_gens}
    sums = torch.zeros(3, runs, device=device)  # supervised, unsupervised, total loss sums
    order: torch.Tensor | None = None  # this epoch's permutation per run, (R, N)
    start_epoch = start_step = 0

    def snapshot(next_epoch: int, next_step: int) -> dict[str, Any]:
        return {"run_id": run_id, "seeds": list(seeds), "epoch": next_epoch, "step": next_step,
                "params": {k: v.detach() for k, v in params.items()},
                "optimizer": optimizer.state_dict(), "method": method.state_dict(),
                "generators": {k: generator_states(v) for k, v in generators.items()},
                "order": order if next_step else None, "sums": sums,
                "curves": curves, "shared": shared}

    if checkpoint is not None:
        state = load_checkpoint(checkpoint.path, run_id, list(seeds), device)
        if state is not None:
            with torch.no_grad():
                for name, tensor in params.items():
                    tensor.copy_(state["params"][name])
            optimizer.load_state_dict(state["optimizer"])
            method.load_state_dict(state["method"])
            for name, gens in generators.items():
                restore_generators(gens, state["generators"][name])
            curves, shared = state["curves"], state["shared"]
            start_epoch, start_step = int(state["epoch"]), int(state["step"])
            order, sums = state["order"], state["sums"].to(device)

    reset_peak_memory(device)
    started = time.perf_counter()

    for epoch in range(start_epoch, cfg_train.epochs):
        weight = method.weight(epoch)
        weight_t = torch.tensor(weight, device=device)  # a device scalar: no sync in the step
        first_step, start_step = start_step, 0
        if first_step == 0:
            sums = torch.zeros(3, runs, device=device)
            order = epoch_order(plan, data.labeled_indices, num_train, order_gens).to(device)
        assert order is not None
        epoch_start = time.perf_counter()
        for step in range(first_step, steps):
            indices = order[:, step * batch_size:(step + 1) * batch_size]  # (R, B)
            images = data.train_images[indices]

            def another_pass(pass_params: dict[str, torch.Tensor],
                             images: torch.Tensor = images) -> torch.Tensor:
                if augmented:  # each pass its own translation, as noise and dropout
                    images = augment(images, cfg_data.translate_px, cfg_data.hflip,
                                     augment_gens)
                with pass_context(precision, device):  # losses, state and optimizer stay fp32
                    return forward(pass_params, cfg_model, images, training=True,
                                   noise_gens=noise_gens, dropout_gens=dropout_gens,
                                   network_fn=network_fn).float()

            batch = Batch(indices=indices, labels=data.run_labels.gather(1, indices),
                          forward=another_pass)
            logits = another_pass(params)
            losses = method.losses(logits, batch, epoch)
            total = losses.supervised + weight_t * losses.unsupervised  # (R,)
            optimizer.zero_grad(set_to_none=True)
            # Runs are independent: the gradient of the sum is each run's own gradient.
            total.sum().backward()
            optimizer.step()
            method.after_step(epoch)
            sums += torch.stack([losses.supervised, losses.unsupervised, total]).detach()
            if checkpoint is not None and checkpoint.stop.is_set():  # a host bool: no sync
                save_checkpoint(checkpoint.path, snapshot(epoch, step + 1))
                raise Interrupted(checkpoint.path, epoch, step + 1)
        method.end_epoch(epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds = time.perf_counter() - epoch_start

        means = (sums / steps).cpu()  # the one read-back of the epoch
        for name, row in zip(("supervised_loss", "unsupervised_loss", "train_loss"), means,
                             strict=True):
            if not torch.isfinite(row).all():
                raise DivergedError(epoch, name)
            curves[name].append(row.tolist())

        eval_start = time.perf_counter()
        evaluated = method.evaluation_params()  # the first model gives the headline
        headline = next(iter(evaluated.values()))
        has_test = data.test_images is not None and data.test_labels is not None
        test_acc = (_accuracy(headline, cfg_model, data.test_images, data.test_labels)
                    if has_test else [math.nan] * runs)
        val_acc = (_accuracy(headline, cfg_model, data.val_images, data.val_labels)
                   if data.val_images is not None and data.val_labels is not None else None)
        for name, other in list(evaluated.items())[1:] if has_test else []:
            # e.g. the mean teacher's student beside its teacher
            curves.setdefault(f"{name}_test_accuracy", []).append(
                _accuracy(other, cfg_model, data.test_images, data.test_labels))
        eval_seconds = time.perf_counter() - eval_start
        if has_test:
            curves["test_accuracy"].append(test_acc)
        if val_acc is not None:
            curves["val_accuracy"].append(val_acc)
        images_per_s = runs * plan.images_per_epoch / epoch_seconds
        for key, value in (("weight", weight), ("epoch_seconds", epoch_seconds),
                           ("eval_seconds", eval_seconds), ("train_images_per_s", images_per_s)):
            shared[key].append(value)
        if progress is not None:
            progress(EpochSummary(
                epoch=epoch, epochs=cfg_train.epochs, weight=weight,
                supervised_loss=means[0].tolist(), unsupervised_loss=means[1].tolist(),
                train_loss=means[2].tolist(), test_accuracy=test_acc, val_accuracy=val_acc,
                epoch_seconds=epoch_seconds, eval_seconds=eval_seconds,
                train_images_per_s=images_per_s,
                elapsed_seconds=time.perf_counter() - started))
        last_epoch = epoch + 1 == cfg_train.epochs
        if (checkpoint is not None and not last_epoch
                and (checkpoint.stop.is_set() or (checkpoint.every_epochs
                                                  and (epoch + 1) % checkpoint.every_epochs == 0))):
            save_checkpoint(checkpoint.path, snapshot(epoch + 1, 0))
            if checkpoint.stop.is_set():
                raise Interrupted(checkpoint.path, epoch + 1, 0)

    peak_mib = peak_memory_mib(device)
    for run, result in enumerate(results):
        result.curves = {key: [per_run[run] for per_run in values]
                         for key, values in curves.items() if values}
        result.curves.update({k: list(v) for k, v in shared.items()})
        result.curves["peak_memory_mib"] = [peak_mib]
        result.final_test_accuracy = result.curves.get("test_accuracy", [math.nan])[-1]
    return results


def _accuracy(params: dict[str, torch.Tensor], cfg_model: Any, images: torch.Tensor | None,
              labels: torch.Tensor | None) -> list[float]:
    """Per-run accuracy in [0, 1] of the evaluation-mode model."""
    assert images is not None and labels is not None
    predictions = predict(params, cfg_model, images)
    return (predictions == labels).float().mean(dim=1).cpu().tolist()


def single_run(config: RunConfig, *, device: torch.device, data_root: Path,
               progress: ProgressFn | None = None,
               checkpoint: CheckpointPolicy | None = None) -> RunResult:
    """One run: a stack of one."""
    (result,) = train_stack(config, [config.seed], device=device, data_root=data_root,
                            progress=progress, checkpoint=checkpoint)
    return result
