"""Which samples each training batch holds: the batch-composition switch `train.batches`.

    all      a plain shuffle of every training image per epoch (the blog); labeled images
             land wherever the shuffle puts them, about B k / N per batch (1 in 6 batches at
             k = 100, B = 100, N = 60,000)
    fixed    every batch holds `train.labeled_per_batch` (L) labeled images beside B - L
             unlabeled ones (mean teacher's two-stream sampler): each epoch takes its
             steps * (B - L) unlabeled images from a fresh shuffle of them (at the default
             step count, 54,000 of 59,900), the labeled ones cycle through fresh shuffles
    labeled  the run's k labeled images alone, in batches of b = min(B, k), cycling through
             fresh shuffles (each gives floor(k / b) whole batches): the classic supervised
             baseline

Orders are drawn on the CPU from each run's `order` generator, so they match across
devices, and laid out as one (R, steps * b) index tensor that the loop slices batch by
batch. With `all` and the default step count the draw is exactly one randperm(N) per run
per epoch, as before the switch existed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sslbench.bench.core.config import TrainConfig
from sslbench.bench.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    """The shape of one epoch: `steps` optimizer steps of `batch_size` images each (the
    last batch of `all` may be shorter when B does not divide N)."""

    batches: str
    steps: int
    batch_size: int
    labeled_per_batch: int  # L for `fixed`, b for `labeled`, 0 for `all` (it varies)
    images_per_epoch: int  # per run

    def schedule(self, epochs: int) -> dict[str, int | str]:
        """The record's `schedule`: which images the batches held, how many steps ran."""
        return {"batches": self.batches, "steps_per_epoch": self.steps,
                "batch_size": self.batch_size, "labeled_per_batch": self.labeled_per_batch,
                "images_per_epoch": self.images_per_epoch, "total_steps": self.steps * epochs}


def batch_plan(train: TrainConfig, num_train: int, num_labels: int) -> BatchPlan:
    """The epoch's shape; the default step count is the SSL pipeline's, ceil(N / B), so
    every composition gets the same number of optimizer steps (compute-matched)."""
    size = train.batch_size
    pipeline_steps = math.ceil(num_train / size)
    steps = train.steps_per_epoch or pipeline_steps
    if train.batches == "all":
        images = num_train if train.steps_per_epoch is None else steps * size
        return BatchPlan("all", steps, size, 0, images)
    if train.batches == "labeled":
        size = min(size, num_labels)
        return BatchPlan("labeled", steps, size, size, steps * size)
    labeled = train.labeled_per_batch
    if not 0 < labeled < size:
        raise ConfigError(f"train.labeled_per_batch={labeled} must be between 1 and "
                          f"train.batch_size - 1 = {size - 1} for train.batches=fixed")
    if labeled > num_labels:
        raise ConfigError(f"train.labeled_per_batch={labeled} exceeds the {num_labels} labeled "
                          f"images (data.num_labels)")
    return BatchPlan("fixed", steps, size, labeled, steps * size)


def _stream(pool: torch.Tensor, count: int, gen: torch.Generator, chunk: int = 1) -> torch.Tensor:
    """`count` indices from `pool` as consecutive fresh shuffles of it, cut at `count`.

    Batches of `chunk` are cut from it; each shuffle gives only whole batches (the rest of
    it is dropped, as DataLoader's drop_last does), so no batch straddles two shuffles and
    none holds an image twice.
    """
    per_shuffle = len(pool) // chunk * chunk
    shuffles = [pool[torch.randperm(len(pool), generator=gen)][:per_shuffle]
                for _ in range(math.ceil(count / per_shuffle))]
    return torch.cat(shuffles)[:count]


def epoch_order(plan: BatchPlan, labeled_indices: torch.Tensor, num_train: int,
                gens: Sequence[torch.Generator]) -> torch.Tensor:
    """(R, images_per_epoch) int64 sample indices on the CPU; batch j is the slice
    [j b, (j + 1) b) of each row. labeled_indices (R, k) holds each run's labeled subset."""
    every = torch.arange(num_train)
    rows = []
    for run, gen in enumerate(gens):
        labeled = labeled_indices[run]
        if plan.batches == "all":
            rows.append(_stream(every, plan.images_per_epoch, gen))
        elif plan.batches == "labeled":
            rows.append(_stream(labeled, plan.images_per_epoch, gen, plan.batch_size))
        else:
            is_unlabeled = torch.ones(num_train, dtype=torch.bool)
            is_unlabeled[labeled] = False
            unlabeled_count = plan.batch_size - plan.labeled_per_batch
            unlabeled = _stream(every[is_unlabeled], plan.steps * unlabeled_count, gen)
            labeled_part = _stream(labeled, plan.steps * plan.labeled_per_batch, gen,
                                   plan.labeled_per_batch)
            rows.append(torch.cat([labeled_part.view(plan.steps, -1),
                                   unlabeled.view(plan.steps, -1)], dim=1).flatten())
    return torch.stack(rows)
