"""Which device a command trains on."""

from __future__ import annotations

import torch

from sslbench.bench.errors import UserError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA device is available; "
                        f"use --device cpu or --device auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)
