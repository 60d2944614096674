"""The CPU training step against this core's roofline: is it compute-bound, and where does
the rest of its time go?

    python -m sslbench.bench.measure.roofline --out reports/results/bench-cpu   # one thread, ~2 min

Three measurements, one thread, on a quiet machine (nothing else may run: the figures are
rates of one core):
  peak   this core's fp32 and bf16 matmul rate (square matrices, the best of several sizes):
         the roof a convolution could at most reach.
  ops    every op of temporal ensembling's step that does arithmetic worth counting, timed
         alone on the step's real shapes (batch 100, channels-last as bench.model runs
         them): conv1 and conv2 forward, their input and weight gradients, the classifier
         and its gradients. FLOPs are counted by hand (2 per multiply-add).
  step   the real `bench.train.train_step` under torch.profiler: each op's own time per
         step, so the ops without a FLOP count (pools, activations, dropout, the losses,
         Adam, the ensemble's gather and scatter, autograd's bookkeeping) are in the table.
Writes roofline.json and roofline.md into --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sslbench.bench.files import check_writable, write_text_atomic

BATCH = 100  # the blog's batch size
IMAGE = 28  # MNIST
CLASSES = 10
MATMUL_SIZES = (256, 512, 1024, 2048)  # the peak is the best of them
STEP_WARMUP, STEP_TIMED = 20, 100  # training steps untimed, then timed and profiled

# The ops of the step with a hand count, by category of the profile they fall in.
CONV_CATEGORY = {"aten::mkldnn_convolution", "aten::convolution_backward",
                 "aten::convolution", "aten::_convolution", "aten::conv2d"}


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_gflops(dtype: torch.dtype) -> dict[str, float]:
    """The best matmul rate over MATMUL_SIZES (GFLOP/s), with the size that gave it."""
    best: dict[str, float] = {"gflops": 0.0, "size": 0}
    for n in MATMUL_SIZES:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        repeats = max(3, int(2e9 / (2 * n**3)))  # about 2 GFLOP per size
        seconds = median_seconds(lambda a=a, b=b: torch.mm(a, b), repeats)  # type: ignore[misc]
        gflops = 2 * n**3 / seconds / 1e9
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "size": n}
    return best


def _conv_ops(name: str, cin: int, cout: int, size: int, input_grad: bool
              ) -> list[tuple[str, float, Callable[[], Any]]]:
    """(op, FLOPs, fn) of one 3x3 pad-1 convolution layer and its backward."""
    cl = torch.channels_last
    x = torch.randn(BATCH, cin, size, size).contiguous(memory_format=cl)
    w = torch.randn(cout, cin, 3, 3)
    b = torch.randn(cout)
    y = F.conv2d(x, w, b, padding=1)
    grad = torch.randn_like(y).contiguous(memory_format=cl)
    flops = 2.0 * BATCH * cout * size * size * cin * 9

    def backward(mask: list[bool]) -> Callable[[], Any]:
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, w, [cout], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

    ops = [(f"{name} forward", flops, lambda: F.conv2d(x, w, b, padding=1))]
    if input_grad:  # conv1's input is the image: autograd never asks for its gradient
        ops.append((f"{name} input gradient", flops, backward([True, False, False])))
    ops.append((f"{name} weight gradient (+ bias)", flops, backward([False, True, True])))
    return ops


def counted_ops() -> list[dict[str, Any]]:
    """Each op with a FLOP count, timed alone on the step's shapes (one thread)."""
    features = 32 * 7 * 7
    x = torch.randn(1, BATCH, features)
    w = torch.randn(1, features, CLASSES)
    b = torch.randn(1, 1, CLASSES)
    grad = torch.randn(1, BATCH, CLASSES)
    fc = 2.0 * BATCH * features * CLASSES
    ops = [*_conv_ops("conv1", 1, 16, IMAGE, input_grad=False),
           *_conv_ops("conv2", 16, 32, IMAGE // 2, input_grad=True),
           ("classifier forward", fc, lambda: torch.baddbmm(b, x, w)),
           ("classifier input gradient", fc, lambda: torch.bmm(grad, w.transpose(1, 2))),
           ("classifier weight gradient", fc, lambda: torch.bmm(x.transpose(1, 2), grad))]
    rows = []
    for name, flops, fn in ops:
        seconds = median_seconds(fn, repeats=200, warmup=20)
        rows.append({"op": name, "mflop": flops / 1e6, "ms": 1e3 * seconds,
                     "gflops": flops / seconds / 1e9})
    return rows


def step_profile(data_root: Path) -> dict[str, Any]:
    """The real training step: its median time, and each op's own time per step."""
    from torch.profiler import ProfilerActivity, profile

    from sslbench.bench.core.data import prepare
    from sslbench.bench.core.overrides import build_config
    from sslbench.bench.core.train import batch_indices, init_state, start_epoch, train_step

    config = build_config("temporal_ensembling", 0, "quick")  # all 60,000 images, as trained
    data = prepare(config.data, [0], data_root, torch.device("cpu"))
    state = init_state(config, [0], data, torch.device("cpu"))
    start_epoch(state)
    weight = torch.tensor(state.method.weight(10))  # past the ramp's start: w > 0
    step = iter(range(10**9))

    def one() -> None:
        train_step(state, batch_indices(state, next(step) % 500), weight, 10)

    seconds = median_seconds(one, repeats=STEP_TIMED, warmup=STEP_WARMUP)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(STEP_TIMED):
            one()
    ops = [{"op": e.key, "ms": e.self_cpu_time_total / 1e3 / STEP_TIMED, "calls":
            e.count / STEP_TIMED} for e in prof.key_averages() if e.self_cpu_time_total > 0]
    ops.sort(key=lambda r: -r["ms"])
    profiled_ms = sum(r["ms"] for r in ops)
    return {"step_ms": 1e3 * seconds, "profiled_ms": profiled_ms, "ops": ops}


def measure(data_root: Path) -> dict[str, Any]:
    from sslbench.bench.core.allocator import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()  # as every training process does (bench.train.train_stack)
    return {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": 1,
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "peak": {"fp32": peak_gflops(torch.float32), "bf16": peak_gflops(torch.bfloat16)},
        "counted": counted_ops(),
        "step": step_profile(data_root),
    }


def render(doc: dict[str, Any]) -> str:
    peak = doc["peak"]["fp32"]["gflops"]
    counted, step = doc["counted"], doc["step"]
    flops = sum(r["mflop"] for r in counted)
    counted_ms = sum(r["ms"] for r in counted)
    floor_ms = flops / peak  # MFLOP / (GFLOP/s) = ms
    lines = [
        "# The CPU training step against its roofline",
        "",
        f"One thread, torch {doc['machine']['torch']}, {doc['machine']['cpu']}, measured "
        f"{doc['machine']['measured_at']} with nothing else running "
        "(`python -m sslbench.bench.measure.roofline`). Temporal ensembling's step, batch 100, the "
        "blog CNN, fp32.",
        "",
        "## This core's peak (matmul)",
        "",
        "| dtype | GFLOP/s | at n |",
        "|---|---:|---:|",
        *(f"| {k} | {v['gflops']:.1f} | {v['size']} |" for k, v in doc["peak"].items()),
        "",
        "## The ops that do the arithmetic, each timed alone on the step's shapes",
        "",
        "| op | MFLOP per step | ms per step | GFLOP/s | of fp32 peak |",
        "|---|---:|---:|---:|---:|",
        *(f"| {r['op']} | {r['mflop']:.1f} | {r['ms']:.2f} | {r['gflops']:.1f} | "
          f"{r['gflops'] / peak:.0%} |" for r in counted),
        f"| **all of them** | **{flops:.0f}** | **{counted_ms:.2f}** | "
        f"**{flops / counted_ms:.1f}** | **{flops / counted_ms / peak:.0%}** |",
        "",
        "## The real step, op by op (torch.profiler, each op's own time)",
        "",
        f"Median step: {step['step_ms']:.2f} ms ({BATCH / step['step_ms'] * 1e3:,.0f} "
        f"images/s); the profiler's ops sum to {step['profiled_ms']:.2f} ms per step "
        "(its own overhead included).",
        "",
        "| op | ms per step | calls per step | share |",
        "|---|---:|---:|---:|",
        *(f"| `{r['op']}` | {r['ms']:.3f} | {r['calls']:.0f} | "
          f"{r['ms'] / step['profiled_ms']:.1%} |" for r in step["ops"][:25]),
        f"| the other {max(0, len(step['ops']) - 25)} ops | "
        f"{sum(r['ms'] for r in step['ops'][25:]):.3f} | | "
        f"{sum(r['ms'] for r in step['ops'][25:]) / step['profiled_ms']:.1%} |",
        "",
        "## The floor",
        "",
        f"The step does {flops:.0f} MFLOP of counted arithmetic. At this core's fp32 matmul "
        f"peak that is {floor_ms:.2f} ms; the counted ops take {counted_ms:.2f} ms alone "
        f"({flops / counted_ms / peak:.0%} of peak), and the whole step "
        f"{step['step_ms']:.2f} ms: {counted_ms / step['step_ms']:.0%} of it is the counted "
        f"arithmetic, {1 - counted_ms / step['step_ms']:.0%} everything else.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from sslbench.bench.core.datasets import default_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="report/bench", help="folder for roofline.json/.md")
    parser.add_argument("--root", default=None, help="data folder (default: the usual one)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    check_writable(out)
    doc = measure(Path(args.root) if args.root else default_root())
    write_text_atomic(out / "roofline.json", json.dumps(doc, indent=1) + "\n")
    write_text_atomic(out / "roofline.md", render(doc))
    print(render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
