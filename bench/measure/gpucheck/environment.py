"""What produced the figures (results.json's `environment`), and the device's folder name."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any


def environment(device_name: str) -> dict[str, Any]:
    """What produced the figures: device, driver, CUDA, cuDNN, torch, commit, cores."""
    import torch

    from sslbench.bench.core.precision import native_bf16
    from sslbench.bench.core.record import environment as record_environment

    device = torch.device(device_name)
    env = record_environment(device)
    env.update(cpu_count=os.cpu_count(), bf16_native=native_bf16(device),
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
               else None,
               tf32={"matmul": torch.backends.cuda.matmul.allow_tf32,
                     "cudnn": torch.backends.cudnn.allow_tf32})
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                      "memory_gib": round(props.total_memory / 2**30, 1),
                      "multiprocessors": props.multi_processor_count,
                      "nvidia_smi": _nvidia_smi()}
    return env


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                               "power.limit,clocks.max.sm", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def device_slug(device_name: str, tiny: bool) -> str:
    """`gpu-nvidia-h200`, `gpu-cpu-tiny`: the default output folder's name."""
    import torch

    name = "cpu"
    if device_name.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device_name))
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"gpu-{slug}" + ("-tiny" if tiny else "")
