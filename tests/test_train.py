"""Real short runs on a MNIST slice: determinism, switches, stacking, learning."""

import math

import pytest
import torch

from sslbench.bench.core.overrides import with_overrides
from sslbench.bench.core.train import single_run, train_stack
from sslbench.methods import method_names
from tests.conftest import smoke_config

CPU = torch.device("cpu")


def short(method="temporal_ensembling", seed=0, **overrides):
    # 3 epochs of 1,000 images; ramp-up 2 epochs so w > 0 at epochs 1 and 2.
    settings = {"train__epochs": 3, "data__train_size": 1000, "data__test_size": 500,
                "method__ramp_epochs": 2, **overrides}
    return smoke_config(method, seed, **settings)


def curves(config, data_root):
    return single_run(config, device=CPU, data_root=data_root).curves


def test_same_config_and_seed_give_identical_runs(data_root):
    first, second = curves(short(), data_root), curves(short(), data_root)
    for key in ("supervised_loss", "unsupervised_loss", "train_loss", "test_accuracy", "weight"):
        assert first[key] == second[key], key


@pytest.mark.parametrize("switch", [
    {"data__normalization": "pixelwise"},
    {"method__supervised_scaling": "batch"},
    {"method__ensemble_target": "prob"},
    {"method__ramp_epochs": 0},
    {"model__weight_norm": False},
    {"model__input_noise_std": 0.0},
    {"model__dropout": 0.0},
    {"method__w_max": 10.0},
    {"method__ensemble_momentum": 0.9},
    {"method__ramp_shape": 1.0},
    {"model__conv1_channels": 8, "model__conv2_channels": 16},
    {"data__normalization": "pixelwise", "data__pixel_std_floor": 0.3},
    {"data__num_labels": 200},
    {"method": "mean_teacher", "method__ema_decay": 0.9},
    {"method": "mean_teacher", "method__ema_decay_after_ramp": 0.999},
    {"data__translate_px": 2},
    {"data__hflip": True},
    {"model__activation": "leaky_relu"},
    {"model__activation": "leaky_relu", "model__leaky_slope": 0.3},
    {"method": "pi_model", "data__translate_px": 2},
    {"method": "supervised", "data__translate_px": 1},
    {"train__precision": "bf16"},
    {"train__batches": "fixed"},
    {"train__batches": "fixed", "train__labeled_per_batch": 20},
    {"train__steps_per_epoch": 3},
    {"method": "mean_teacher", "train__precision": "bf16"},
])
def test_every_switch_changes_the_computed_losses(data_root, switch, request):
    switch = dict(switch)
    method = switch.pop("method", "temporal_ensembling")
    base = {"data__normalization": "pixelwise"} if "data__pixel_std_floor" in switch else {}
    if "model__leaky_slope" in switch:  # the slope matters only with leaky ReLU on
        base = {"model__activation": "leaky_relu"}
    if "data__hflip" in switch:  # a flip does not suit digits: Fashion-MNIST's clothes
        request.getfixturevalue("fashion_root")
        base = {"data__dataset": "fashion_mnist"}
        switch = {**base, **switch}
    control = curves(short(method, **base), data_root)
    variant = curves(short(method, **switch), data_root)
    changed = [key for key in ("supervised_loss", "unsupervised_loss")
               if not all(math.isclose(a, b, rel_tol=1e-7) for a, b in
                          zip(control[key], variant[key], strict=True))]
    assert changed, f"{switch} left the losses unchanged"


def test_bf16_passes_round_but_track_fp32(data_root):
    """bf16 autocast changes the arithmetic (the switch test above), not the run: the first
    epoch's losses agree to bf16's precision, and the record says which arithmetic ran."""
    fp32 = single_run(short(), device=CPU, data_root=data_root)
    bf16 = single_run(short(train__precision="bf16"), device=CPU, data_root=data_root)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.curves["supervised_loss"][0] == pytest.approx(
        fp32.curves["supervised_loss"][0], rel=0.02)
    assert bf16.curves["supervised_loss"][0] != fp32.curves["supervised_loss"][0]
    assert bf16.labeled_indices == fp32.labeled_indices


def test_auto_precision_is_bf16_exactly_where_the_device_has_it(data_root):
    from sslbench.bench.core.precision import native_bf16, resolve

    assert resolve("auto", CPU) == ("bf16" if native_bf16(CPU) else "fp32")
    assert resolve("fp32", CPU) == "fp32" and resolve("bf16", CPU) == "bf16"
    # And a run with auto computes exactly what the run of the resolved precision does.
    expected = "bf16" if native_bf16(CPU) else "fp32"
    auto = single_run(short(train__epochs=2, train__precision="auto"), device=CPU,
                      data_root=data_root)
    same = single_run(short(train__epochs=2, train__precision=expected), device=CPU,
                      data_root=data_root)
    assert auto.precision == expected
    assert auto.curves["supervised_loss"] == same.curves["supervised_loss"]
    assert auto.curves["unsupervised_loss"] == same.curves["unsupervised_loss"]


def test_compiled_network_computes_what_the_eager_one_does(data_root):
    """torch.compile is an execution switch: same noise, masks and batches, so the same
    losses up to the float rounding of fused kernels."""
    from torch._dynamo.utils import counters

    config = short(train__epochs=2, data__train_size=500)
    eager = single_run(config, device=CPU, data_root=data_root).curves
    counters.clear()
    compiled = single_run(with_overrides(config, {"train.compile": True}), device=CPU,
                          data_root=data_root).curves
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile, not fall back
    for key in ("supervised_loss", "unsupervised_loss", "train_loss"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4), key


def test_cuda_graphs_on_the_cpu_is_a_clear_error(data_root):
    from sslbench.bench.errors import UserError

    with pytest.raises(UserError, match=r"train\.cuda_graphs needs a CUDA device"):
        single_run(short(train__cuda_graphs=True), device=CPU, data_root=data_root)


def test_pipeline_baseline_differs_only_by_the_consistency_term(data_root):
    te, sup = curves(short(), data_root), curves(short("supervised_pipeline"), data_root)
    # Epoch 0 has w = 0: the two are the same computation.
    assert te["supervised_loss"][0] == pytest.approx(sup["supervised_loss"][0], rel=1e-6)
    assert te["test_accuracy"][0] == sup["test_accuracy"][0]
    assert sup["weight"] == [0.0, 0.0, 0.0] and te["weight"][2] > 0
    assert all(u == 0 for u in sup["unsupervised_loss"])


def test_stacked_runs_match_sequential_runs(data_root):
    config = short()
    stacked = train_stack(config, [0, 1], device=CPU, data_root=data_root)
    for seed, result in zip((0, 1), stacked, strict=True):
        alone = single_run(with_overrides(config, {"seed": seed}), device=CPU, data_root=data_root)
        assert result.labeled_indices == alone.labeled_indices
        # Grouped convolutions sum in another order: equal up to float rounding at first.
        assert result.curves["supervised_loss"][0] == pytest.approx(
            alone.curves["supervised_loss"][0], rel=1e-4)
    assert stacked[0].labeled_indices != stacked[1].labeled_indices


@pytest.mark.parametrize("method", method_names())
def test_a_short_run_learns(data_root, method):
    result = single_run(smoke_config(method), device=CPU, data_root=data_root)
    assert result.final_test_accuracy > 0.5  # chance is 0.1
