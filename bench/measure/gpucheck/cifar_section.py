"""Section 5, cifar_projection: the `cifar10_4000` grid's training step (the paper's
`conv_large` on 32x32 colour images, each of its methods), timed on the device in a process
of its own, and the grid's time at the `paper_cifar` profile projected from it.

No CIFAR-10 files are needed: a step's cost depends on the images' shape, not their
content, so the steps run on random uint8 images of CIFAR-10's shape (an `npz:` dataset in
the output folder). The projection is arithmetic on the measured step and evaluation times,
not a measurement of the grid.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from sslbench.bench.measure.gpucheck.document import Check
from sslbench.bench.measure.gpucheck.options import PROFILE_EPOCH, Options
from sslbench.bench.measure.gpucheck.process import SectionFile, run_child
from sslbench.bench.messages import say

GRID = "cifar10_4000"
PROFILE = "paper_cifar"
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # images per epoch: trained on, evaluated
SEEDS_PER_VARIANT = 10  # the paper's Table 2 averages 10 runs of each method


def run_cifar_projection(check: Check, reserve_s: float) -> dict[str, Any]:
    """The steps in their own process, killed at the budget's end."""
    return run_child(check.options, "cifar_projection", timeout_s=check.left_s(),
                     reserve_s=reserve_s)


def child_cifar(options: Options, deadline: float, partial: SectionFile) -> dict[str, Any]:
    """Per variant of the grid: seconds per training step and per evaluated image, then the
    projection; the result rewritten after each variant."""
    import torch

    from sslbench.ablations import get_grid
    from sslbench.bench.core.data import prepare
    from sslbench.bench.core.overrides import build_config
    from sslbench.bench.core.train import init_state, start_epoch
    from sslbench.bench.measure.gpucheck.profile_section import seconds_per_step

    del deadline  # a few steps per variant: the parent's estimate covers them
    sizes, device = options.sizes, torch.device(options.device)
    images = options.out / "cifar-shaped.npz"
    _write_cifar_shaped(images, sizes.cifar_train_images, sizes.cifar_eval_images)
    # What the step's cost depends on: the grid's network, methods and batch; 100 labels
    # (10 a class) fit the random images, and the step does not depend on their count.
    overrides = {"data.dataset": f"npz:{images}", "data.num_labels": 100,
                 "train.batch_size": sizes.cifar_batch}
    grid = get_grid(GRID)
    result: dict[str, Any] = {"grid": GRID, "profile": PROFILE, "batch": sizes.cifar_batch,
                              "warmup_steps": sizes.cifar_warmup_steps,
                              "steps": sizes.cifar_steps, "variants": {}}
    for variant in grid.variants:
        say(f"cifar_projection: {variant.name} ...")
        config = build_config(variant.method, 0, PROFILE, overrides, variant.overrides)
        state = init_state(config, [0], prepare(config.data, [0], options.root, device), device)
        start_epoch(state)
        weight = torch.tensor(state.method.weight(PROFILE_EPOCH), device=device)
        step_s = seconds_per_step(state, weight, sizes.cifar_warmup_steps, sizes.cifar_steps)
        assert state.data.test_images is not None
        probe = state.data.test_images
        started = time.perf_counter()
        state.network.predict(state.params, probe, 1)
        eval_s_per_image = (time.perf_counter() - started) / len(probe)
        result["variants"][variant.name] = {
            "method": variant.method, "ms_per_step": round(step_s * 1000, 3),
            "train_images_per_s": round(sizes.cifar_batch / step_s, 1),
            "eval_ms_per_image": round(eval_s_per_image * 1000, 4)}
        partial.write("running", result)
    result["projection"] = project_cifar(result["variants"], sizes.cifar_batch)
    return result


def project_cifar(variants: dict[str, dict[str, Any]], batch: int) -> dict[str, Any]:
    """One run of each variant at paper_cifar (300 epochs of ceil(50,000 / batch) steps and
    10,000 test images evaluated), and the grid at the paper's 10 seeds a variant, one run
    after another on one device."""
    from sslbench.bench.core.config import PAPER_EPOCHS

    steps = math.ceil(CIFAR_TRAIN / batch)
    per_run = {name: PAPER_EPOCHS * (steps * v["ms_per_step"] + CIFAR_TEST * v["eval_ms_per_image"])
               / 1000 for name, v in variants.items()}
    grid_s = SEEDS_PER_VARIANT * sum(per_run.values())
    arithmetic = (f"{PAPER_EPOCHS} epochs x ({steps} steps x ms/step + {CIFAR_TEST:,} test "
                  f"images x ms/image) per run; {SEEDS_PER_VARIANT} seeds x "
                  f"{len(per_run)} variants, one run at a time")
    return {"epochs": PAPER_EPOCHS, "steps_per_epoch": steps,
            "run_s": {k: round(v, 1) for k, v in per_run.items()},
            "grid_s": round(grid_s, 1), "seeds_per_variant": SEEDS_PER_VARIANT,
            "arithmetic": arithmetic}


def _write_cifar_shaped(path: Any, train_images: int, test_images: int) -> None:
    """Random uint8 images (N, 32, 32, 3) and balanced labels: CIFAR-10's shape."""
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {}
    for split, n in (("train", train_images), ("test", test_images)):
        arrays[f"x_{split}"] = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        arrays[f"y_{split}"] = np.arange(n) % 10
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(path)

