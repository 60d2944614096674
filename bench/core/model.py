"""The blog's CNN as a stack of R independent models evaluated in one pass.

Parameters carry a leading run dimension R. Convolutions of the R models run as one
grouped convolution (groups=R), the classifier as one batched matmul, so a stack of seeds
costs one kernel launch per layer instead of R. A stack of one is the plain model.

    noise(0.15) -> conv 1->16 3x3 pad 1 (weight norm) -> maxpool 3/2/1 -> ReLU
    -> conv 16->32 (weight norm) -> maxpool -> ReLU -> dropout 0.5 -> linear 32*7*7 -> 10

Switches: widths (model.conv1_channels, conv2_channels), leaky ReLU (model.activation).
Training-time augmentation (random translation, flip) is `augment`, applied per pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from sslbench.bench.core.config import ModelConfig

Params = dict[str, torch.Tensor]


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def init_params(config: ModelConfig, num_classes: int, image_size: int,
                init_gens: Sequence[torch.Generator], device: torch.device, *,
                channels: int = 1) -> Params:
    """PyTorch's default init (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases),
    drawn per run from its own `init` generator (CPU, so it matches across devices).

    Weight norm: w = g * v / ||v|| per output channel, with g initialized to ||v||, so the
    initial function equals the plain layer's (as torch.nn.utils.weight_norm does).
    """
    c1, c2 = config.conv1_channels, config.conv2_channels
    features = feature_count(config, image_size)
    per_run: list[Params] = []
    for gen in init_gens:
        p: Params = {}
        for name, (cout, cin) in {"conv1": (c1, channels), "conv2": (c2, c1)}.items():
            bound = 1 / math.sqrt(cin * 9)
            p[f"{name}_v"] = _uniform((cout, cin, 3, 3), bound, gen)
            p[f"{name}_b"] = _uniform((cout,), bound, gen)
            if config.weight_norm:
                p[f"{name}_g"] = p[f"{name}_v"].flatten(1).norm(dim=1)
        bound = 1 / math.sqrt(features)
        p["fc_w"] = _uniform((num_classes, features), bound, gen)
        p["fc_b"] = _uniform((num_classes,), bound, gen)
        per_run.append(p)
    return {name: torch.stack([p[name] for p in per_run]).to(device).requires_grad_()
            for name in per_run[0]}


def conv_weight(params: Params, name: str) -> torch.Tensor:
    """(R, Cout, Cin, 3, 3) -> (R*Cout, Cin, 3, 3) for a grouped convolution."""
    v = params[f"{name}_v"]
    if f"{name}_g" in params:
        norm = v.flatten(2).norm(dim=2)  # (R, Cout)
        v = v * (params[f"{name}_g"] / norm)[..., None, None, None]
    return v.flatten(0, 1)


def _per_run_random(shape: tuple[int, ...], gens: Sequence[torch.Generator], device: torch.device,
                    kind: str) -> torch.Tensor:
    """(R, *shape) draws, run r from its own generator (independent randomness per run)."""
    if kind == "normal":
        return torch.stack([torch.randn(shape, generator=g, device=device) for g in gens])
    return torch.stack([torch.rand(shape, generator=g, device=device) for g in gens])


def max_pool(x: torch.Tensor) -> torch.Tensor:
    """Max pool 3x3, stride 2, pad 1, on channels-last memory: on the CPU its kernel
    vectorizes over channels and runs about 7x faster (forward + backward) than on NCHW,
    where it took half of a training step. Values and gradients are the same."""
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, stride=2, padding=1)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in channels-last memory, one channel included. For C = 1 both layouts fit
    the same strides, and `.contiguous(memory_format=channels_last)` keeps NCHW's; oneDNN then
    gives conv1 an NCHW output, which `max_pool` converts, at a copy forward and another in
    backward: 4.6 ms of a 15.6 ms CPU step (bench/measure/roofline.py). With channels-last strides
    spelled out, conv1's output is channels-last too. The values are the same."""
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[1] == 1:
        height, width = x.shape[-2:]
        x = x.as_strided(x.shape, (height * width, 1, width, 1))
    return x


