"""The blog's tweak ablations: MNIST, 100 labels, temporal ensembling against its tweaks."""

from ablations.grid import Grid, Variant, register_grid

TE = "temporal_ensembling"

GRID = register_grid(Grid(
    name="mnist100",
    description="MNIST with 100 labels: temporal ensembling as the blog ran it, the "
                "supervised-only baseline, and one variant per tweak",
    variants=(
        Variant("control", TE, {}, "channelwise norm, CE / labeled count, ramp-up 80 of 300, "
                                   "raw outputs ensembled"),
        Variant("supervised", "supervised", {}, "the 100 labels alone, same pipeline"),
        Variant("pixelwise", TE, {"data.normalization": "pixelwise"}, "per-pixel normalization"),
        Variant("batch_scaling", TE, {"method.supervised_scaling": "batch"},
                "supervised loss divided by the batch size (original authors)"),
        Variant("ramp_fast", TE, {"method.ramp_epochs": 20}, "ramp-up over 20 of 300 epochs"),
        Variant("ramp_slow", TE, {"method.ramp_epochs": 160}, "ramp-up over 160 of 300 epochs"),
        Variant("ramp_none", TE, {"method.ramp_epochs": 0}, "full weight from epoch 1"),
        Variant("prob_targets", TE, {"method.ensemble_target": "prob"},
                "softmax probabilities ensembled (paper)"),
    ),
))
