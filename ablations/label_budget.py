"""Label budgets: supervised vs temporal ensembling vs mean teacher with k labels on MNIST.

Each semi-supervised method at k labels is compared with the supervised baseline at the
same k (the same labeled subsets: the split depends only on the seed and k). The report
adds a figure of accuracy against k.
"""

from sslbench.ablations.grid import Grid, Variant, register_grid

BUDGETS = (20, 50, 100, 250, 1000)
METHODS = ("supervised", "temporal_ensembling", "mean_teacher")
SHORT = {"supervised": "sup", "temporal_ensembling": "te", "mean_teacher": "mt"}


def _variants() -> tuple[Variant, ...]:
    variants = []
    for k in BUDGETS:
        for method in METHODS:
            name = f"{SHORT[method]}_k{k}"
            # The baseline of each k is a reference: it names itself and is not compared.
            baseline = f"sup_k{k}"
            variants.append(Variant(name, method, {"data.num_labels": k},
                                    f"{method} with {k} labels", baseline=baseline))
    return tuple(variants)


LABEL_BUDGET = register_grid(Grid(
    name="label_budget",
    description="MNIST with 20, 50, 100, 250 and 1,000 labels: supervised, temporal "
                "ensembling and mean teacher, each compared with supervised at the same k",
    variants=_variants(),
    control="sup_k100",
))
