"""Arithmetic: does bf16 autocast change accuracy beyond seed noise?

Each method trained in bf16 (`train.precision=bf16`) is compared, seed by seed, with the
same method in fp32: same labeled subsets, same initial weights, same batch order. A
switch that only buys speed must show no accuracy difference here before it is on by
default.
"""

from sslbench.ablations.grid import Grid, Variant, register_grid

METHODS = {"temporal_ensembling": "te", "supervised": "sup", "mean_teacher": "mt"}


def _variants() -> tuple[Variant, ...]:
    variants = []
    for method, short in METHODS.items():
        variants.append(Variant(f"{short}_fp32", method, {"train.precision": "fp32"},
                                f"{method}, fp32", baseline=f"{short}_fp32"))
        variants.append(Variant(f"{short}_bf16", method, {"train.precision": "bf16"},
                                f"{method}, bf16 autocast", baseline=f"{short}_fp32"))
    return tuple(variants)


PRECISION = register_grid(Grid(
    name="precision",
    description="fp32 against bf16 autocast for temporal ensembling, supervised and mean "
                "teacher, each bf16 run paired with the fp32 run of its seed",
    variants=_variants(),
    control="te_fp32",
))
