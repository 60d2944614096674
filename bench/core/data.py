"""From raw dataset tensors to what training needs: slices, splits, normalization.

Everything returned lives on the training device as tensors; batches are drawn by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sslbench.bench.core.config import DataConfig
from sslbench.bench.core.datasets import get_dataset, load_raw
from sslbench.bench.core.seeds import VALIDATION_SEED, generator
from sslbench.bench.errors import ConfigError
from sslbench.methods.losses import UNLABELED


@dataclass(frozen=True)
class Normalizer:
    """x_normalized = (x / 255 - mean) / std; mean, std scalars or (H, W) per pixel."""

    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(N, H, W) uint8 -> (N, 1, H, W) float32."""
        pixels = images_uint8.float().div_(255.0)
        return ((pixels - self.mean) / self.std).unsqueeze(1)


def fit_normalizer(train_images_uint8: torch.Tensor, mode: str, std_floor: float) -> Normalizer:
    """Statistics from the training images only, applied to train, validation and test."""
    pixels = train_images_uint8.double().div(255.0)
    if mode == "channelwise":
        return Normalizer(pixels.mean().float(), pixels.std().float())
    if mode == "pixelwise":
        std = pixels.std(dim=0).clamp_min(std_floor)
        return Normalizer(pixels.mean(dim=0).float(), std.float())
    raise ConfigError(f"unknown normalization {mode!r}; choose channelwise or pixelwise")


def balanced_labeled_indices(labels: torch.Tensor, num_labels: int, num_classes: int,
                             seed: int) -> torch.Tensor:
    """num_labels / num_classes indices per class, drawn by the seed's `labels` stream.

    labels (N,) -> sorted int64 indices (num_labels,). Depends only on (labels, k, seed).
    """
    if num_labels % num_classes:  # this function's own contract (naive.py calls it too)
        raise ConfigError(f"data.num_labels={num_labels} must be divisible by the "
                          f"{num_classes} classes for a balanced split")
    per_class = num_labels // num_classes
    gen = generator(seed, "labels")
    chosen = []
    for cls in range(num_classes):
        candidates = (labels == cls).nonzero().flatten()
        if len(candidates) < per_class:
            raise ConfigError(f"data.num_labels={num_labels} needs {per_class} images of class "
                              f"{cls}, but the training images hold {len(candidates)}; "
                              f"use fewer labels or a larger data.train_size")
        chosen.append(candidates[torch.randperm(len(candidates), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


@dataclass(frozen=True)
class PreparedData:
    """Training and evaluation tensors for R runs that share a data config.

    train_images (N, 1, H, W) float; run_labels (R, N) int64, UNLABELED except each run's
    labeled subset; labeled_indices (R, k); test/val images (M, 1, H, W), labels (M,).
    The test set is None when it was not loaded (a search never reads it).
    """

    train_images: torch.Tensor
    run_labels: torch.Tensor
    labeled_indices: torch.Tensor
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    val_images: torch.Tensor | None
    val_labels: torch.Tensor | None
    num_classes: int

    @property
    def num_train(self) -> int:
        return int(self.train_images.shape[0])


def prepare(config: DataConfig, seeds: Sequence[int], root: Path,
            device: torch.device, *, with_test: bool = True) -> PreparedData:
    spec = get_dataset(config.dataset)
    train_x, train_y, test_x, test_y = load_raw(root, spec, test=with_test)
    # DataConfig checked the sizes against the dataset's (and load_raw its files' hashes).
    if config.train_size is not None:
        train_x, train_y = train_x[: config.train_size], train_y[: config.train_size]
    if config.test_size is not None and test_x is not None and test_y is not None:
        test_x, test_y = test_x[: config.test_size], test_y[: config.test_size]

    val_x = val_y = None
    if config.val_size:
        order = torch.randperm(len(train_x), generator=generator(VALIDATION_SEED, "validation"))
        val_idx = order[: config.val_size].sort().values
        pool_idx = order[config.val_size:].sort().values
        val_x, val_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[pool_idx], train_y[pool_idx]

    labeled = torch.stack([balanced_labeled_indices(train_y, config.num_labels, spec.num_classes, s)
                           for s in seeds])
    run_labels = torch.full((len(seeds), len(train_x)), UNLABELED, dtype=torch.long)
    run_labels.scatter_(1, labeled, train_y[labeled])

    normalize = fit_normalizer(train_x, config.normalization, config.pixel_std_floor)
    return PreparedData(
        train_images=normalize(train_x).to(device),
        run_labels=run_labels.to(device),
        labeled_indices=labeled,
        test_images=None if test_x is None else normalize(test_x).to(device),
        test_labels=None if test_y is None else test_y.to(device),
        val_images=None if val_x is None else normalize(val_x).to(device),
        val_labels=None if val_y is None else val_y.to(device),
        num_classes=spec.num_classes,
    )
