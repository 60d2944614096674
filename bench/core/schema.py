"""The run record as typed fields: what `bench.record.build_record` writes and reports read.

Records are stored as JSON in the run store (bench.store). `Record.from_dict` reads every
schema version written so far; the defaults for fields that older records lack live here
and nowhere else:
    schema 1: no `schedule` (the SSL pipeline's batches, ceil(N/B) steps per epoch);
              records before stacking and precision had no `stack_size` (1) and no
              `precision` (fp32).
    schema 2: `schedule` (which images the batches held, how many steps ran).
The extra evaluated models (the mean teacher's student beside its teacher) are stored as
`final_<name>_test_accuracy` metrics and `<name>_test_accuracy` curves; here they are the
named mapping `Metrics.evaluated` and `Record.evaluated_curves`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2
_OTHER_MODEL = "_test_accuracy"  # the stored suffix of another evaluated model's accuracy


@dataclass(frozen=True)
class Metrics:
    final_test_accuracy: float  # fraction in [0, 1], the last epoch's
    lowest_train_loss_epoch: int  # from 0: the epoch the blog reports
    lowest_train_loss_test_accuracy: float
    final_val_accuracy: float | None
    collapsed: bool  # under twice chance at the end: kept, flagged, counted
    evaluated: dict[str, float] = field(default_factory=dict)  # other models, by name


@dataclass(frozen=True)
class Throughput:
    train_images_per_s_median: float  # of the whole stack when seeds trained together
    epoch_seconds_median: float
    eval_seconds_median: float
    peak_memory_mib: float
    total_seconds: float
    stack_size: int = 1
    precision: str = "fp32"


@dataclass(frozen=True)
class Record:
    schema: int
    run_id: str
    method: str
    seed: int
    config: dict[str, Any]
    labeled_indices_sha256: str
    metrics: Metrics
    throughput: Throughput
    curves: dict[str, list[float]]  # per epoch; the headline model's and the stack's
    environment: dict[str, Any]  # device, threads, versions, git commit
    schedule: dict[str, Any] | None = None  # None: schema 1 (the pipeline's batches)
    relabeled_from: dict[str, str] | None = None  # a legacy cell read under its new name
    started_at: str = ""
    finished_at: str = ""
    # Each stretch of training and its code (commit, dirty, epochs); None: not recorded.
    segments: list[dict[str, Any]] | None = None

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Record:
        metrics = dict(stored["metrics"])
        evaluated = {key.removeprefix("final_").removesuffix(_OTHER_MODEL): metrics.pop(key)
                     for key in list(metrics)
                     if key.startswith("final_") and key.endswith(_OTHER_MODEL)
                     and key != "final_test_accuracy"}
        throughput = stored["throughput"]
        return cls(
            schema=int(stored.get("schema", 1)), run_id=stored["run_id"],
            method=stored["method"], seed=int(stored["seed"]), config=stored["config"],
            labeled_indices_sha256=stored.get("labeled_indices_sha256", ""),
            metrics=Metrics(
                final_test_accuracy=metrics["final_test_accuracy"],
                lowest_train_loss_epoch=int(metrics["lowest_train_loss_epoch"]),
                lowest_train_loss_test_accuracy=metrics["lowest_train_loss_test_accuracy"],
                final_val_accuracy=metrics.get("final_val_accuracy"),
                collapsed=bool(metrics["collapsed"]), evaluated=evaluated),
            throughput=Throughput(
                train_images_per_s_median=throughput["train_images_per_s_median"],
                epoch_seconds_median=throughput["epoch_seconds_median"],
                eval_seconds_median=throughput.get("eval_seconds_median", 0.0),
                peak_memory_mib=throughput["peak_memory_mib"],
                total_seconds=throughput["total_seconds"],
                stack_size=int(throughput.get("stack_size", 1)),
                precision=throughput.get("precision", "fp32")),
            curves=stored["curves"], environment=stored["environment"],
            schedule=stored.get("schedule"), relabeled_from=stored.get("relabeled_from"),
            started_at=stored.get("started_at", ""), finished_at=stored.get("finished_at", ""),
            segments=stored.get("segments"))

    @property
    def code_versions(self) -> list[str]:
        """Every code version that trained this run: `commit[:12]`, with ` (dirty)` for
        uncommitted changes, from its segments where recorded, else the finishing process's
        commit (a resumed run of an older store may hide earlier ones)."""
        parts = self.segments if self.segments else [self.environment.get("git", {})]
        found = []
        for part in parts:
            commit = str(part.get("commit") or "unknown")
            name = commit[:12] if " " not in commit else commit
            name += " (dirty)" if part.get("dirty") else ""
            if name not in found:
                found.append(name)
        return found

    @property
    def test_accuracy(self) -> list[float]:
        """The headline model's test accuracy per epoch (empty for a search's runs)."""
        return self.curves.get("test_accuracy", [])

    @property
    def evaluated_curves(self) -> dict[str, list[float]]:
        """The other evaluated models' test accuracy per epoch, by model name."""
        return {key.removesuffix(_OTHER_MODEL): values for key, values in self.curves.items()
                if key.endswith(_OTHER_MODEL) and key != "test_accuracy"}

    @property
    def data(self) -> dict[str, Any]:
        return self.config["data"]

    @property
    def device(self) -> str:
        return str(self.environment["device"])
