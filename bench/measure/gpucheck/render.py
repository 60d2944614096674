"""summary.md: results.json's document as markdown, a table per section that has a result."""

from __future__ import annotations

from typing import Any

from sslbench.bench.measure.gpucheck.options import CUDA_TESTS


def render_summary(doc: dict[str, Any]) -> str:
    """summary.md: the environment, a table of the sections, then each one's result."""
    env, sections = doc["environment"], doc["sections"]
    git = env.get("git") or {}
    gpu = env.get("gpu") or {}
    lines = [
        f"# GPU check: {env['device']}", "",
        f"`{doc['command']}`, {doc['created']}; sizes `{doc['sizes']['name']}`; budget "
        f"{doc['budget_s']:g} s, {doc.get('elapsed_s', 0):.0f} s used.", "",
        f"torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env.get('cudnn')}), Python "
        f"{env['python']}, {env.get('cpu_count')} CPU cores"
        + (f"; {gpu['name']}, compute capability {gpu['capability']}, {gpu['memory_gib']} GiB,"
           f" nvidia-smi: {gpu.get('nvidia_smi')}" if gpu else "")
        + f"; bf16 native: {env.get('bf16_native')}; TF32 {env.get('tf32')}; commit "
          f"{git.get('commit', 'unknown')}{' (dirty)' if git.get('dirty') else ''}.", "",
        "| section | status | seconds | estimated | note |", "|---|---|---:|---:|---|",
    ]
    for name, s in sections.items():
        note = s.get("why") or s.get("error") or s.get("note") or ""
        lines.append(f"| {name} | {s['status']} | {s.get('seconds', '')} | "
                     f"{s.get('estimate_s', '')} | {note.replace('|', '/')} |")
    for name, render in (("correctness", _render_correctness), ("bench", _render_bench),
                         ("profile", _render_profile), ("paper_slice", _render_slice),
                         ("cifar_projection", _render_cifar)):
        result = sections[name].get("result")
        if result:
            lines += ["", f"## {name}", "", *render(result)]
    skipped = [(n, s) for n, s in sections.items() if s["status"] != "ok"]
    if skipped:
        lines += ["", "## Not run or not passed", ""]
        lines += [f"- {n}: {s['status']}: {s.get('why') or s.get('error') or ''}"
                  for n, s in skipped]
    return "\n".join(lines) + "\n"


def _render_correctness(result: dict[str, Any]) -> list[str]:
    lines = [f"`pytest -m cuda {' '.join(map(str, CUDA_TESTS))}` on `{result.get('device')}`: "
             f"{count_line(result['counts'])}.", "", "| test | outcome | s | message |",
             "|---|---|---:|---|"]
    lines += [f"| {t['test']} | {t['outcome']} | {t['seconds']} | "
              f"{t['message'].replace('|', '/')} |" for t in result["tests"]]
    return lines


