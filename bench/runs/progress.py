"""Progress of a grid a person can watch.

In a terminal: live tqdm bars, one for the grid (cells done / total, time left) and one per
job in flight (its cell, epoch and accuracy). Elsewhere (CI logs, files): one plain line
per epoch and per finished cell, as before.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from tqdm import tqdm

from sslbench.bench.core.train import EpochSummary


class Progress:
    """Cells done / total, each job's epoch and accuracy, and the time left."""

    def __init__(self, total: int, done: int, workers: int, epochs_per_cell: int,
                 stream: Any = sys.stderr, stack: int = 1, pending: int = 0,
                 live: bool | None = None) -> None:
        """live: tqdm bars (default: when `stream` is a terminal), else plain lines."""
        self.total, self.done, self.workers = total, done, workers
        self.epochs_per_cell = epochs_per_cell
        self.stack = stack  # cells trained together: a pending cell costs 1/stack of a job
        self.stream = stream
        self.epoch_seconds: list[float] = []  # wall seconds of the recent epochs, any job
        self.epochs_left_in_flight: dict[str, int] = {}
        self.pending = pending  # cells not yet claimed
        self.counted: set[str] = set()
        self.live = stream.isatty() if live is None else live
        self.grid_bar: tqdm[Any] | None = None
        self.job_bars: dict[str, tqdm[Any]] = {}
        if self.live:
            self.grid_bar = tqdm(total=total, initial=done, desc="cells", unit="cell",
                                 file=stream, position=0, dynamic_ncols=True,
                                 bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {postfix}")

    def time_left_s(self) -> float:
        # The median of the recent epochs, not their mean: one epoch stretched by a pause
        # (a stopped process, a suspended laptop, a shared core) would otherwise inflate
        # the estimate for the next 20 epochs.
        recent = self.epoch_seconds[-20:]
        per_epoch = statistics.median(recent) if recent else 0.0
        epochs_left = (sum(self.epochs_left_in_flight.values())
                       + self.pending * self.epochs_per_cell / self.stack)
        return per_epoch * epochs_left / self.workers

    def epoch(self, job: str, summary: EpochSummary) -> None:
        self.epoch_seconds.append(summary.epoch_seconds + summary.eval_seconds)
        self.epochs_left_in_flight[job] = summary.epochs - summary.epoch - 1
        acc = ", ".join(f"{a:.2%}" for a in summary.test_accuracy)
        detail = (f"test acc {acc} w {summary.weight:.4f} "
                  f"{summary.train_images_per_s:,.0f} img/s")
        left = f"~{duration(self.time_left_s())} left"
        if self.grid_bar is None:
            print(f"[{self.done}/{self.total} cells] {job} epoch {summary.epoch + 1}/"
                  f"{summary.epochs} {detail} | {left}", file=self.stream, flush=True)
            return
        bar = self.job_bars.get(job)
        if bar is None:
            bar = tqdm(total=summary.epochs, desc=job, unit="epoch", file=self.stream,
                       position=len(self.job_bars) + 1, leave=False, dynamic_ncols=True)
            self.job_bars[job] = bar
        bar.n = summary.epoch + 1
        bar.set_postfix_str(detail)
        self.grid_bar.set_postfix_str(left)

    def cell_done(self, cell: str, message: str, job: str | None = None) -> None:
        # A cell is counted once however often it is reported (skipped here, then finished
        # by another runner and taken over...), so the counter never passes the total.
        if cell not in self.counted:
            self.counted.add(cell)
            self.done = min(self.total, self.done + 1)
        self.epochs_left_in_flight.pop(job or cell, None)
        line = f"[{self.done}/{self.total} cells] {cell}: {message}"
        if self.grid_bar is None:
            print(line, file=self.stream, flush=True)
            return
        bar = self.job_bars.pop(job or cell, None)
        if bar is not None:
            bar.close()
        self.grid_bar.n = self.done
        self.grid_bar.refresh()
        self.grid_bar.write(line, file=self.stream)  # above the bars, kept in the scrollback

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for bar in [*self.job_bars.values(), *([self.grid_bar] if self.grid_bar else [])]:
            bar.close()
        self.job_bars.clear()


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
