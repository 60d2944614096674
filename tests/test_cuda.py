"""The engine on a CUDA device: what the CPU tests check, checked where the GPU runs it.

Every test is marked `cuda` and runs on the device named by $SSLBENCH_TEST_DEVICE (default
cuda; skipped when there is no CUDA device). `sslbench gpucheck` runs them first on a GPU
machine (`pytest -m cuda tests/test_cuda.py`); its tiny CPU run sets the variable to `cpu`,
so the same code runs in CI before a GPU sees it (the CUDA-graphs test alone needs CUDA).

Sizes are small on purpose: on a GPU every test takes seconds (CUDA graphs: the compile),
and on the CPU the whole file takes about half a minute on one core.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import pytest
import torch

from sslbench.bench.core.checkpoint import CheckpointPolicy
from sslbench.bench.core.checkpoint import load as load_checkpoint
from sslbench.bench.core.checkpoint import save as save_checkpoint
from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.data import PreparedData, prepare
from sslbench.bench.core.model import forward, predict
from sslbench.bench.core.overrides import with_overrides
from sslbench.bench.core.precision import native_bf16
from sslbench.bench.core.train import (
    TrainState,
    batch_indices,
    init_state,
    load_state_dict,
    single_run,
    start_epoch,
    state_dict,
    train_stack,
    train_step,
)
from sslbench.bench.errors import Interrupted
from sslbench.bench.measure.gpucheck import TEST_DEVICE_ENV
from sslbench.methods import Batch
from tests.conftest import smoke_config

DEVICE = torch.device(os.environ.get(TEST_DEVICE_ENV, "cuda"))
ON_CUDA = DEVICE.type == "cuda"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                       reason=f"no CUDA device ({TEST_DEVICE_ENV}=cpu runs these on the CPU)"),
]

SEEDS = (0, 1, 2, 3, 4)  # a stack of 5: the seeds of one grid variant
TRAIN_SIZE, TEST_SIZE, EPOCHS = 1000, 500, 2  # 10 steps of 100 per epoch
LOSS_KEYS = ("supervised_loss", "unsupervised_loss", "train_loss")

# Relative tolerances of epoch-mean losses compared across execution paths, by device type.
# CPU: as tests/test_train.py. CUDA: a grouped convolution (a stack) and a plain one, or a
# compiled network and the eager one, may run other cuDNN algorithms (on TF32 inputs,
# cuDNN's default from Ampere on), which sum in another order; after 20 steps the mean
# losses stay well within 1e-3, while two seeds' losses differ by 0.5 to 5% (measured on
# this slice), which each test checks is far outside the tolerance.
STACK_REL = {"cpu": 1e-4, "cuda": 1e-3}
COMPILED_REL = {"cpu": 1e-4, "cuda": 1e-3}
# A resumed run against the uninterrupted one, same device and kernels. The CPU gives the
# same bits (tests/test_checkpoint.py). On CUDA, with cuDNN held to deterministic
# algorithms (the fixture below), the bits should match too; 1e-5 leaves room for a kernel
# that still sums with atomics, while a generator left unrestored moves the losses by more
# than 1e-3 (the test shows it).
RESUME_REL = {"cpu": 0.0, "cuda": 1e-5}
# bf16 autocast against fp32: the first epoch's loss agrees to bf16's 8-bit mantissa (as
# tests/test_train.py on the CPU).
BF16_REL = 0.02
# Chunked and one-pass evaluation on the same device: logits differ only by the summation
# order of the kernels a batch size picks; a prediction may differ only where the top two
# logits are closer than this (a tie to float rounding).
EVAL_TIE_LOGIT = 1e-3


def tol(table: dict[str, float]) -> float:
    return table[DEVICE.type]


def tiny(method: str = "temporal_ensembling", **overrides: object) -> RunConfig:
    # Ramp-up of 1 epoch: w(t) > 0 in epoch 2, so the consistency term is in the losses.
    settings = {"train__epochs": EPOCHS, "data__train_size": TRAIN_SIZE,
                "data__test_size": TEST_SIZE, "method__ramp_epochs": 1, **overrides}
    return smoke_config(method, 0, **settings)


def distance(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    """The largest relative difference between two runs' epoch-mean losses (curves). The
    consistency term (about 0.003 in these epochs) counts relative to the total loss it is
    weighted into: alone it is a difference of nearly equal probabilities, whose relative
    rounding says nothing about the run."""
    gaps = []
    for epoch, total in enumerate(b["train_loss"]):
        gaps += [abs(a["supervised_loss"][epoch] - b["supervised_loss"][epoch])
                 / abs(b["supervised_loss"][epoch]),
                 abs(a["train_loss"][epoch] - total) / abs(total),
                 abs(a["unsupervised_loss"][epoch] - b["unsupervised_loss"][epoch]) / abs(total)]
    return max(gaps)


@pytest.fixture
def deterministic_cudnn():
    """cuDNN held to deterministic algorithms (no autotuning), restored afterwards."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


# -- stacks ------------------------------------------------------------------------------------


