"""From raw dataset tensors to what training needs: slices, splits, normalization.

Everything returned lives on the training device as tensors; batches are drawn by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sslbench.bench.core.config import DataConfig, check_data_sizes
from sslbench.bench.core.datasets import DatasetSpec, get_dataset, load_raw, verify
from sslbench.bench.core.seeds import VALIDATION_SEED, generator
from sslbench.bench.errors import ConfigError, DataError
from sslbench.methods.losses import UNLABELED


@dataclass(frozen=True)
class Normalizer:
    """x_normalized = (x / 255 - mean) / std; mean, std scalars or (H, W) per pixel for one
    channel, (C, 1, 1) per channel or (C, H, W) per pixel for several."""

    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(N, H, W) uint8 -> (N, 1, H, W) float32; (N, C, H, W) -> (N, C, H, W)."""
        pixels = images_uint8.float().div_(255.0)
        normalized = (pixels - self.mean) / self.std
        return normalized.unsqueeze(1) if images_uint8.dim() == 3 else normalized


def fit_normalizer(train_images_uint8: torch.Tensor, mode: str, std_floor: float) -> Normalizer:
    """Statistics from the training images only, applied to train, validation and test.

    Images (N, H, W) of one channel, or (N, C, H, W): channelwise is then one mean and std
    per colour channel, pixelwise one per channel and pixel."""
    pixels = train_images_uint8.double().div(255.0)
    if mode == "channelwise":
        if pixels.dim() == 4:
            dims = (0, 2, 3)
            return Normalizer(pixels.mean(dim=dims, keepdim=True)[0].float(),
                              pixels.std(dim=dims, keepdim=True)[0].float())
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

    train_images (N, C, H, W) float; run_labels (R, N) int64, UNLABELED except each run's
    labeled subset; labeled_indices (R, k); test/val images (M, C, H, W), labels (M,).
    A folder dataset's unlabeled images are the last of the training images.
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


RawArrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                  torch.Tensor | None, int]


def load_arrays(config: DataConfig, root: Path, *, with_test: bool = True) -> RawArrays:
    """(train images, train labels, test images, test labels, unlabeled images, classes):
    images uint8 (N, H, W) for one channel (MNIST's own layout) or (N, C, H, W)."""
    spec = get_dataset(config.dataset)
    if spec.reader is None:  # MNIST's IDX files; DataConfig checked the sizes
        assert spec.num_classes is not None
        return (*load_raw(root, spec, test=with_test), None, spec.num_classes)
    verify(root, spec, test=with_test)
    try:
        splits = spec.reader(Path(root), with_test)
    except (OSError, ValueError, KeyError, IndexError, RuntimeError) as error:
        # A plugin's reader on a missing or malformed file: one line, naming the dataset.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"dataset {spec.name} could not be read from {root}: {reason}"
                        ) from None
    _check_shape(spec, tuple(splits.x_train.shape[1:]))
    # npz: and folder: are sized once read: the checks DataConfig could not make.
    check_data_sizes(config, splits.num_classes, len(splits.x_train))

    def layout(images: torch.Tensor) -> torch.Tensor:
        return images[:, 0] if images.shape[1] == 1 else images

    test_x = layout(splits.x_test) if with_test else None
    unlabeled = None if splits.unlabeled is None else layout(splits.unlabeled)
    return (layout(splits.x_train), splits.y_train, test_x, splits.y_test if with_test else None,
            unlabeled, splits.num_classes)


def _check_shape(spec: DatasetSpec, shape: tuple[int, ...]) -> None:
    declared = (spec.channels, spec.image_size, spec.image_size)
    if spec.num_classes is not None and shape != declared:  # a registered dataset's promise
        raise ConfigError(f"dataset {spec.name} declares images of {declared} (C, H, W) but "
                          f"its reader returned {shape}; fix its channels or image_size")


def prepare(config: DataConfig, seeds: Sequence[int], root: Path,
            device: torch.device, *, with_test: bool = True) -> PreparedData:
    train_x, train_y, test_x, test_y, unlabeled, num_classes = load_arrays(
        config, root, with_test=with_test)
    # DataConfig (or load_arrays) checked the sizes, and verify the files' hashes.
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

    if unlabeled is not None and len(unlabeled):  # never chosen as labeled: label -1
        train_x = torch.cat([train_x, unlabeled])
        train_y = torch.cat([train_y, torch.full((len(unlabeled),), -1, dtype=torch.long)])
    labeled = torch.stack([balanced_labeled_indices(train_y, config.num_labels, num_classes, s)
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
        num_classes=num_classes,
    )
