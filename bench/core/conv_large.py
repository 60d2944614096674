"""The temporal ensembling paper's ConvNet (Laine & Aila, ICLR 2017, Table 5; "conv-large")
as a stack of R independent models evaluated in one pass, like bench.core.model's CNN.

    noise(0.15) -> 3 x [conv 128 3x3 same] -> maxpool 2 -> dropout 0.5
                -> 3 x [conv 256 3x3 same] -> maxpool 2 -> dropout 0.5
                -> conv 512 3x3 valid -> conv 256 1x1 -> conv 128 1x1
                -> global average pool -> dense 128 -> K

Every layer: weight normalization (w = g v / ||v|| per output unit, g initialized to ||v||),
then mean-only batch normalization (the batch mean subtracted per channel in training, a
running mean in evaluation), then a bias, then leaky ReLU 0.1 (not after the dense layer).
Parameters carry a leading run dimension R and the convolutions of the R models run as one
grouped convolution, so each run keeps its own weights and its own batch statistics: a
stack of three computes what three single runs compute (tests/test_conv_large.py).

Translation (0-2 px) and horizontal flip, the paper's augmentation for it, are the
harness's `augment`. Selected as `model.name=conv_large` (bench.core.networks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]

# (name, output channels, kernel, padding); a maxpool 2x2 and dropout follow the names in
# POOLED.
LAYOUT: tuple[tuple[str, int, int, int], ...] = (
    ("conv1a", 128, 3, 1), ("conv1b", 128, 3, 1), ("conv1c", 128, 3, 1),
    ("conv2a", 256, 3, 1), ("conv2b", 256, 3, 1), ("conv2c", 256, 3, 1),
    ("conv3a", 512, 3, 0), ("conv3b", 256, 1, 0), ("conv3c", 128, 1, 0),
)
POOLED = ("conv1c", "conv2c")


@dataclass(frozen=True)
class ConvLargeConfig:
    in_channels: int = 3
    num_classes: int = 10
    input_noise_std: float = 0.15
    dropout: float = 0.5
    leaky_slope: float = 0.1
    # Running mean of mean-only batch norm: new = (1 - m) old + m batch (per step)
    bn_momentum: float = 0.1


def _layers(config: ConvLargeConfig) -> list[tuple[str, int, int, int, int]]:
    """(name, in, out, kernel, padding) of every convolution, in order."""
    layers, cin = [], config.in_channels
    for name, cout, kernel, padding in LAYOUT:
        layers.append((name, cin, cout, kernel, padding))
        cin = cout
    return layers


def init_params(config: ConvLargeConfig, gens: Sequence[torch.Generator],
                device: torch.device) -> tuple[Params, Params]:
    """(parameters, running means) of R runs, run r drawn from its own generator on the CPU:
    v ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch's default, g = ||v|| (the initial
    function is the plain layer's), biases 0 (they follow the batch norm)."""
    shapes: dict[str, tuple[int, ...]] = {
        name: (cout, cin, kernel, kernel) for name, cin, cout, kernel, _ in _layers(config)}
    shapes["dense"] = (config.num_classes, LAYOUT[-1][1])
    per_run: list[Params] = []
    for gen in gens:
        p: Params = {}
        for name, shape in shapes.items():
            bound = 1 / math.sqrt(math.prod(shape[1:]))
            v = (torch.rand(shape, generator=gen) * 2 - 1) * bound
            p[f"{name}_v"], p[f"{name}_g"] = v, v.flatten(1).norm(dim=1)
            p[f"{name}_b"] = torch.zeros(shape[0])
        per_run.append(p)
    params = {k: torch.stack([p[k] for p in per_run]).to(device).requires_grad_()
              for k in per_run[0]}
    running = {name: torch.zeros(len(gens), shape[0], device=device)
               for name, shape in shapes.items()}
    return params, running


def parameter_count(params: Params) -> int:
    """Trainable numbers of one run (v, g and b of every layer)."""
    return sum(t[0].numel() for t in params.values())


