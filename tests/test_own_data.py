"""Datasets and networks by name, end to end on small generated files: `npz:` and `folder:`
datasets through the pipeline (colour images, unlabeled images), CIFAR-10's and SVHN's
specs on format-exact fabricated files (their published checksums refuse them; a plugin's
spec with the fabricated file's checksum reads them), `conv_large` trained as a stack,
stopped and resumed, and the `cifar10_4000` grid's smoke slice. No real CIFAR-10 or SVHN
download was run here (no internet)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.io import savemat

from sslbench.bench.core.checkpoint import CheckpointPolicy
from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.data import fit_normalizer, prepare
from sslbench.bench.core.datasets import CIFAR10, DATASETS, SVHN, raw_dir, verify
from sslbench.bench.core.overrides import build_config, with_overrides
from sslbench.bench.core.train import Stopped, train_stack, train_until_stopped
from sslbench.bench.errors import ConfigError, DataError
from sslbench.methods.losses import UNLABELED
from tests.test_imagefiles import image_folder, svhn_arrays, write_cifar

CPU = torch.device("cpu")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])


def colour_npz(path: Path, train: int = 200, test: int = 100, size: int = 16) -> Path:
    """Four classes, each a colour plus noise (learnable in a few epochs), NHWC uint8."""
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % len(COLOURS)
        x = COLOURS[y][:, None, None, :] + rng.integers(-40, 40, size=(n, size, size, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = make(train), make(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def config_for(dataset: str, method: str = "temporal_ensembling", **overrides: object
               ) -> RunConfig:
    settings = {"data.dataset": dataset, "data.num_labels": 40, "data.train_size": None,
                "data.test_size": None, "train.epochs": 3, "method.ramp_epochs": 1,
                **overrides}
    return with_overrides(build_config(method, 0, "smoke"), settings)


def test_an_npz_dataset_trains_colour_images_and_stores_its_path_absolute(tmp_path,
                                                                          monkeypatch):
    colour_npz(tmp_path / "colours.npz")
    monkeypatch.chdir(tmp_path)
    config = config_for("npz:colours.npz")
    digest = hashlib.sha256()
    digest.update(b"colours.npz\0" + hashlib.sha256((tmp_path / "colours.npz").read_bytes())
                  .digest())
    assert config.data.dataset == (f"npz:{tmp_path / 'colours.npz'}@sha256:"
                                   f"{digest.hexdigest()[:16]}")
    assert config.config_hash() == config_for(f"npz:{tmp_path}/colours.npz").config_hash()
    data = prepare(config.data, [0], tmp_path, CPU)
    assert data.train_images.shape == (200, 3, 16, 16) and data.num_classes == 4
    (result,) = train_stack(config, [0], device=CPU, data_root=tmp_path)
    assert result.final_test_accuracy > 0.9  # chance is 0.25: the colours separate easily


def test_a_file_replaced_under_the_same_path_is_new_data_never_the_old_results(tmp_path):
    """The run id holds the content: new bytes give a new id, and a config made for the old
    bytes refuses to train on the new ones (one line) rather than pass as them."""
    path = colour_npz(tmp_path / "colours.npz")
    old = config_for(f"npz:{path}")
    stored = RunConfig(**{**old.__dict__})  # as rebuilt from a record: no file is read
    assert stored.data.dataset == old.data.dataset
    colour_npz(path, train=120)
    new = config_for(f"npz:{path}")
    assert new.config_hash() != old.config_hash()
    with pytest.raises(DataError, match=r"^npz dataset .*colours.npz changed since this "
                                        r"config was made \(content [0-9a-f]{16}, the run "
                                        r"id's [0-9a-f]{16}\); give data.dataset=npz:"):
        prepare(old.data, [0], tmp_path, CPU)
    assert prepare(new.data, [0], tmp_path, CPU).num_train == 120
    with pytest.raises(DataError, match=r"^npz dataset .*missing.npz does not exist$"):
        config_for(f"npz:{tmp_path}/missing.npz")


def test_colour_images_are_normalized_per_channel(tmp_path):
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[:, 0] = 255  # red: always 255
    images[:2, 1] = 255  # green: half the images 255, half 0
    channelwise = fit_normalizer(images, "channelwise", 0.1)
    assert channelwise.mean.flatten().tolist() == pytest.approx([1.0, 0.5, 0.0])
    # Sample std over the 16 values of each channel: green is 8 ones and 8 zeros.
    assert channelwise.std.flatten().tolist() == pytest.approx([0.0, (16 / 15 / 4) ** 0.5, 0.0])
    assert channelwise(images).shape == (4, 3, 2, 2)
    pixelwise = fit_normalizer(images, "pixelwise", 0.1)
    assert pixelwise.mean.shape == (3, 2, 2) and pixelwise.std.min() == pytest.approx(0.1)


def test_a_folder_dataset_adds_its_unlabeled_images_to_the_pool_but_never_labels_them(
        tmp_path):
    image_folder(tmp_path / "shapes", size=8)  # 2 classes x 3 train, 2 x 2 test, 4 unlabeled
    config = config_for(f"folder:{tmp_path / 'shapes'}", **{"data.num_labels": 2})
    data = prepare(config.data, [0, 1, 2], tmp_path, CPU)
    assert data.train_images.shape == (10, 3, 8, 8) and data.num_classes == 2
    assert (data.run_labels[:, 6:] == UNLABELED).all()
    assert (data.labeled_indices < 6).all()
    assert list((tmp_path / "folder-cache").glob("folder-*.npz"))  # decoded once, cached
    (result,) = train_stack(config, [0], device=CPU, data_root=tmp_path)
    assert all(np.isfinite(result.curves["train_loss"]))


def test_bad_settings_for_a_dataset_are_one_line(tmp_path):
    colour_npz(tmp_path / "colours.npz", train=30, test=10)
    with pytest.raises(ConfigError, match=r"^data.num_labels=30 must be divisible by the 4 "
                                          r"classes for a balanced split$"):
        prepare(config_for(f"npz:{tmp_path}/colours.npz", **{"data.num_labels": 30}).data,
                [0], tmp_path, CPU)
    with pytest.raises(ConfigError, match=r"^data.train_size=100 exceeds the 30 training "):
        prepare(config_for(f"npz:{tmp_path}/colours.npz", **{"data.train_size": 100}).data,
                [0], tmp_path, CPU)
    with pytest.raises(ConfigError, match=r"^data.hflip: a horizontal flip does not suit "
                                          r"mnist \(a mirrored digit is not that digit\)"):
        config_for("mnist", **{"data.hflip": True})
    with pytest.raises(ConfigError, match=r"^unknown dataset 'cifar100'; choose one of: "
                                          r"cifar10, fashion_mnist, mnist, svhn, npz:PATH or "
                                          r"folder:PATH"):
        config_for("cifar100")
    with pytest.raises(ConfigError, match=r"model conv_large runs eagerly"):
        config_for("cifar10", **{"model.name": "conv_large", "train.compile": True})


def cifar_tarball(root: Path, per_file: int = 20, test: int = 20) -> Path:
    """The binary distribution's tarball, built from fabricated batch files."""
    folder = root / "unpacked" / "cifar-10-batches-bin"
    write_cifar(folder, per_file=per_file, test=test)
    tarball = raw_dir(root, CIFAR10) / "cifar-10-binary.tar.gz"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-bin")
    return tarball