def activation(config: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    if config.activation == "leaky_relu":
        return F.leaky_relu(x, config.leaky_slope)
    return F.relu(x)


def augment(images: torch.Tensor, translate_px: int, hflip: bool,
            gens: Sequence[torch.Generator]) -> torch.Tensor:
    """Per-sample random translation by up to `translate_px` pixels (each axis) and optional
    horizontal flip, on the images' device; run r draws from its own generator.

    images (R, B, C, H, W) normalized -> same shape; the channels of a sample move together.
    Shifted-in borders repeat the edge pixel (the background for digits and clothes), so
    padding adds no new intensity.
    """
    runs, batch, channels, height, width = images.shape
    device = images.device
    flat = images.reshape(runs * batch, channels, height, width)
    if hflip:
        flips = torch.stack([torch.rand(batch, generator=g, device=device) < 0.5 for g in gens])
        flat = torch.where(flips.reshape(-1, 1, 1, 1), flat.flip(-1), flat)
    if translate_px > 0:
        t = translate_px
        padded = F.pad(flat, (t, t, t, t), mode="replicate")
        # Offsets in 0..2t into the padded image: a shift in -t..t.
        offsets = torch.stack([torch.randint(0, 2 * t + 1, (batch, 2), generator=g, device=device)
                               for g in gens]).reshape(-1, 2)
        rows = offsets[:, 0, None] + torch.arange(height, device=device)  # (R*B, H)
        cols = offsets[:, 1, None] + torch.arange(width, device=device)  # (R*B, W)
        sample = torch.arange(runs * batch, device=device)[:, None, None]
        # Advanced indices around the channel slice put it last: (R*B, H, W, C).
        flat = padded[sample, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return flat.reshape(images.shape)


def feature_count(config: ModelConfig, image_size: int) -> int:
    """Inputs of the classifier: conv2's channels x the twice-pooled image size."""
    pooled = math.ceil(math.ceil(image_size / 2) / 2)  # two maxpools 3/2/1: 28 -> 14 -> 7
    return config.conv2_channels * pooled * pooled


def draw_randomness(config: ModelConfig, images: torch.Tensor,
                    noise_gens: Sequence[torch.Generator],
                    dropout_gens: Sequence[torch.Generator]
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One training pass's input noise (R, B, 1, H, W) and dropout keep-mask (R, B, F),
    run r from its own generators; None where the model has none.

    Drawn outside `network` so that the network is a pure function of tensors, which
    torch.compile and CUDA graphs need (a generator inside breaks the graph).
    """
    device = images.device
    noise = mask = None
    if config.input_noise_std > 0:
        noise = _per_run_random(tuple(images.shape[1:]), noise_gens, device, "normal")
    if config.dropout > 0:
        features = feature_count(config, int(images.shape[-1]))
        mask = _per_run_random((int(images.shape[1]), features), dropout_gens, device,
                               "uniform") < 1.0 - config.dropout
    return noise, mask


def network(params: Params, config: ModelConfig, images: torch.Tensor,
            noise: torch.Tensor | None = None, keep_mask: torch.Tensor | None = None
            ) -> torch.Tensor:
    """images (R, B, 1, H, W) normalized -> logits (R, B, C); a pure function of tensors.

    With `noise` it is added (times model.input_noise_std) to the input; with `keep_mask`
    the classifier's inputs are dropped where it is False and the rest scaled by 1/keep.
    Without either it is the evaluation-mode model.
    """
    runs, batch = images.shape[:2]
    if noise is not None:
        images = images + config.input_noise_std * noise
    # Runs become channel groups: (R, B, 1, H, W) -> (B, R*1, H, W).
    # Channels-last throughout: oneDNN's NHWC convolutions and the pools run faster on it.
    x = _channels_last(images.transpose(0, 1).flatten(1, 2))
    x = F.conv2d(x, conv_weight(params, "conv1"), params["conv1_b"].flatten(), padding=1,
                 groups=runs)
    x = activation(config, max_pool(x))
    x = F.conv2d(x, conv_weight(params, "conv2"), params["conv2_b"].flatten(), padding=1,
                 groups=runs)
    x = activation(config, max_pool(x))  # (B, R*C2, 7, 7)
    x = x.reshape(batch, runs, -1).transpose(0, 1)  # (R, B, C2*7*7)
    if keep_mask is not None:
        x = x * keep_mask / (1.0 - config.dropout)
    return torch.baddbmm(params["fc_b"].unsqueeze(1), x, params["fc_w"].transpose(1, 2))


NetworkFn = Callable[[Params, ModelConfig, torch.Tensor, torch.Tensor | None,
                      torch.Tensor | None], torch.Tensor]


def forward(params: Params, config: ModelConfig, images: torch.Tensor, *, training: bool,
            noise_gens: Sequence[torch.Generator] = (),
            dropout_gens: Sequence[torch.Generator] = (),
            network_fn: NetworkFn = network) -> torch.Tensor:
    """images (R, B, 1, H, W) normalized -> logits (R, B, C).

    In training mode, input noise and dropout are drawn per run from that run's generators.
    `network_fn` is `network` or a compiled version of it (bench.compiled).
    """
    noise = keep_mask = None
    if training:
        noise, keep_mask = draw_randomness(config, images, noise_gens, dropout_gens)
    return network_fn(params, config, images, noise, keep_mask)


# Images per evaluation chunk, all runs of a stack together. On the CPU the activations of
# a chunk must stay small: at 2,000 MNIST images conv1's output is 100 MB, which glibc maps
# and unmaps afresh each chunk, and the page faults made evaluation 3x slower than at 256.
EVAL_CHUNK_IMAGES = {"cpu": 256, "cuda": 10_000}


@torch.no_grad()
def predict(params: Params, config: ModelConfig, images: torch.Tensor,
            chunk: int | None = None) -> torch.Tensor:
    """Evaluation-mode class predictions of every run: images (M, 1, H, W) -> (R, M).

    `chunk`: images per forward pass and run (default: EVAL_CHUNK_IMAGES shared by the runs).
    """
    runs = params["fc_b"].shape[0]
    if chunk is None:
        chunk = max(1, EVAL_CHUNK_IMAGES.get(images.device.type, 2000) // runs)
    predictions = []
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].unsqueeze(0).expand(runs, -1, -1, -1, -1)
        predictions.append(forward(params, config, part, training=False).argmax(dim=-1))
    return torch.cat(predictions, dim=1)
