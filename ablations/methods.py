"""Methods side by side: supervised, Pi-model, temporal ensembling and mean teacher, each
with and without augmentation (random translation by up to 2 pixels), on MNIST and on
Fashion-MNIST with 100 labels.

Each semi-supervised method is compared with the supervised baseline under the same
augmentation; the augmented baseline is compared with the plain one.
"""

from ablations.grid import Grid, Variant, register_grid

METHODS = {
    "supervised": "the 100 labels alone, same pipeline",
    "pi_model": "two noisy passes, squared softmax difference (Laine & Aila 2017)",
    "temporal_ensembling": "per-sample ensemble of past outputs as target (Laine & Aila 2017)",
    "mean_teacher": "EMA-of-weights teacher as target (Tarvainen & Valpola 2017)",
}
AUGMENT = {"data.translate_px": 2}


def methods_variants(dataset_overrides: dict[str, object]) -> tuple[Variant, ...]:
    variants = []
    for method, description in METHODS.items():
        plain_baseline = None if method == "supervised" else "supervised"
        variants.append(Variant(method, method, dict(dataset_overrides), description,
                                baseline=plain_baseline))
        variants.append(Variant(f"{method}_aug", method, {**dataset_overrides, **AUGMENT},
                                f"{description}; random translation +-2 px",
                                baseline="supervised" if method == "supervised"
                                else "supervised_aug"))
    return tuple(variants)


MNIST100_METHODS = register_grid(Grid(
    name="mnist100_methods",
    description="MNIST with 100 labels: every method, with and without augmentation, each "
                "compared with the supervised baseline under the same augmentation",
    variants=methods_variants({}),
    control="supervised",
))

FASHION100 = register_grid(Grid(
    name="fashion100",
    description="Fashion-MNIST with 100 labels: the methods grid of mnist100_methods",
    variants=methods_variants({"data.dataset": "fashion_mnist"}),
    control="supervised",
))
