"""The paper's ConvNet (bench.core.conv_large): its size, and a stack of three runs computing
exactly what three single runs compute, batch statistics included."""

from __future__ import annotations

import torch

from sslbench.bench.core.conv_large import (
    ConvLargeConfig,
    draw_randomness,
    init_params,
    network,
    parameter_count,
    update_running,
)

CPU = torch.device("cpu")


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_its_size_is_the_papers_network():
    params, running = init_params(ConvLargeConfig(), gens(0), CPU)
    # Table 5 of Laine & Aila (2017), weights by hand: 3x128 3x3 convs from RGB, 3x256,
    # 512 3x3 valid, 256 1x1, 128 1x1, dense 128 -> 10.
    weights = (3 * 128 * 9 + 2 * 128 * 128 * 9 + 128 * 256 * 9 + 2 * 256 * 256 * 9
               + 256 * 512 * 9 + 512 * 256 + 256 * 128 + 128 * 10)
    assert weights == 3_117_696
    # Weight norm adds a gain and every layer a bias per output unit (after mean-only BN).
    units = 3 * 128 + 3 * 256 + 512 + 256 + 128 + 10
    assert parameter_count(params) == weights + 2 * units == 3_121_812
    assert sum(t.numel() for t in running.values()) == units  # one running mean per unit


def _train_step(seeds: list[int], images: torch.Tensor, config: ConvLargeConfig
                ) -> tuple[torch.Tensor, dict, dict, torch.Tensor]:
    params, running = init_params(config, gens(*seeds), CPU)
    noise, masks = draw_randomness(config, images, gens(*[100 + s for s in seeds]))
    logits, means = network(params, running, config, images, noise, masks, training=True)
    (logits ** 2).sum().backward()
    update_running(running, means, config.bn_momentum)
    evaluated, _ = network(params, running, config, images)
    return logits.detach(), {k: v.grad for k, v in params.items()}, running, evaluated


def test_a_stack_of_three_equals_three_single_runs():
    config = ConvLargeConfig()
    images = torch.randn(3, 4, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    stacked = _train_step([0, 1, 2], images, config)
    for run, seed in enumerate([0, 1, 2]):
        single = _train_step([seed], images[run:run + 1], config)
        torch.testing.assert_close(stacked[0][run], single[0][0], atol=1e-4, rtol=1e-4)
        for name, grad in single[1].items():  # every parameter's gradient
            torch.testing.assert_close(stacked[1][name][run], grad[0], atol=1e-4, rtol=1e-3,
                                       msg=name)
        for name, mean in single[2].items():  # each run keeps its own batch statistics
            torch.testing.assert_close(stacked[2][name][run], mean[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(stacked[3][run], single[3][0], atol=1e-4, rtol=1e-4)


def test_each_run_of_a_stack_normalizes_by_its_own_batch():
    config = ConvLargeConfig()
    params, running = init_params(config, gens(0, 1), CPU)
    images = torch.randn(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    _, means = network(params, running, config, images, training=True)
    shifted = images.clone()
    shifted[0] += 1.0  # only run 0's batch changes
    _, moved = network(params, running, config, shifted, training=True)
    assert not torch.allclose(moved["conv1a"][0], means["conv1a"][0])
    torch.testing.assert_close(moved["conv1a"][1], means["conv1a"][1])
    # Evaluation uses the running means, not the batch: an image alone gets the logits it
    # gets among others.
    evaluated, _ = network(params, running, config, images)
    alone, _ = network(params, running, config, images[:, 1:2])
    assert evaluated.shape == (2, 4, 10)
    torch.testing.assert_close(alone[:, 0], evaluated[:, 1], atol=1e-5, rtol=1e-4)
