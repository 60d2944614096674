"""The stacked CNN: R runs in one pass behave as R independent models."""

import pytest
import torch

from sslbench.bench.core.config import ModelConfig
from sslbench.bench.core.model import augment, forward, init_params, predict
from sslbench.bench.core.seeds import generator

CPU = torch.device("cpu")
CONFIG = ModelConfig()


def params_for(seeds):
    return init_params(CONFIG, 10, 28, [generator(s, "init") for s in seeds], CPU)


def test_shapes_match_the_blog_cnn():
    params = params_for([0])
    assert params["conv1_v"].shape == (1, 16, 1, 3, 3)
    assert params["conv2_v"].shape == (1, 32, 16, 3, 3)
    assert params["fc_w"].shape == (1, 10, 32 * 7 * 7)
    assert "conv1_g" in params  # weight norm
    plain = init_params(ModelConfig(weight_norm=False), 10, 28, [generator(0, "init")], CPU)
    assert "conv1_g" not in plain


def test_stack_equals_separate_models_in_training_mode():
    images = torch.randn(2, 5, 1, 28, 28)
    stacked = forward(params_for([0, 1]), CONFIG, images, training=True,
                      noise_gens=[generator(s, "noise") for s in (0, 1)],
                      dropout_gens=[generator(s, "dropout") for s in (0, 1)])
    for run, seed in enumerate((0, 1)):
        alone = forward(params_for([seed]), CONFIG, images[run:run + 1], training=True,
                        noise_gens=[generator(seed, "noise")],
                        dropout_gens=[generator(seed, "dropout")])
        # Same init, noise and dropout streams per run: the stack changes nothing.
        assert torch.allclose(stacked[run], alone[0], atol=1e-5)
    assert not torch.allclose(stacked[0], stacked[1])


def test_noise_and_dropout_only_in_training_mode():
    params = params_for([0])
    images = torch.randn(1, 4, 1, 28, 28)
    evals = [forward(params, CONFIG, images, training=False) for _ in range(2)]
    assert torch.equal(evals[0], evals[1])
    gens = ([generator(0, "noise")], [generator(0, "dropout")])
    first, second = (forward(params, CONFIG, images, training=True, noise_gens=gens[0],
                             dropout_gens=gens[1]) for _ in range(2))
    assert not torch.allclose(first, second)  # the streams advance: fresh noise each pass
    assert predict(params, CONFIG, images[0]).shape == (1, 4)


def test_translation_shifts_each_sample_by_at_most_the_limit():
    # A single bright pixel in the middle of each image: after augmentation it sits at
    # most 2 pixels away, in a place drawn per sample, and nothing else changes.
    images = torch.zeros(2, 64, 1, 28, 28)
    images[..., 14, 14] = 1.0
    gens = [generator(s, "augment") for s in (0, 1)]
    moved = augment(images, 2, False, gens)
    assert moved.shape == images.shape
    spots = moved.flatten(2).argmax(-1)  # (R, B) flat positions of the bright pixel
    rows, cols = spots // 28, spots % 28
    assert ((rows - 14).abs() <= 2).all() and ((cols - 14).abs() <= 2).all()
    assert torch.equal(moved.sum(dim=(-1, -2, -3)), images.sum(dim=(-1, -2, -3)))
    assert len(set(spots.flatten().tolist())) > 10  # per-sample shifts, all 25 likely
    assert not torch.equal(spots[0], spots[1])  # each run draws its own


def test_translation_repeats_the_edge_and_flip_mirrors():
    images = torch.arange(28.0).repeat(1, 1, 1, 28, 1)  # column index as the value
    gens = [generator(0, "augment")]
    shifted = augment(images.expand(1, 32, 1, 28, 28), 2, False, gens)
    # Values stay within the original range: shifted-in columns repeat the edge.
    assert shifted.min() >= 0 and shifted.max() <= 27
    flipped = augment(images.expand(1, 200, 1, 28, 28), 0, True, gens)
    mirrored = (flipped[0, :, 0, 0, 0] == 27).float().mean()
    assert 0.35 < mirrored < 0.65  # about half the samples are flipped
    untouched = augment(images, 0, False, gens)
    assert torch.equal(untouched, images)


def test_leaky_relu_changes_the_output_and_keeps_shapes():
    params = params_for([0])
    images = torch.randn(1, 4, 1, 28, 28)
    leaky = ModelConfig(activation="leaky_relu")
    relu_out = forward(params, CONFIG, images, training=False)
    leaky_out = forward(params, leaky, images, training=False)
    assert leaky_out.shape == relu_out.shape
    assert not torch.allclose(leaky_out, relu_out)


def test_the_training_process_keeps_freed_memory_under_glibc():
    """bench.allocator's settings take on this project's Linux machines (glibc)."""
    import platform

    from sslbench.bench.core.allocator import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: the settings are left alone")
    assert keep_freed_memory() is True
