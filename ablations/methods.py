"""Methods side by side: the two supervised baselines, Pi-model, temporal ensembling and mean
teacher, each
with and without augmentation (random translation by up to 2 pixels), on MNIST and on
Fashion-MNIST with 100 labels.

Each semi-supervised method is compared with the supervised baseline under the same
augmentation; the augmented baseline is compared with the plain one.
"""

from sslbench.ablations.grid import Grid, Variant, register_grid

METHODS = {
    "supervised": "the classic baseline: the 100 labeled images alone, same model and steps",
    "supervised_pipeline": "the SSL pipeline without the consistency term (all images iterated)",
    "pi_model": "two noisy passes, squared softmax difference (Laine & Aila 2017)",
    "temporal_ensembling": "per-sample ensemble of past outputs as target (Laine & Aila 2017)",
    "mean_teacher": "EMA-of-weights teacher as target (Tarvainen & Valpola 2017)",
}
AUGMENT = {"data.translate_px": 2}


def methods_variants(dataset_overrides: dict[str, object]) -> tuple[Variant, ...]:
    variants = []
    for method, description in METHODS.items():
        # The pipeline baseline is a reference (it names itself): it shows what the
        # consistency term buys inside the same pipeline, beside the classic baseline.
        reference = method == "supervised_pipeline"
        plain_baseline = method if reference else None if method == "supervised" else "supervised"
        variants.append(Variant(method, method, dict(dataset_overrides), description,
                                baseline=plain_baseline))
        aug_baseline = (f"{method}_aug" if reference else "supervised" if method == "supervised"
                        else "supervised_aug")
        variants.append(Variant(f"{method}_aug", method, {**dataset_overrides, **AUGMENT},
                                f"{description}; random translation +-2 px",
                                baseline=aug_baseline))
    return tuple(variants)


# The question: does each semi-supervised method beat the classic baseline under the same
# augmentation? The augmented baseline against the plain one is a reference check.
FAMILY = tuple(name for method in METHODS if not method.startswith("supervised")
               for name in (method, f"{method}_aug"))

MNIST100_METHODS = register_grid(Grid(
    name="mnist100_methods",
    description="MNIST with 100 labels: every method, with and without augmentation, each "
                "compared with the supervised baseline under the same augmentation",
    variants=methods_variants({}),
    control="supervised",
    family=FAMILY,
))

FASHION100 = register_grid(Grid(
    name="fashion100",
    description="Fashion-MNIST with 100 labels: the methods grid of mnist100_methods",
    variants=methods_variants({"data.dataset": "fashion_mnist"}),
    control="supervised",
    family=FAMILY,
))
