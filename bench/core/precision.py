"""Mixed precision for the training passes: `train.precision` = fp32 | bf16 | auto.

bf16 runs the forward passes (and so their backward) under `torch.autocast` with bfloat16:
convolutions and matmuls compute in bf16, parameters, optimizer state, losses, the
ensemble and evaluation stay fp32. `auto` picks bf16 where the hardware computes it
natively (CUDA devices with bf16, CPUs whose oneDNN has bf16 kernels: AVX-512 BF16 or AMX),
else fp32. The resolved choice is written into every run record.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 convolutions and matmuls in hardware."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 or fp32 for this device; fp32 and bf16 as asked."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def pass_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context a training pass runs in, for a resolved precision."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
