"""The network function a training pass runs: eager, torch.compile'd, or compiled with
CUDA graphs (`train.compile`, `train.cuda_graphs`).

Compilation covers the pure network (`bench.model.network`: convolutions, pools,
activations, dropout scaling, classifier) and its backward; randomness is drawn outside it
from each run's generators, so the compiled and eager runs see the same noise and masks.
The losses, the method's state and the optimizer stay eager.

Measured on this project's CPU (one thread, blog CNN, batch 100): compiling gained 5% in
fp32 and halved bf16's speed, after a compile of about 10 s; so both are off by default.
"""

from __future__ import annotations

import torch

from sslbench.bench.core.config import TrainConfig
from sslbench.bench.core.model import NetworkFn, network
from sslbench.bench.errors import UserError


def network_for(train: TrainConfig, device: torch.device) -> NetworkFn:
    """`network`, or its compiled version when the config asks for one."""
    if train.cuda_graphs and device.type != "cuda":
        raise UserError(f"train.cuda_graphs needs a CUDA device, but this run is on {device}; "
                        f"drop --set train.cuda_graphs=true or use --device cuda")
    if not (train.compile or train.cuda_graphs):
        return network
    # reduce-overhead: torch.compile records CUDA graphs of the compiled step and replays
    # them, one launch instead of one per kernel. Shapes are static (batch, runs), except a
    # shorter last batch, which gets its own graph.
    mode = "reduce-overhead" if train.cuda_graphs else "default"
    compiled: NetworkFn = torch.compile(network, mode=mode, dynamic=False)
    return compiled