def _weight(params: Params, name: str) -> torch.Tensor:
    """w = g v / ||v|| per output unit: (R, Cout, ...) -> (R*Cout, ...) for groups=R."""
    v = params[f"{name}_v"]
    norm = v.flatten(2).norm(dim=2)
    scale = (params[f"{name}_g"] / norm).reshape(*norm.shape, *([1] * (v.dim() - 2)))
    return (v * scale).flatten(0, 1)


def _mean_only_bn(x: torch.Tensor, runs: int, running: torch.Tensor | None,
                  dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """x minus its per-channel mean over `dims` (training) or minus the running mean;
    returns the centred x and the batch means (R, C). Channels are (R*C) on axis 1."""
    means = x.mean(dim=dims) if running is None else running.flatten()
    shape = [1] * x.dim()
    shape[1] = -1
    return x - means.reshape(shape), means.reshape(runs, -1).detach()


def draw_randomness(config: ConvLargeConfig, images: torch.Tensor,
                    gens: Sequence[torch.Generator],
                    dropout_gens: Sequence[torch.Generator] | None = None
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Input noise (R, B, C, H, W) from `gens` and the two dropout keep-masks (after each
    pooling) from `dropout_gens` (default: `gens`), run r from its own generators."""
    _, batch, _, height, width = images.shape
    device = images.device
    noise = torch.stack([torch.randn(tuple(images.shape[1:]), generator=g, device=device)
                         for g in gens])
    masks = []
    for pools, (_, channels, _, _) in ((1, LAYOUT[2]), (2, LAYOUT[5])):
        size = (batch, channels, height >> pools, width >> pools)
        masks.append(torch.stack([torch.rand(size, generator=g, device=device)
                                  for g in (dropout_gens or gens)]) >= config.dropout)
    return noise, masks


def network(params: Params, running: Params, config: ConvLargeConfig, images: torch.Tensor,
            noise: torch.Tensor | None = None, masks: Sequence[torch.Tensor] = (),
            training: bool = False) -> tuple[torch.Tensor, Params]:
    """images (R, B, C, H, W) normalized -> (logits (R, B, K), this batch's means per layer
    (R, C)). Training: batch statistics, noise and masks as given; evaluation: running
    means, no noise, no dropout."""
    runs, batch = images.shape[:2]
    if noise is not None:
        images = images + config.input_noise_std * noise
    x = images.transpose(0, 1).flatten(1, 2)  # (B, R*C, H, W): runs as channel groups
    means: Params = {}
    masks = list(masks)
    for name, _, _, _, padding in _layers(config):
        x = F.conv2d(x, _weight(params, name), padding=padding, groups=runs)
        x, means[name] = _mean_only_bn(x, runs, None if training else running[name],
                                       (0, 2, 3))
        x = F.leaky_relu(x + params[f"{name}_b"].flatten()[:, None, None], config.leaky_slope)
        if name in POOLED:
            x = F.max_pool2d(x, 2)
            if masks:
                keep = masks.pop(0)  # (R, B, C, h, w) -> (B, R*C, h, w)
                x = x * keep.transpose(0, 1).flatten(1, 2) / (1.0 - config.dropout)
    x = x.mean(dim=(2, 3)).reshape(batch, runs, -1).transpose(0, 1)  # (R, B, 128)
    w = _weight(params, "dense").reshape(runs, config.num_classes, -1)
    logits = torch.bmm(x, w.transpose(1, 2))  # (R, B, K)
    dense_mean = logits.mean(dim=1) if training else running["dense"]
    means["dense"] = dense_mean.detach()
    logits = logits - dense_mean[:, None, :] + params["dense_b"][:, None, :]
    return logits, means


@torch.no_grad()
def update_running(running: Params, means: Params, momentum: float) -> None:
    """After a training step: each run's running means move towards its batch's."""
    for name, value in means.items():
        running[name].mul_(1 - momentum).add_(value, alpha=momentum)