def test_the_published_checksums_refuse_fabricated_cifar10_and_svhn_files(tmp_path):
    tarball = cifar_tarball(tmp_path)
    with pytest.raises(DataError) as error:
        verify(tmp_path, CIFAR10)
    assert str(error.value) == (
        f"{tarball} has {tarball.stat().st_size} bytes, expected 170052171 (truncated or not "
        f"the file); run `sslbench data fetch --dataset cifar10 --root {tmp_path}`")
    folder = raw_dir(tmp_path, SVHN)
    folder.mkdir(parents=True)
    for name, seed in (("train_32x32.mat", 0), ("test_32x32.mat", 1)):
        x, y = svhn_arrays(20, seed)
        savemat(folder / name, {"X": x, "y": y})
    with pytest.raises(DataError, match=r"train_32x32.mat is altered or truncated \(MD5 does "
                                        r"not match the published one\)"):
        verify(tmp_path, SVHN)
    # The reader itself, behind a spec without checksums: SVHN's layout becomes NCHW.
    with DATASETS.scoped("svhn_fabricated", replace(SVHN, name="svhn_fabricated", files=())):
        config = config_for("svhn_fabricated", **{"data.num_labels": 10})
        data = prepare(config.data, [0], tmp_path, CPU)
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_labels is not None
    assert sorted(data.test_labels.tolist()) == sorted(i % 10 for i in range(20))


