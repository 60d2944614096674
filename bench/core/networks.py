"""Networks by name (`model.name`): the contract a model meets, its registry, and the two
built in (`cnn`, the blog's; `conv_large`, the temporal ensembling paper's).

A network is a stack of R models of one architecture, one per seed, evaluated in one pass:
every parameter carries the run dimension R first, and run r never mixes with run s (a
stack of three computes what three single runs compute). The training loop owns the
parameters (a dict of tensors, so that the optimizer and the methods' EMA copies see them);
the network owns how they are drawn and applied, and any per-run state besides them, such
as batch norm's running means (`buffers`, saved in checkpoints).

A plugin registers its own with `@register_model("name")` on a `Network` subclass (README,
"Add your own network"); entry points of the group `sslbench.models` and `--plugin` load it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from sslbench.bench.core import conv_large, model
from sslbench.bench.errors import ConfigError
from sslbench.methods.registry import Registry

if TYPE_CHECKING:
    from sslbench.bench.core.config import ModelConfig

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class NetworkContext:
    """What a network is built for: its config section, the images' shape and the classes."""

    config: ModelConfig
    in_channels: int  # 1 for digits and clothes, 3 for colour images
    image_size: int  # height = width, pixels
    num_classes: int
    device: torch.device
    # The blog CNN's pure network function, compiled when train.compile asks (bench.compiled);
    # other networks run eagerly (the config refuses compile for them).
    network_fn: Any = None


class Network:
    """Subclass it and register it with `@register_model("name")`.

    Implement `init_params` and `forward`; `buffers` when the network keeps per-run state
    besides its parameters (batch norm's running statistics). Randomness (input noise,
    dropout) is drawn from the generators given, run r from its own, so that seeds are
    independent and a resumed run continues bit for bit.
    """

    name: ClassVar[str] = ""
    # Evaluation chunk: images per forward pass, all runs together (memory on the CPU).
    eval_chunk_images: ClassVar[dict[str, int]] = {"cpu": 256, "cuda": 10_000}

    def __init__(self, context: NetworkContext) -> None:
        self.context = context

    def init_params(self, init_gens: Sequence[torch.Generator]) -> Params:
        """R runs' parameters, each (R, ...), run r drawn from init_gens[r]; requires_grad."""
        raise NotImplementedError

    def forward(self, params: Params, images: torch.Tensor, *, training: bool,
                noise_gens: Sequence[torch.Generator] = (),
                dropout_gens: Sequence[torch.Generator] = ()) -> torch.Tensor:
        """images (R, B, C, H, W) normalized -> logits (R, B, K). Training: noise and dropout
        from the run's generators; evaluation: none."""
        raise NotImplementedError

    def buffers(self) -> dict[str, torch.Tensor]:
        """Per-run state besides the parameters, each (R, ...); updated in place."""
        return {}

    @torch.no_grad()
    def predict(self, params: Params, images: torch.Tensor, runs: int) -> torch.Tensor:
        """Evaluation-mode class predictions of every run: images (M, C, H, W) -> (R, M)."""
        chunk = max(1, self.eval_chunk_images.get(images.device.type, 2000) // runs)
        predictions = []
        for start in range(0, images.shape[0], chunk):
            part = images[start:start + chunk].unsqueeze(0).expand(runs, -1, -1, -1, -1)
            predictions.append(self.forward(params, part, training=False).argmax(dim=-1))
        return torch.cat(predictions, dim=1)


NETWORKS: Registry[type[Network]] = Registry(
    "model", error=ConfigError, hint=" (or load the plugin that registers it: --plugin)")

N = TypeVar("N", bound=type[Network])


def register_model(name: str) -> Callable[[N], N]:
    """Class decorator: `@register_model("my_net")` makes `model.name=my_net` available."""

    return NETWORKS.named_class(name)


def build_network(context: NetworkContext) -> Network:
    return NETWORKS.get(context.config.name)(context)


@register_model("cnn")
class BlogCNN(Network):
    """The blog's 2-conv CNN (bench.core.model): conv 16 -> conv 32 -> linear, weight norm,
    input noise, dropout; widths and activation from the model config."""

    def init_params(self, init_gens: Sequence[torch.Generator]) -> Params:
        c = self.context
        return model.init_params(c.config, c.num_classes, c.image_size, init_gens, c.device,
                                 channels=c.in_channels)

    def forward(self, params: Params, images: torch.Tensor, *, training: bool,
                noise_gens: Sequence[torch.Generator] = (),
                dropout_gens: Sequence[torch.Generator] = ()) -> torch.Tensor:
        return model.forward(params, self.context.config, images, training=training,
                             noise_gens=noise_gens, dropout_gens=dropout_gens,
                             network_fn=self.context.network_fn or model.network)

    def predict(self, params: Params, images: torch.Tensor, runs: int) -> torch.Tensor:
        # model.predict's chunks (the same numbers as before networks had names).
        return model.predict(params, self.context.config, images)


@register_model("conv_large")
class ConvLarge(Network):
    """The temporal ensembling paper's 13-layer ConvNet (bench.core.conv_large): leaky ReLU
    (model.leaky_slope), weight norm, mean-only batch norm with per-run running means (its
    buffers), dropout (model.dropout) and input noise (model.input_noise_std)."""

    def __init__(self, context: NetworkContext) -> None:
        super().__init__(context)
        cfg = context.config
        self.config = conv_large.ConvLargeConfig(
            in_channels=context.in_channels, num_classes=context.num_classes,
            input_noise_std=cfg.input_noise_std, dropout=cfg.dropout,
            leaky_slope=cfg.leaky_slope)
        self.running: Params = {}
        if context.image_size < 12:  # two 2x2 pools then a valid 3x3 convolution
            raise ConfigError(f"model conv_large needs images of at least 12x12 pixels, got "
                              f"{context.image_size}x{context.image_size}")

    def init_params(self, init_gens: Sequence[torch.Generator]) -> Params:
        params, self.running = conv_large.init_params(self.config, init_gens,
                                                      self.context.device)
        return params

    def forward(self, params: Params, images: torch.Tensor, *, training: bool,
                noise_gens: Sequence[torch.Generator] = (),
                dropout_gens: Sequence[torch.Generator] = ()) -> torch.Tensor:
        if not training:
            logits, _ = conv_large.network(params, self.running, self.config, images)
            return logits
        noise, masks = conv_large.draw_randomness(self.config, images, noise_gens,
                                                  dropout_gens)
        logits, means = conv_large.network(params, self.running, self.config, images, noise,
                                           masks, training=True)
        conv_large.update_running(self.running, means, self.config.bn_momentum)
        return logits

    def buffers(self) -> dict[str, torch.Tensor]:
        return self.running


def parameter_count(params: Params) -> int:
    """Trainable numbers of one run of a stack."""
    return sum(math.prod(t.shape[1:]) for t in params.values())
