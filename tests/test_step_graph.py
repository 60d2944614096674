"""The whole-step CUDA graph (train.step_graph, bench.graphed), checked where it can be: on
the CPU its static-buffer step runs eagerly and must be train_step exactly; the step must
be pure (no generator touched, no buffer moved); on CUDA, the replayed graph must give the
eager losses within a tolerance."""

from __future__ import annotations

import pytest
import torch

from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.data import prepare
from sslbench.bench.core.overrides import with_overrides
from sslbench.bench.core.train import batch_indices, init_state, start_epoch, train_step
from sslbench.bench.errors import ConfigError
from tests.conftest import smoke_config

STEPS = 6
SEEDS = [0, 1]
# Float32 on a GPU: a replayed graph runs the eager kernels, so only reductions ordered
# differently by the allocator's addresses may differ; a few ulps of the loss.
CUDA_TOLERANCE = 1e-5


def states(method: str, data_root, device: torch.device, **extra: str):
    """Two fresh stacks of the same config and seeds: plain, and with train.step_graph."""
    config = with_overrides(smoke_config(method), {"train.epochs": "2", **extra})
    graphed = with_overrides(config, {"train.step_graph": "true"})
    data = prepare(config.data, SEEDS, data_root, device)
    return [init_state(c, SEEDS, data, device) for c in (config, graphed)]


def run_steps(state, steps: int = STEPS, epoch: int = 1) -> list[torch.Tensor]:
    start_epoch(state)
    weight = torch.tensor(state.method.weight(epoch), device=state.device)
    out = []
    for step in range(steps):
        losses = train_step(state, batch_indices(state, step), weight, epoch)
        out.append(torch.stack([losses.supervised, losses.unsupervised]).detach().clone())
    return out


@pytest.mark.parametrize(("method", "extra"), [
    ("temporal_ensembling", {}),
    ("pi_model", {}),  # a second pass: its randomness drawn ahead, in eager's order
    ("mean_teacher", {"data.translate_px": "2"}),  # and each pass's own augmentation
    ("supervised", {}),
])
def test_the_static_buffer_step_is_train_step_exactly_on_cpu(method, extra, data_root):
    plain, graphed = states(method, data_root, torch.device("cpu"), **extra)
    assert graphed.graphed is not None and plain.graphed is None
    for a, b in zip(run_steps(plain), run_steps(graphed), strict=True):
        assert torch.equal(a, b)
    for name in plain.params:
        assert torch.equal(plain.params[name], graphed.params[name]), name
    assert torch.equal(plain.sums, graphed.sums)
    # The static buffers are its own: filling them never writes into the epoch's order
    # (a batch's indices are a view of it) or anything else of the caller's.
    assert torch.equal(plain.order, graphed.order)


def test_the_step_is_pure_and_its_buffers_stay_put(data_root):
    """The body draws nothing (every generator is where load() left it) and reads its
    inputs from the same buffers every step: what a captured graph replays."""
    _, state = states("pi_model", data_root, torch.device("cpu"))
    run_steps(state, steps=1)
    graphed = state.graphed
    assert graphed is not None and graphed.static is not None
    addresses = [t.data_ptr() for t in (graphed.static.indices, *graphed.static.images,
                                         *(n for n in graphed.static.noise if n is not None))]
    params = {k: v.data_ptr() for k, v in state.params.items()}
    graphed.load(batch_indices(state, 1), torch.tensor(0.5))
    before = {k: [g.get_state() for g in gens] for k, gens in state.generators.items()}
    state.optimizer.zero_grad(set_to_none=True)
    graphed.body(epoch=1)
    after = {k: [g.get_state() for g in gens] for k, gens in state.generators.items()}
    assert all(torch.equal(x, y) for k in before for x, y in zip(before[k], after[k],
                                                                strict=True))
    assert addresses == [t.data_ptr() for t in (
        graphed.static.indices, *graphed.static.images,
        *(n for n in graphed.static.noise if n is not None))]
    assert params == {k: v.data_ptr() for k, v in state.params.items()}
    # Filled again, the buffers hold the new step's batch.
    assert torch.equal(graphed.static.indices, batch_indices(state, 1))


def test_step_graph_excludes_the_network_only_compilers():
    with pytest.raises(ConfigError, match=r"train\.step_graph captures the whole step"):
        with_overrides(RunConfig(), {"train.step_graph": "true", "train.compile": "true"})
    assert (with_overrides(RunConfig(), {"train.step_graph": "false"}).config_hash()
            == RunConfig().config_hash())  # added later: off keeps every stored run id


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["temporal_ensembling", "mean_teacher"])
def test_the_replayed_graph_gives_the_eager_losses_on_cuda(method, data_root):
    plain, graphed = states(method, data_root, torch.device("cuda"))
    steps = 3 + 5  # past the warm-up: the last five are replays of one captured graph
    eager, replayed = run_steps(plain, steps), run_steps(graphed, steps)
    assert graphed.graphed is not None and graphed.graphed.captured_epoch == 1
    for a, b in zip(eager, replayed, strict=True):
        torch.testing.assert_close(a, b, rtol=CUDA_TOLERANCE, atol=CUDA_TOLERANCE)
