"""The two supervised baselines: the same model, noise, dropout, optimizer and evaluation as
every method, and no consistency term.

- `supervised`, the classic baseline the blog's "about 88%" names: each run trains on its own
  k labeled images alone (train.batches=labeled: batches of min(B, k) of them), for the same
  number of optimizer steps as the SSL methods under the profile (compute-matched, as USB
  does).
- `supervised_pipeline`: the SSL pipeline with the consistency term removed. It iterates all
  N training images, so at k = 100 only about one batch in six holds a labeled image; it
  answers "what does the consistency term buy inside the same pipeline". Until the classic
  baseline existed this was called `supervised`; its run ids keep that name
  (bench.config.HASHED_AS), so stored cells keep theirs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sslbench.methods.base import Batch, Method, StepLosses
from sslbench.methods.registry import register


class _NoConsistency(Method):
    uses_unlabeled = False

    def losses(self, logits: torch.Tensor, batch: Batch, epoch: int) -> StepLosses:
        supervised = self.supervised(logits, batch)
        return StepLosses(supervised=supervised, unsupervised=torch.zeros_like(supervised))


@register("supervised")
class Supervised(_NoConsistency):
    labeled_only = True
    default_overrides: ClassVar[dict[str, Any]] = {"train.batches": "labeled"}
    description = "the classic baseline: the labeled images alone, same model and steps"


@register("supervised_pipeline")
class SupervisedPipeline(_NoConsistency):
    description = "the SSL pipeline over all images with the consistency term removed"
