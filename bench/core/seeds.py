"""Independent random streams derived from a run's seed.

Each stream (the label split "labels", "init", the batch "order", input "noise", "dropout",
"augment", and the fixed "validation" split) gets its own generator
seeded by hashing (seed, stream name), so changing how one stream is used never shifts
another: the same seed draws the same labeled subset in every variant of a grid.
"""

from __future__ import annotations

import hashlib

import torch

# The validation split is one fixed held-out set for every run (it must not move with the
# seed, or runs of one search would be scored on different images).
VALIDATION_SEED = 0


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for `stream`, a pure function of (seed, stream)."""
    digest = hashlib.sha256(f"sslbench:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, stream))
    return gen
