"""The whole training step as one CUDA graph (`train.step_graph`): forward, losses, backward,
Adam (capturable) and the method's updates, replayed with one launch per step.

The standard CUDA-graphs recipe (PyTorch's "whole network capture"): the step reads only
static buffers, which each step refills in place, and writes only tensors that live for the
whole run (parameters, Adam's state, the method's state, the loss sums). So the step itself
must be pure in that sense:
  - every random draw happens before it, outside the graph, from the runs' own generators
    and in eager `train_step`'s order (per pass: augmentation, input noise, dropout mask),
    into the static buffers `images`, `noise`, `keep`;
  - its Python control flow may depend only on the epoch, so a graph is captured per epoch
    (a few milliseconds, against an epoch of hundreds of steps);
  - nothing in it reads a value back to the host.
The first steps run eagerly on a side stream (warm-up: Adam's state and the libraries'
workspaces are allocated there, as the recipe asks), then each epoch's graph is captured at
its first step and replayed. On the CPU there is no graph: the same static-buffer step runs
eagerly, and tests check that it gives `train_step`'s losses and parameters exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from sslbench.bench.core.model import augment, draw_randomness, network
from sslbench.bench.core.precision import pass_context
from sslbench.bench.core.step import apply_losses
from sslbench.methods import Batch, StepLosses

if TYPE_CHECKING:
    from sslbench.bench.core.train import TrainState

WARMUP_STEPS = 3  # eager steps on a side stream before the first capture (the recipe's)


@dataclass
class StaticInputs:
    """What one step reads, in buffers whose addresses never change: (R, B) indices, the
    weight w(t), and per forward pass its images, input noise and dropout keep-mask."""

    indices: torch.Tensor
    weight: torch.Tensor
    images: list[torch.Tensor] = field(default_factory=list)
    noise: list[torch.Tensor | None] = field(default_factory=list)
    keep: list[torch.Tensor | None] = field(default_factory=list)


class GraphedStep:
    """`train_step` for a state whose config has train.step_graph: fill, then replay."""

    def __init__(self, state: TrainState) -> None:
        self.state = state
        self.passes = state.method.forward_passes
        self.static: StaticInputs | None = None
        self.outputs: StepLosses | None = None
        self.graph: Any = None  # torch.cuda.CUDAGraph of `captured_epoch`
        self.captured_epoch: int | None = None
        self.eager_steps = 0
        self.use_graph = state.device.type == "cuda"

    # -- outside the graph: the step's inputs, drawn as eager train_step draws them -----------
    def load(self, indices: torch.Tensor, weight: torch.Tensor) -> None:
        state = self.state
        cfg_data, cfg_model, gens = state.config.data, state.config.model, state.generators
        gathered = state.data.train_images[indices]
        drawn = StaticInputs(indices=indices, weight=weight)
        for _ in range(self.passes):
            images = gathered
            if cfg_data.translate_px > 0 or cfg_data.hflip:
                images = augment(images, cfg_data.translate_px, cfg_data.hflip, gens["augment"])
            noise, keep = draw_randomness(cfg_model, images, gens["noise"], gens["dropout"])
            drawn.images.append(images)
            drawn.noise.append(noise)
            drawn.keep.append(keep)
        if self.static is None:
            # The first step's tensors become the buffers; indices and weight are the
            # caller's (a batch's indices are a view of the epoch's order), so they are
            # copied first: refilling must never write into the order.
            drawn.indices, drawn.weight = indices.clone(), weight.clone()
            self.static = drawn
            return
        with torch.no_grad():
            for mine, new in ((self.static.indices, indices), (self.static.weight, weight)):
                mine.copy_(new)
            for kind in ("images", "noise", "keep"):
                for mine, new in zip(getattr(self.static, kind), getattr(drawn, kind),
                                     strict=True):
                    if mine is not None and new is not None:
                        mine.copy_(new)

    # -- the step itself: static buffers in, state tensors changed in place -----------------
    def body(self, epoch: int) -> StepLosses:
        state, static = self.state, self.static
        assert static is not None, "load() fills the buffers first"
        cfg_model, passes = state.config.model, iter(range(self.passes))

        def one_pass(pass_params: dict[str, torch.Tensor]) -> torch.Tensor:
            index = next(passes, None)
            if index is None:
                raise RuntimeError(f"method {state.method.name} asked for more forward passes "
                                   f"than its forward_passes ({self.passes}) says")
            with pass_context(state.precision, state.device):
                return network(pass_params, cfg_model, static.images[index],
                               static.noise[index], static.keep[index]).float()

        batch = Batch(indices=static.indices,
                      labels=state.data.run_labels.gather(1, static.indices), forward=one_pass)
        losses = state.method.losses(one_pass(state.params), batch, epoch)
        apply_losses(state, losses, static.weight, epoch)
        return losses

    def __call__(self, indices: torch.Tensor, weight: torch.Tensor, epoch: int) -> StepLosses:
        self.load(indices, weight)
        if not self.use_graph:
            self.state.optimizer.zero_grad(set_to_none=True)
            return self.body(epoch)
        if self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            return self._warmup_step(epoch)
        if self.captured_epoch != epoch:
            self._capture(epoch)
        assert self.graph is not None and self.outputs is not None
        self.graph.replay()
        return self.outputs

    def _warmup_step(self, epoch: int) -> StepLosses:
        side = torch.cuda.Stream(self.state.device)
        side.wait_stream(torch.cuda.current_stream(self.state.device))
        with torch.cuda.stream(side):
            self.state.optimizer.zero_grad(set_to_none=True)
            losses = self.body(epoch)
        torch.cuda.current_stream(self.state.device).wait_stream(side)
        return losses

    def _capture(self, epoch: int) -> None:
        """Record this epoch's step (capture runs nothing; the replay after it does)."""
        self.graph = torch.cuda.CUDAGraph()
        self.state.optimizer.zero_grad(set_to_none=True)  # backward allocates in the graph
        with torch.cuda.graph(self.graph):
            self.outputs = self.body(epoch)
        self.captured_epoch = epoch
