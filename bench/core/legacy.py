"""Every shim that keeps stores written by older versions readable, with their run ids.

Stored configs and cells outlive the code that wrote them: a field added later, a method
renamed, a method section that once held every method's knobs. Each rule here says how
today's code reads such a store, so that its cells keep their run ids (tests/test_config.py's
golden ids) and are never mistaken for something else. The stored bytes are never rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Before methods owned their knobs, every config's method section held all of these; run ids
# hash them at these defaults for a method that lacks them, so stored ids stay unchanged
# (tests/test_config.py's golden ids). A stored config that sets one its method lacks to
# anything else was never written by this harness's grids and is refused when read.
LEGACY_METHOD_KEYS: dict[str, object] = {
    "ensemble_momentum": 0.6, "ensemble_target": "raw",  # temporal_ensembling's
    "ema_decay": 0.99, "ema_decay_after_ramp": None}  # mean_teacher's


# Fields added after the first stores were written, with the value that computes what the
# code did before they existed: left out of the run id at that value (see config_hash).
LATER_FIELDS: dict[tuple[str, str], object] = {
    ("train", "precision"): "fp32", ("train", "compile"): False, ("train", "cuda_graphs"): False,
    ("train", "batches"): "all", ("train", "labeled_per_batch"): 10,
    ("train", "steps_per_epoch"): None, ("train", "step_graph"): False,
    ("model", "name"): "cnn"}

# Methods renamed after stores were written: the run id hashes the old name, so stored
# cells keep their ids. `supervised` meant the SSL pipeline with the consistency term
# removed until the classic baseline (the labeled images alone) took the name; that
# baseline always has train.batches=labeled in its id, so the two never share one.
HASHED_AS: dict[str, str] = {"supervised_pipeline": "supervised"}



def legacy_method_name(config: Mapping[str, Any]) -> str:
    """The method a stored config dict means today: a config stored before train.batches
    existed with method `supervised` is the SSL pipeline baseline, `supervised_pipeline`."""
    name = str(config.get("method", {}).get("name", ""))
    if name == "supervised" and "batches" not in config.get("train", {}):
        return "supervised_pipeline"
    return name




def relabel_legacy(cell: str, variant: str, config: dict[str, Any] | None,
                   record: dict[str, Any] | None
                   ) -> tuple[str, str, dict[str, Any] | None]:
    """A cell stored when `supervised` meant the SSL pipeline baseline reads as what it is,
    `supervised_pipeline` (variant, cell key and the record's method), never as the classic
    baseline that holds the name now. The stored trial itself is left as written."""
    if config is None or legacy_method_name(config) != "supervised_pipeline" \
            or config["method"]["name"] != "supervised":
        return cell, variant, record
    original, renamed = variant, legacy_variant_name(variant)
    cell = renamed + cell.removeprefix(variant)
    variant = renamed
    if record is not None:
        record = {**record, "method": "supervised_pipeline",
                  "config": {**record["config"], "method": {**record["config"]["method"],
                                                            "name": "supervised_pipeline"}},
                  "relabeled_from": {"method": "supervised", "variant": original}}
    return cell, variant, record


def legacy_variant_name(variant: str) -> str:
    """The name a variant of a legacy pipeline cell reads under: `supervised` ->
    `supervised_pipeline` (as the grids name it now), `supervised_aug` ->
    `supervised_pipeline_aug`, `sup_k100` -> `pipe_k100`, anything else + `_pipeline`."""
    if variant == "supervised" or variant.startswith("supervised_"):
        return "supervised_pipeline" + variant.removeprefix("supervised")
    if variant.startswith("sup_"):
        return "pipe_" + variant.removeprefix("sup_")
    return variant + "_pipeline"