def test_a_stack_of_five_is_five_sequential_runs(data_root):
    config = tiny()
    stacked = train_stack(config, SEEDS, device=DEVICE, data_root=data_root)
    alone = [single_run(with_overrides(config, {"seed": seed}), device=DEVICE,
                        data_root=data_root) for seed in SEEDS]
    for run, single in zip(stacked, alone, strict=True):
        assert run.labeled_indices == single.labeled_indices
        assert run.stack_size == 5 and single.stack_size == 1
        assert distance(run.curves, single.curves) <= tol(STACK_REL)
    assert len({tuple(run.labeled_indices) for run in stacked}) == 5  # a subset per seed
    # The tolerance tells the runs apart: every other seed's run is far outside it.
    for r, run in enumerate(stacked):
        others = [distance(run.curves, single.curves) for s, single in enumerate(alone) if s != r]
        assert min(others) > 5 * tol(STACK_REL)


def first_step_state(config: RunConfig, seeds: tuple[int, ...], data_root: Path
                     ) -> tuple[TrainState, torch.Tensor]:
    data = prepare(config.data, seeds, data_root, DEVICE)
    state = init_state(config, seeds, data, DEVICE)
    start_epoch(state)
    return state, batch_indices(state, 0)


def test_one_runs_loss_moves_only_that_runs_parameters(data_root):
    """Grouped convolutions and the batched classifier keep the runs apart on the device:
    the gradient of run 2's loss is zero, exactly, in every other run's parameters."""
    state, indices = first_step_state(tiny(), SEEDS, data_root)
    gens = state.generators

    def another_pass(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return forward(params, state.config.model, state.data.train_images[indices],
                       training=True, noise_gens=gens["noise"], dropout_gens=gens["dropout"])

    batch = Batch(indices=indices, labels=state.data.run_labels.gather(1, indices),
                  forward=another_pass)
    losses = state.method.losses(another_pass(state.params), batch, 1)
    (losses.supervised + losses.unsupervised)[2].backward()
    for name, tensor in state.params.items():
        assert tensor.grad is not None, name
        grad = tensor.grad.flatten(1)
        assert grad[2].abs().sum() > 0, name
        assert torch.count_nonzero(grad[[0, 1, 3, 4]]) == 0, name


def test_a_runs_curves_do_not_depend_on_its_stack_mates(data_root):
    config = tiny()
    first = train_stack(config, SEEDS, device=DEVICE, data_root=data_root)
    other = train_stack(config, (*SEEDS[:4], 9), device=DEVICE, data_root=data_root)
    for a, b in zip(first[:4], other[:4], strict=True):
        assert a.labeled_indices == b.labeled_indices
        assert distance(a.curves, b.curves) <= tol(STACK_REL)
    assert first[4].labeled_indices != other[4].labeled_indices


# -- checkpoints -------------------------------------------------------------------------------


def steps(state: TrainState, count: int, epoch: int = 1) -> None:
    weight = torch.tensor(state.method.weight(epoch), device=DEVICE)
    for _ in range(count):
        train_step(state, batch_indices(state, state.step), weight, epoch)
        state.step += 1


def device_generator_states(state: TrainState) -> dict[str, list[torch.Tensor]]:
    return {stream: [g.get_state() for g in gens] for stream, gens in state.generators.items()}


def test_generator_states_survive_a_checkpoint_and_a_resume(tmp_path, data_root,
                                                           deterministic_cudnn):
    """Noise, dropout and augmentation draw from generators on the device: saved mid-epoch
    and restored into a fresh stack, they continue exactly where the uninterrupted stack's
    are, and so do the parameters."""
    config = tiny(data__translate_px=2)  # the augmentation stream too
    seeds = SEEDS[:2]
    data = prepare(config.data, seeds, data_root, DEVICE)

    def fresh() -> TrainState:
        state = init_state(config, seeds, data, DEVICE)
        start_epoch(state)
        return state

    reference = fresh()
    steps(reference, 6)
    interrupted = fresh()
    steps(interrupted, 3)
    save_checkpoint(tmp_path / "stack.ckpt", state_dict(interrupted))
    saved = load_checkpoint(tmp_path / "stack.ckpt", config.config_hash(), list(seeds), DEVICE)
    assert saved is not None
    resumed = fresh()
    load_state_dict(resumed, saved)
    assert resumed.step == 3
    steps(resumed, 3)

    assert all(g.device.type == DEVICE.type for g in resumed.generators["noise"])
    for stream, states in device_generator_states(reference).items():
        for want, got in zip(states, device_generator_states(resumed)[stream], strict=True):
            assert torch.equal(want, got), stream
    for name, tensor in reference.params.items():
        torch.testing.assert_close(resumed.params[name], tensor, rtol=tol(RESUME_REL), atol=0)

    # Without its generators restored the same resume computes something else: the
    # comparison above can fail.
    unrestored = fresh()
    load_state_dict(unrestored, saved)
    for gen in unrestored.generators["noise"]:
        gen.manual_seed(12345)
    steps(unrestored, 3)
    drift = (unrestored.params["fc_w"] - reference.params["fc_w"]).abs().max()
    assert drift > 100 * tol(RESUME_REL) * reference.params["fc_w"].abs().max()


class StopAtCheck(threading.Event):
    """A stop request that sets itself at its n-th check. The loop checks it after every
    step (and at each epoch's end), so the stop falls at the same step however fast the
    device is, where a timer would race it."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.left = checks

    def is_set(self) -> bool:
        self.left -= 1
        if self.left == 0:
            self.set()
        return super().is_set()


def test_a_stack_stopped_mid_epoch_resumes_to_the_uninterrupted_record(tmp_path, data_root,
                                                                        deterministic_cudnn):
    config = tiny(data__translate_px=2)
    seeds = SEEDS[:2]
    reference = train_stack(config, seeds, device=DEVICE, data_root=data_root)
    steps_per_epoch = TRAIN_SIZE // config.train.batch_size
    # Epoch 1's steps, the checks at its end, then a few steps into epoch 2.
    policy = CheckpointPolicy(tmp_path / "stack.ckpt", every_epochs=1,
                              stop=StopAtCheck(steps_per_epoch + 5))
    with pytest.raises(Interrupted) as stopped:
        train_stack(config, seeds, device=DEVICE, data_root=data_root, checkpoint=policy)
    assert stopped.value.epoch == 1 and 0 < stopped.value.step < steps_per_epoch  # mid-epoch
    resumed = train_stack(config, seeds, device=DEVICE, data_root=data_root,
                          checkpoint=CheckpointPolicy(policy.path, every_epochs=1))
    for before, after in zip(reference, resumed, strict=True):
        assert after.labeled_indices == before.labeled_indices
        assert distance(after.curves, before.curves) <= tol(RESUME_REL)
        if tol(RESUME_REL) == 0:
            assert after.curves["test_accuracy"] == before.curves["test_accuracy"]
        else:  # one prediction in TEST_SIZE may flip where two logits tie
            for a, b in zip(after.curves["test_accuracy"], before.curves["test_accuracy"],
                            strict=True):
                assert abs(a - b) <= 1 / TEST_SIZE


# -- execution switches ------------------------------------------------------------------------


def test_cuda_graphs_give_the_eager_losses(data_root):
    if not ON_CUDA:
        pytest.skip("CUDA graphs need a CUDA device (on the CPU the switch is a one-line "
                    "error: tests/test_train.py)")
    from torch._dynamo.utils import counters

    config = tiny()  # 1,000 images in batches of 100: one shape, one graph
    eager = single_run(config, device=DEVICE, data_root=data_root)
    counters.clear()
    graphed = single_run(with_overrides(config, {"train.cuda_graphs": True}), device=DEVICE,
                         data_root=data_root)
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile, not fall back
    assert distance(graphed.curves, eager.curves) <= tol(COMPILED_REL)
    other_seed = single_run(with_overrides(config, {"seed": 1}), device=DEVICE,
                            data_root=data_root)
    assert distance(other_seed.curves, eager.curves) > 5 * tol(COMPILED_REL)


def test_bf16_autocast_runs_and_tracks_fp32(data_root):
    if not native_bf16(DEVICE):
        pytest.skip(f"{DEVICE} has no native bf16 (train.precision=auto stays fp32 there)")
    fp32 = single_run(tiny(), device=DEVICE, data_root=data_root)
    bf16 = single_run(tiny(train__precision="bf16"), device=DEVICE, data_root=data_root)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert all(math.isfinite(v) for key in LOSS_KEYS for v in bf16.curves[key])
    assert bf16.curves["supervised_loss"][0] == pytest.approx(
        fp32.curves["supervised_loss"][0], rel=BF16_REL)
    assert bf16.curves["supervised_loss"][0] != fp32.curves["supervised_loss"][0]
    assert bf16.labeled_indices == fp32.labeled_indices


def test_chunked_evaluation_predicts_as_one_pass(data_root):
    """The default chunks (bench.model.EVAL_CHUNK_IMAGES) and small ones give the
    predictions of one pass over the whole test set, for every run of a stack."""
    config = tiny(data__test_size=10_000 if ON_CUDA else 1000)
    state, _ = first_step_state(config, SEEDS[:3], data_root)
    steps(state, 5)  # trained a little: logits spread beyond the initial near-ties
    data: PreparedData = state.data
    images = data.test_images
    assert images is not None
    params = {k: v.detach() for k, v in state.params.items()}
    one_pass = predict(params, config.model, images, chunk=len(images))
    with torch.no_grad():
        logits = forward(params, config.model,
                         images.unsqueeze(0).expand(len(SEEDS[:3]), -1, -1, -1, -1),
                         training=False)
    top2 = logits.topk(2, dim=-1).values
    tie = (top2[..., 0] - top2[..., 1]) < EVAL_TIE_LOGIT  # (R, M)
    for chunk in (None, 256, 999):  # the device's default, small, and a ragged last chunk
        chunked = predict(params, config.model, images, chunk=chunk)
        assert chunked.shape == one_pass.shape == (3, len(images))
        differ = chunked != one_pass
        assert not (differ & ~tie).any(), chunk
    assert len(set(one_pass.flatten().tolist())) > 1  # not one class everywhere