def _render_bench(result: dict[str, Any]) -> list[str]:
    protocol, measurements = result["protocol"], result["measurements"]
    harness = measurements.get("harness", {}).get("images_per_s")
    lines = [f"{protocol['method']} on {protocol['train_images']:,} training images "
             f"({protocol['test_images']:,} test), {protocol['epochs']} epochs; images/s: "
             f"{protocol['images_per_s']}.", "",
             "| measurement | runs x processes | train img/s | per run | vs one run | s / epoch "
             "| peak MiB | wall s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in measurements.items():
        per_run = m["images_per_s"] / (m["runs"] * m["processes"])
        versus = f"{m['images_per_s'] / harness:.2f}x" if harness else ""
        lines.append(f"| {name} | {m['runs']} x {m['processes']} | {m['images_per_s']:,.0f} | "
                     f"{per_run:,.0f} | {versus} | {m['epoch_seconds']:.2f} | "
                     f"{m['peak_memory_mib']:,.0f} | {m['wall_s']} |")
    lines += [f"| {name} | skipped: {why} | | | | | | |"
              for name, why in result.get("skipped", {}).items()]
    fastest = result.get("fastest")
    if fastest:
        lines += ["", f"Fastest grid configuration: {fastest['workers']} worker(s) x stack "
                      f"{fastest['stack']} ({fastest['measurement']}, "
                      f"{fastest['images_per_s']:,.0f} img/s) of {fastest['candidates']}."]
    return lines


def _render_profile(result: dict[str, Any]) -> list[str]:
    lines = [f"{result['method']}, {result['train_images']:,} training images: "
             f"{result['warmup_steps']} untimed steps, {result['steps']} timed, "
             f"{result['steps']} profiled (torch.profiler; its overhead is in the profiled "
             f"ms).", "",
             "| stack | ms / step | train img/s | kernels / step | copies / step | GPU busy | "
             "aten ops / step | profiled ms / step | top ops |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for runs, s in result["stacks"].items():
        lines.append(f"| {runs} | {s['ms_per_step']:.2f} | {s['train_images_per_s']:,} | "
                     f"{_figure(s['kernels_per_step'], '.0f')} | "
                     f"{_figure(s['copies_per_step'], '.1f')} | "
                     f"{_figure(s['gpu_busy_fraction'], '.0%')} | "
                     f"{s['aten_ops_per_step']:.0f} | {s['profiled_ms_per_step']:.2f} | "
                     f"`{s['table']}` |")
    return lines


def _figure(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _render_slice(result: dict[str, Any]) -> list[str]:
    plan = result.get("plan", {})
    if "grid" not in result:  # it ended before it started training
        return [f"Planned: {plan.get('workers')} worker(s) x stack {plan.get('stack')}, "
                f"{plan.get('epochs')} epochs, from {plan.get('config_source')}."]
    lines = [f"Grid {result.get('grid')}, profile {result.get('profile')} cut to the first "
             f"{result.get('epochs')} epochs (`--set train.epochs=N`), seeds "
             f"{result.get('seeds')}, variants {result.get('variants')}; "
             f"{result.get('workers')} worker(s) x stack {result.get('stack')}, from "
             f"{plan.get('config_source')}. Store: `{result.get('store')}`."]
    if "wall_s" in result:
        lines += ["", f"Measured: {result['wall_s']} s wall for {result['cells_finished']} "
                      f"cells ({len(result['cells_failed'])} failed)."]
    if result.get("accuracy"):
        lines += ["", "Test accuracy after these epochs (not a result of the protocol: a "
                      "timing run): " + "; ".join(
                          f"{v} {sum(a) / len(a):.1%}" for v, a in result["accuracy"].items())]
    projection = result.get("projection")
    if projection:
        lines += ["", f"**Projection** (not a measurement) of the whole grid at "
                      f"{projection['epochs_full']} epochs: about "
                      f"{projection['projected_wall_s'] / 3600:.2f} h; at most "
                      f"{projection['upper_bound_s'] / 3600:.2f} h. Arithmetic: "
                      f"{projection['arithmetic']}. Checkpoints every epoch are in the "
                      f"start-up share, not in the epoch cost."]
    return lines


def _render_cifar(result: dict[str, Any]) -> list[str]:
    lines = [f"`{result.get('grid')}`'s step (`conv_large`, 32x32x3, batch "
             f"{result.get('batch')}) on random images of CIFAR-10's shape: "
             f"{result.get('warmup_steps')} untimed steps, then {result.get('steps')} timed.",
             "", "| variant | method | ms/step | train images/s | eval ms/image |",
             "|---|---|---:|---:|---:|"]
    for name, v in result.get("variants", {}).items():
        lines.append(f"| {name} | {v['method']} | {v['ms_per_step']:.1f} | "
                     f"{v['train_images_per_s']:.0f} | {v['eval_ms_per_image']:.3f} |")
    projection = result.get("projection")
    if projection:
        runs = "; ".join(f"{k} {s / 3600:.2f} h" for k, s in projection["run_s"].items())
        lines += ["", f"**Projection** (not a measurement) at `{result.get('profile')}`: one "
                      f"run {runs}; the grid at {projection['seeds_per_variant']} seeds a "
                      f"variant about {projection['grid_s'] / 3600:.1f} h on this device. "
                      f"Arithmetic: {projection['arithmetic']}."]
    return lines


def count_line(counts: dict[str, int]) -> str:
    """`5 passed, 3 skipped`: pytest's counts, the nonzero ones."""
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n) or "no tests ran"
