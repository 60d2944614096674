"""The temporal ensembling paper's CIFAR-10 protocol: 4,000 labels, its 13-layer ConvNet.

Laine & Aila (ICLR 2017), Table 2: temporal ensembling 12.16 +- 0.24 % error, the Pi-model
12.36 +- 0.31 %, supervised-only 35.56 +- 1.59 % (with augmentation, 10 seeds each). Their
hyperparameters where the harness has the knob: batch 100, Adam (0.9, 0.999) with lr 0.003,
300 epochs, ramp-up over 80, w_max 30 (temporal ensembling) or 100 (Pi-model) scaled by the
labeled fraction, ensemble momentum 0.6, input noise 0.15, dropout 0.5, translation by up to
2 pixels and a horizontal flip. Not here: their ZCA whitening (channelwise normalization
instead), the 50-epoch ramp-down of the learning rate and of Adam's beta1, so its numbers
are the paper's protocol approximately, not exactly. Run it with `--profile paper_cifar`
on a GPU: on a CPU one paper run takes weeks (its smoke slice trained at roughly
0.1-0.3 s per image and pass on one core).
"""

from sslbench.ablations.grid import Grid, Published, Variant, register_grid

PAPER = {"data.dataset": "cifar10", "data.num_labels": 4000, "data.translate_px": 2,
         "data.hflip": True, "model.name": "conv_large", "train.lr": 0.003,
         "train.beta2": 0.999, "method.ramp_epochs": 80}

GRID = register_grid(Grid(
    name="cifar10_4000",
    description="CIFAR-10 with 4,000 labels, the paper's conv_large: temporal ensembling, "
                "Pi-model and supervised-only (GPU; tested on fabricated files only)",
    variants=(
        Variant("temporal_ensembling", "temporal_ensembling", {**PAPER, "method.w_max": 30.0},
                "the paper's temporal ensembling, w_max 30"),
        Variant("pi_model", "pi_model", {**PAPER, "method.w_max": 100.0},
                "the paper's Pi-model, w_max 100"),
        Variant("supervised", "supervised", PAPER,
                "the 4,000 labeled images alone, same network and augmentation"),
    ),
    control="supervised",
    # The smoke slice holds 2,000 training images: 1,000 of them labeled (100 a class).
    profile_overrides={"smoke": {"data.num_labels": 1000}},
    references={
        # Table 2 of the paper: 100 minus the mean error, 10 seeds each (its std not given
        # per seed, so one value stands for the mean).
        "temporal_ensembling": Published((87.84,), "Laine & Aila 2017, Table 2 (mean)"),
        "pi_model": Published((87.64,), "Laine & Aila 2017, Table 2 (mean)"),
        "supervised": Published((64.44,), "Laine & Aila 2017, Table 2 (mean)"),
    },
))