PLUGIN = '''
"""CIFAR-10's spec with the fabricated tarball's own checksum (the published one refuses it)."""
from dataclasses import replace
from sslbench.bench.api import RawFile, register_dataset
from sslbench.bench.core.datasets import CIFAR10

register_dataset(replace(CIFAR10, name="cifar10_fabricated", files=(
    RawFile("cifar-10-binary.tar.gz", {size}, sha256="{sha256}"),)))
'''


def test_the_cifar10_4000_grid_runs_its_smoke_slice_on_fabricated_cifar10(tmp_path):
    tarball = cifar_tarball(tmp_path / "data")
    plugin = tmp_path / "fabricated.py"
    plugin.write_text(PLUGIN.format(size=tarball.stat().st_size,
                                    sha256=hashlib.sha256(tarball.read_bytes()).hexdigest()))
    store = f"sqlite:///{tmp_path / 'runs.db'}"

    def sslbench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sslbench.bench.cli", "--plugin", str(plugin), *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=900,
            env={**os.environ, "OMP_NUM_THREADS": "1"})

    # 100 training images (10 labeled) and the 20 test images, one epoch: a slice that
    # shows the grid runs, not what it measures.
    ablate = sslbench("ablate", "--grid", "cifar10_4000", "--profile", "smoke", "--seeds", "1",
                      "--set", "data.dataset=cifar10_fabricated", "--set", "data.num_labels=10",
                      "--set", "data.train_size=100", "--set", "data.test_size=20", "--set",
                      "train.epochs=1", "--device", "cpu", "--threads", "1", "--workers", "1",
                      "--root", str(tmp_path / "data"), "--storage", store)
    assert ablate.returncode == 0, ablate.stderr
    report = sslbench("report", "--grid", "cifar10_4000", "--profile", "smoke", "--storage",
                      store, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    runs = (tmp_path / "report" / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 3
    export = sslbench("export", "--storage", store, "--out", str(tmp_path / "export"))
    assert export.returncode == 0, export.stderr
    exported = pd.read_csv(tmp_path / "export" / "runs.csv")
    assert set(exported["config.model.name"]) == {"conv_large"}
    assert set(exported["config.data.num_labels"]) == {10}  # --set over the grid's 4,000


def test_conv_large_trains_as_a_stack_and_resumes_with_its_batch_norm_means(tmp_path):
    colour_npz(tmp_path / "colours.npz", train=60, test=20)
    config = config_for(f"npz:{tmp_path}/colours.npz", **{
        "model.name": "conv_large", "data.num_labels": 20, "train.epochs": 2,
        "data.translate_px": 2, "data.hflip": True})
    stacked = train_stack(config, [0, 1], device=CPU, data_root=tmp_path)
    for seed, result in zip((0, 1), stacked, strict=True):
        (alone,) = train_stack(with_overrides(config, {"seed": seed}), [seed], device=CPU,
                               data_root=tmp_path)
        assert result.labeled_indices == alone.labeled_indices
        # Grouped convolutions sum in another order: equal up to float rounding (the
        # unsupervised loss is about 1e-5 here: rounding shows in its relative difference).
        for key in ("supervised_loss", "unsupervised_loss"):
            assert result.curves[key] == pytest.approx(alone.curves[key], rel=1e-3,
                                                       abs=1e-7), key
    assert stacked[0].curves["supervised_loss"] != stacked[1].curves["supervised_loss"]

    # Stopped after the first epoch and resumed: the same numbers as without the stop, the
    # running means restored from the checkpoint (a stale one would change the test pass).
    policy = CheckpointPolicy(tmp_path / "stack.pt", every_epochs=0)

    def stop_after_first_epoch(summary: object) -> None:
        policy.stop.set()

    first = train_until_stopped(config, [0, 1], device=CPU, data_root=tmp_path,
                                progress=stop_after_first_epoch, checkpoint=policy)
    assert isinstance(first, Stopped) and first.epoch == 1
    saved = torch.load(policy.path, weights_only=True)
    assert set(saved["buffers"]) >= {"conv1a", "dense"} and saved["buffers"]["dense"].shape[0] == 2
    policy.stop.clear()
    resumed = train_stack(config, [0, 1], device=CPU, data_root=tmp_path, checkpoint=policy)
    for a, b in zip(stacked, resumed, strict=True):
        assert a.curves["test_accuracy"] == b.curves["test_accuracy"]
        assert a.curves["train_loss"] == b.curves["train_loss"]
