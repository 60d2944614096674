"""The stacked CNN: R runs in one pass behave as R independent models."""

import torch

from bench.config import ModelConfig
from bench.model import forward, init_params, predict
from bench.seeds import generator

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
