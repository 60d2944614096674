"""Data: real MNIST files, balanced seeded splits, normalization, corrupt-file errors."""

import shutil

import pytest
import torch

from sslbench.bench.core.config import DataConfig
from sslbench.bench.core.data import balanced_labeled_indices, fit_normalizer, prepare
from sslbench.bench.core.datasets import MNIST, load_raw, raw_dir, verify
from sslbench.bench.errors import ConfigError, DataError
from sslbench.methods.losses import UNLABELED

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_raw(data_root, MNIST)


def test_mnist_shapes(mnist):
    train_x, train_y, test_x, _ = mnist
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10000, 28, 28) and train_y.max() == 9


def test_balanced_split_draws_k_over_classes_per_class(mnist):
    _, train_y, _, _ = mnist
    chosen = balanced_labeled_indices(train_y, 100, 10, seed=0)
    assert len(chosen) == 100 and len(set(chosen.tolist())) == 100
    assert torch.bincount(train_y[chosen], minlength=10).tolist() == [10] * 10
    assert torch.equal(chosen, balanced_labeled_indices(train_y, 100, 10, seed=0))
    assert not torch.equal(chosen, balanced_labeled_indices(train_y, 100, 10, seed=1))


def test_same_seed_same_labeled_subset_whatever_the_config(data_root):
    base = prepare(DataConfig(train_size=3000, test_size=100), [4], data_root, CPU)
    other = prepare(DataConfig(train_size=3000, test_size=100, normalization="pixelwise"),
                    [4], data_root, CPU)
    assert torch.equal(base.labeled_indices, other.labeled_indices)
    labeled = base.run_labels[0] != UNLABELED
    assert labeled.sum() == 100
    assert torch.equal(labeled.nonzero().flatten(), base.labeled_indices[0])


def test_validation_split_is_held_out_of_training(data_root, mnist):
    config = DataConfig(train_size=3000, test_size=100, val_size=500)
    prepared = prepare(config, [0], data_root, CPU)
    assert prepared.num_train == 2500 and prepared.val_images.shape[0] == 500
    # No validation image is among the training images.
    train = {bytes(x.numpy()) for x in prepared.train_images[:, 0].to(torch.float16)}
    assert not any(bytes(x.numpy()) in train for x in prepared.val_images[:, 0].to(torch.float16))


def test_channelwise_stats_match_the_blog(mnist):
    normalizer = fit_normalizer(mnist[0], "channelwise", 0.1)
    assert normalizer.mean.item() == pytest.approx(0.1307, abs=1e-4)
    assert normalizer.std.item() == pytest.approx(0.3081, abs=1e-4)


def test_pixelwise_has_per_pixel_stats_with_a_floor(mnist):
    normalizer = fit_normalizer(mnist[0], "pixelwise", 0.1)
    assert normalizer.mean.shape == (28, 28)
    assert normalizer.std[0, 0] == pytest.approx(0.1)  # a border pixel: always 0
    assert normalizer.std.max() > 0.4 and normalizer(mnist[0][:5]).shape == (5, 1, 28, 28)


def test_impossible_label_counts(data_root):
    with pytest.raises(ConfigError, match="divisible by the 10 classes"):
        DataConfig(num_labels=105, train_size=2000)
    with pytest.raises(ConfigError, match="divisible by the 10 classes"):
        balanced_labeled_indices(torch.arange(100) % 10, 15, 10, seed=0)
    with pytest.raises(ConfigError, match="exceeds the 500 training images"):
        prepare(DataConfig(num_labels=1000, train_size=500), [0], data_root, CPU)


@pytest.mark.parametrize("damage, expected", [
    ("delete", "is missing"),
    ("truncate", "truncated"),
    ("alter", "altered"),
])
def test_corrupt_files_get_a_one_line_error_naming_file_and_fix(data_root, tmp_path, damage,
                                                                expected):
    copy = raw_dir(tmp_path, MNIST)
    shutil.copytree(raw_dir(data_root, MNIST), copy)
    target = copy / "train-labels-idx1-ubyte"
    if damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        data = bytearray(target.read_bytes())
        data[500] ^= 0xFF
        target.write_bytes(bytes(data))
    with pytest.raises(DataError) as caught:
        verify(tmp_path, MNIST)
    message = str(caught.value)
    assert expected in message and "train-labels-idx1-ubyte" in message
    assert "sslbench data fetch" in message and "\n" not in message
