"""Why the network sits at chance early on: measured step by step, not guessed.

Trains one run per (batch composition, seed) for the first epochs of the paper protocol (all
60,000 images, k = 100 labels, w(t) = 0 as in temporal ensembling's first epochs, so the
pipeline run is the TE run of those epochs) with the harness's own pieces (data, model,
optimizer, sampler, supervised loss), and records every PROBE_EVERY steps on 1,000 test
images: accuracy, the share of the most predicted class, the fraction of dead classifier
inputs (ReLU outputs zero on every probe image), and per step the labeled images in the
batch and the size of Adam's update ||delta theta||.

    .venv/bin/python reports/results/at-chance/at_chance.py --epochs 2 --seeds 0 1 \
        --out reports/results/at-chance/at_chance.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from sslbench.bench.core.data import prepare
from sslbench.bench.core.datasets import default_root
from sslbench.bench.core.model import (
    activation,
    conv_weight,
    forward,
    init_params,
    max_pool,
    predict,
)
from sslbench.bench.core.overrides import build_config
from sslbench.bench.core.sampling import batch_plan, epoch_order
from sslbench.bench.core.seeds import generator
from sslbench.methods.losses import UNLABELED, supervised_loss

PROBE_IMAGES = 1000
PROBE_EVERY = 20  # steps
COMPOSITIONS: dict[str, tuple[str, dict[str, Any]]] = {
                "all (the blog's pipeline)": ("supervised_pipeline", {}),
                # A diagnostic arm, not a harness switch: the same batches, but Adam steps
                # only on batches that hold a label, so no step moves the weights on the
                # momentum of an earlier image's gradient alone.
                "all, Adam steps on labeled batches only": ("supervised_pipeline",
                                                            {"__step_only_labeled": True}),
                "fixed, 10 labeled per batch": ("supervised_pipeline",
                                                {"train.batches": "fixed"}),
                "labeled only (classic)": ("supervised", {})}


@torch.no_grad()
def dead_fraction(params, config, images) -> float:
    """Share of the classifier's inputs (after the second ReLU) zero on every probe image."""
    x = images.unsqueeze(0).transpose(0, 1).flatten(1, 2)
    x = activation(config, max_pool(torch.nn.functional.conv2d(
        x, conv_weight(params, "conv1"), params["conv1_b"].flatten(), padding=1)))
    x = activation(config, max_pool(torch.nn.functional.conv2d(
        x, conv_weight(params, "conv2"), params["conv2_b"].flatten(), padding=1)))
    return float((x.flatten(1).amax(dim=0) <= 0).float().mean())


def trace(method: str, overrides: dict, seed: int, epochs: int, root: Path) -> dict:
    overrides = dict(overrides)
    step_only_labeled = bool(overrides.pop("__step_only_labeled", False))
    config = build_config(method, seed, "paper", overrides)
    data = prepare(config.data, [seed], root, torch.device("cpu"))
    assert data.test_images is not None and data.test_labels is not None
    probe_x = data.test_images[:PROBE_IMAGES]
    probe_y = data.test_labels[:PROBE_IMAGES]
    params = init_params(config.model, data.num_classes, 28, [generator(seed, "init")],
                         torch.device("cpu"))
    optimizer = torch.optim.Adam(params.values(), lr=config.train.lr,
                                 betas=(config.train.beta1, config.train.beta2))
    plan = batch_plan(config.train, data.num_train, config.data.num_labels)
    order_gens = [generator(seed, "order")]
    noise_gens, dropout_gens = [generator(seed, "noise")], [generator(seed, "dropout")]
    probes, steps = [], []
    step_count = 0
    for _ in range(epochs):
        order = epoch_order(plan, data.labeled_indices, data.num_train, order_gens)
        for step in range(plan.steps):
            indices = order[:, step * plan.batch_size:(step + 1) * plan.batch_size]
            labels = data.run_labels.gather(1, indices)
            before = torch.cat([p.detach().flatten() for p in params.values()])
            logits = forward(params, config.model, data.train_images[indices], training=True,
                             noise_gens=noise_gens, dropout_gens=dropout_gens)
            loss = supervised_loss(logits, labels, config.method.supervised_scaling)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            if not step_only_labeled or bool((labels != UNLABELED).any()):
                optimizer.step()
            after = torch.cat([p.detach().flatten() for p in params.values()])
            steps.append({"labeled": int((labels != UNLABELED).sum()),
                          "update_norm": float((after - before).norm())})
            if step_count % PROBE_EVERY == 0:
                predictions = predict(params, config.model, probe_x)[0]
                counts = torch.bincount(predictions, minlength=data.num_classes)
                probes.append({"step": step_count,
                               "accuracy": float((predictions == probe_y).float().mean()),
                               "top_class_share": float(counts.max()) / PROBE_IMAGES,
                               "top_class": int(counts.argmax()),
                               "dead_inputs": dead_fraction(params, config.model, probe_x)})
            step_count += 1
    with_label = [s["update_norm"] for s in steps if s["labeled"]]
    without = [s["update_norm"] for s in steps if not s["labeled"]]
    at_chance = [p for p in probes if p["top_class_share"] > 0.9]
    return {"method": method, "overrides": overrides, "step_only_labeled": step_only_labeled,
            "seed": seed, "epochs": epochs,
            "steps": step_count,
            "batches_with_labels": len(with_label), "batches_without": len(without),
            "median_update_with_labels": float(torch.tensor(with_label).median()),
            "median_update_without": (float(torch.tensor(without).median()) if without
                                      else math.nan),
            "probes_with_one_class_over_90pct": len(at_chance), "probes": len(probes),
            "final_probe": probes[-1], "max_dead_inputs": max(p["dead_inputs"] for p in probes),
            "probe_trace": probes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arms", nargs="+", choices=list(COMPOSITIONS), default=list(COMPOSITIONS),
                        help="which compositions to trace (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for name in args.arms:
        method, overrides = COMPOSITIONS[name]
        for seed in args.seeds:
            result = trace(method, overrides, seed, args.epochs, default_root())
            result["composition"] = name
            results.append(result)
            print(f"{name:30s} seed {seed}: one class >90% of predictions in "
                  f"{result['probes_with_one_class_over_90pct']}/{result['probes']} probes; "
                  f"final probe acc {100 * result['final_probe']['accuracy']:.1f}%, top class "
                  f"{100 * result['final_probe']['top_class_share']:.0f}%; update norm with "
                  f"labels {result['median_update_with_labels']:.4f}, without "
                  f"{result['median_update_without']:.4f}; dead inputs max "
                  f"{100 * result['max_dead_inputs']:.1f}%", flush=True)
            args.out.write_text(json.dumps(results, indent=1))  # after each run: kept if killed


if __name__ == "__main__":
    main()
