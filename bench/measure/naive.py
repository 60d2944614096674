"""The naive pipeline: temporal ensembling on MNIST as the 2018 blog built it.

Reproduces github.com/ferretj/temporal-ensembling (`temporal_ensembling.py`, `utils.py`,
`mnist_eval.py`) in today's PyTorch, as the baseline that `sslbench bench` measures the
harness against. Same CNN, optimizer, loss and ensemble update as the harness's
`temporal_ensembling`; only the way it is executed differs:

- torchvision's `datasets.MNIST` with `ToTensor()` and `Normalize((0.1307,), (0.3081,))`:
  every image goes through PIL and two transforms in Python, one sample at a time, and a
  `DataLoader` (batch 100, shuffled, no workers) collates them into a batch on the host;
- each batch is copied to the device at each step;
- an `nn.Module` CNN (one model per process, no stacking of seeds) with weight norm;
- host syncs in every step: `torch.nonzero` to count the labeled samples of the batch, and
  three `.item()` reads for the loss logging, each waiting for the device to finish.

Changes from the blog, none of which touch the work per step: `torch.nn.utils.parametrizations.
weight_norm` (the old hook is deprecated), `.item()` for `.data[0]`, the labels of a run's
labeled subset chosen like the harness's (same seed, same subset), the ensemble targets
gathered by each sample's DataLoader index (the blog read them by batch position, which is
only right without shuffling), and no best-model checkpoint written per epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.data import balanced_labeled_indices
from sslbench.bench.core.datasets import MNIST, MNIST_CLASSES, MNIST_TRAIN, verify
from sslbench.methods.losses import UNLABELED
from sslbench.methods.ramp import unsupervised_weight

# The blog's fixed normalization (MNIST's mean and std over the full training set).
BLOG_MEAN, BLOG_STD = (0.1307,), (0.3081,)


class GaussianNoise(nn.Module):
    """x + N(0, std^2) noise, drawn fresh at each call (the blog's `GaussianNoise`)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) * self.std


class BlogCNN(nn.Module):
    """The blog's `CNN`: images (B, 1, 28, 28) -> logits (B, 10)."""

    def __init__(self, noise_std: float = 0.15, dropout: float = 0.5, fm1: int = 16,
                 fm2: int = 32, weight_norm: bool = True) -> None:
        super().__init__()
        self.fm2 = fm2
        self.noise = GaussianNoise(noise_std)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        conv1, conv2 = nn.Conv2d(1, fm1, 3, padding=1), nn.Conv2d(fm1, fm2, 3, padding=1)
        if weight_norm:
            conv1 = nn.utils.parametrizations.weight_norm(conv1)
            conv2 = nn.utils.parametrizations.weight_norm(conv2)
        self.conv1, self.conv2 = conv1, conv2
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(fm2 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = self.noise(x)
        x = self.act(self.pool(self.conv1(x)))
        x = self.act(self.pool(self.conv2(x)))
        x = x.view(-1, self.fm2 * 7 * 7)
        return self.fc(self.drop(x))


class IndexedMNIST(Dataset[tuple[torch.Tensor, int, int]]):
    """The first `size` images of torchvision's MNIST, transformed per sample on access.

    Yields (image (1, 28, 28) float, label or UNLABELED, index): the index lets the loop
    find each sample's ensemble target after shuffling.
    """

    def __init__(self, root: Path, *, train: bool, size: int) -> None:
        from torchvision import datasets, transforms

        transform = transforms.Compose([transforms.ToTensor(),
                                        transforms.Normalize(BLOG_MEAN, BLOG_STD)])
        self.base = datasets.MNIST(str(root), train=train, download=False, transform=transform)
        self.size = min(size, len(self.base))
        self.labels = self.base.targets[: self.size].clone()

    def keep_labels(self, labeled: torch.Tensor) -> None:
        """The blog's masking: every label outside `labeled` (indices) becomes UNLABELED."""
        masked = torch.full_like(self.labels, UNLABELED)
        masked[labeled] = self.labels[labeled]
        self.labels = masked

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, _ = self.base[index]  # PIL image -> ToTensor -> Normalize, in Python
        return image, int(self.labels[index]), index


def temporal_loss(outputs: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The blog's `temporal_loss`: outputs, targets (B, C) raw; labels (B,) with UNLABELED.

    Returns (total, supervised, unsupervised, labeled count). The supervised part is the
    cross-entropy averaged over the batch's labeled samples, found with `torch.nonzero`
    (a host sync); the unsupervised part is the summed squared softmax difference / (B*C).
    """
    labeled = torch.nonzero(labels >= 0).view(-1)
    num_labeled = len(labeled)  # the length of a nonzero result waits for the device
    if num_labeled > 0:
        supervised = F.cross_entropy(outputs.index_select(0, labeled), labels[labeled])
    else:
        supervised = torch.zeros((), device=outputs.device)
    squared = (F.softmax(outputs, dim=1) - F.softmax(targets, dim=1)) ** 2
    unsupervised = squared.sum() / outputs.nelement()
    return supervised + weight * unsupervised, supervised, unsupervised, num_labeled


@dataclass
class NaiveResult:
    """Per-epoch figures of one naive run (lists have one entry per epoch)."""

    epoch_seconds: list[float]  # training steps plus the ensemble update, as the harness's
    train_images_per_s: list[float]
    train_loss: list[float]  # mean over the epoch's steps
    supervised_loss: list[float]  # mean over the labeled samples (the blog's sum / k)
    unsupervised_loss: list[float]  # mean over the epoch's steps, before the weight
    final_test_accuracy: float  # fraction in [0, 1], after the last epoch


def make_loaders(config: RunConfig, root: Path) -> tuple[DataLoader, DataLoader, int]:
    """The blog's loaders on the config's slice and the seed's labeled subset.

    Returns (train loader, test loader, number of labeled samples).
    """
    verify(root, MNIST)
    data = config.data
    train = IndexedMNIST(root, train=True, size=data.train_size or MNIST_TRAIN)
    labeled = balanced_labeled_indices(train.labels, data.num_labels, MNIST_CLASSES,
                                       config.seed)
    train.keep_labels(labeled)
    test = IndexedMNIST(root, train=False, size=data.test_size or 10_000)
    # Shuffled with a seeded generator: the same seed gives the same batch order.
    order = torch.Generator().manual_seed(config.seed)
    batch = config.train.batch_size
    return (DataLoader(train, batch_size=batch, shuffle=True, num_workers=0, generator=order),
            DataLoader(test, batch_size=batch, shuffle=False, num_workers=0), len(labeled))


def build_model(config: RunConfig) -> BlogCNN:
    model = config.model
    return BlogCNN(noise_std=model.input_noise_std, dropout=model.dropout,
                   fm1=model.conv1_channels, fm2=model.conv2_channels,
                   weight_norm=model.weight_norm)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Test accuracy in [0, 1] in evaluation mode (no noise, no dropout)."""
    model.eval()
    correct = total = 0
    for images, labels, _ in loader:
        predicted = model(images.to(device)).argmax(dim=1).cpu()
        correct += int((predicted == labels).sum())
        total += len(labels)
    model.train()
    return correct / total


def train_naive(config: RunConfig, *, device: torch.device, data_root: Path) -> NaiveResult:
    """Train one run of `config` (temporal ensembling) the blog's way; see the module doc."""
    torch.manual_seed(config.seed)  # the global stream: init, noise, dropout (as the blog)
    train_loader, test_loader, num_labeled = make_loaders(config, data_root)
    num_train = len(train_loader.dataset)  # type: ignore[arg-type]
    model = build_model(config).to(device)
    model.train()
    cfg_train, cfg_method = config.train, config.method
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg_train.lr,
                                 betas=(cfg_train.beta1, cfg_train.beta2))
    alpha = cfg_method.options.ensemble_momentum
    ensemble = torch.zeros(num_train, 10, device=device)  # Z
    targets = torch.zeros(num_train, 10, device=device)  # z = Z / (1 - alpha^t)
    outputs = torch.zeros(num_train, 10, device=device)  # this epoch's outputs
    result = NaiveResult([], [], [], [], [], float("nan"))

    for epoch in range(cfg_train.epochs):
        started = time.perf_counter()
        w = unsupervised_weight(epoch, w_max=cfg_method.w_max, ramp_epochs=cfg_method.ramp_epochs,
                                shape=cfg_method.ramp_shape, num_labels=num_labeled,
                                num_train=num_train)
        weight = torch.tensor([w], device=device)  # the blog's Variable(FloatTensor([w]).cuda())
        losses: list[float] = []
        supervised: list[float] = []
        unsupervised: list[float] = []
        for images, labels, indices in train_loader:
            images, labels = images.to(device), labels.to(device)
            indices = indices.to(device)
            optimizer.zero_grad()
            out = model(images)
            loss, sup, unsup, nbsup = temporal_loss(out, targets[indices], weight, labels)
            outputs[indices] = out.detach().clone()
            # The blog's logging: three host reads per step.
            losses.append(loss.item())
            supervised.append(nbsup * sup.item())
            unsupervised.append(unsup.item())
            loss.backward()
            optimizer.step()
        ensemble = alpha * ensemble + (1.0 - alpha) * outputs
        targets = ensemble * (1.0 / (1.0 - alpha ** (epoch + 1)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        result.epoch_seconds.append(seconds)
        result.train_images_per_s.append(num_train / seconds)
        result.train_loss.append(sum(losses) / len(losses))
        result.supervised_loss.append(sum(supervised) / num_labeled)
        result.unsupervised_loss.append(sum(unsupervised) / len(unsupervised))
    result.final_test_accuracy = evaluate(model, test_loader, device)
    return result
