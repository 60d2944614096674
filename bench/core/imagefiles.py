"""Image datasets from the file formats users and papers bring, read without unpickling.

Every reader returns `ImageSplits`: uint8 images (N, C, H, W) and int64 labels (N,) per split,
and a class count. A file that is missing, truncated, of the wrong shape or holding a label
out of range is one `DataError` line naming the file and what is wrong; nothing is written.

- **CIFAR-10, binary version** (`cifar-10-binary.tar.gz`, never the pickled Python one):
  `data_batch_1..5.bin` and `test_batch.bin` under `cifar-10-batches-bin/`, records of
  3,073 bytes: one label byte (0-9), then 1,024 red, 1,024 green and 1,024 blue bytes of a
  32x32 image in row-major order. The tarball's members are checked before anything is
  unpacked (bench.core.archives).
- **SVHN, cropped digits** (`train_32x32.mat`, `test_32x32.mat`, MATLAB 5 files read by
  `scipy.io.loadmat`, which builds arrays, never objects): `X` (32, 32, 3, N) uint8, `y`
  (N, 1) with labels 1-10, where 10 is the digit 0.
- **`npz:PATH`**, a user's own arrays: `x_train`, `y_train`, `x_test`, `y_test` in one
  `.npz` (loaded with allow_pickle=False); images uint8, NHWC or NCHW (channels 1 or 3), or
  (N, H, W) for one channel; labels integers 0..K-1.
- **`folder:PATH`**, a user's own image files: `train/CLASS/*.png`, `test/CLASS/*.png` and
  optionally `unlabeled/*.png`, decoded by torchvision (PNG, JPEG); the classes are the
  sorted names of `train/`'s folders. Decoded once into an `.npz` cache (no pickle) named by
  a SHA-256 of the files' names and bytes, so a changed image is decoded again.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslbench.bench.core.archives import safe_extract
from sslbench.bench.errors import DataError

CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"
CIFAR_FOLDER = "cifar-10-batches-bin"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ImageSplits:
    """uint8 images (N, C, H, W) and int64 labels (N,) per split; `unlabeled` has no labels
    (a folder dataset's `unlabeled/`), None where the dataset has none."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    unlabeled: torch.Tensor | None = None
    class_names: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])


def _check_labels(labels: torch.Tensor, num_classes: int, where: str) -> None:
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, found "
                        f"{int(labels.min())}..{int(labels.max())}")


# -- CIFAR-10, binary version ---------------------------------------------------------------


def read_cifar10_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One `.bin` file: (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataError(f"CIFAR-10 file {path}: cannot be read ({error.strerror or error}); "
                        f"fetch the dataset again") from None
    if raw.size == 0 or raw.size % CIFAR_RECORD_BYTES:
        raise DataError(f"CIFAR-10 file {path}: {raw.size:,} bytes is not a whole number of "
                        f"{CIFAR_RECORD_BYTES:,}-byte records (truncated or not the binary "
                        f"version); fetch cifar-10-binary.tar.gz again")
    records = raw.reshape(-1, CIFAR_RECORD_BYTES)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    _check_labels(labels, 10, f"CIFAR-10 file {path}")
    images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy())
    return images, labels


def read_cifar10(source: Path) -> ImageSplits:
    """CIFAR-10 from its binary tarball or from the folder it unpacks to."""
    if source.is_file():
        if not tarfile.is_tarfile(source):
            raise DataError(f"CIFAR-10: {source} is not a tar archive; fetch "
                            f"cifar-10-binary.tar.gz again")
        with tempfile.TemporaryDirectory() as unpacked:
            safe_extract(source, Path(unpacked))
            return read_cifar10(Path(unpacked))
    folder = source / CIFAR_FOLDER if (source / CIFAR_FOLDER).is_dir() else source
    missing = [n for n in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE) if not (folder / n).is_file()]
    if missing:
        raise DataError(f"CIFAR-10: {folder} lacks {', '.join(missing)}; fetch "
                        f"cifar-10-binary.tar.gz again")
    train = [read_cifar10_batch(folder / name) for name in CIFAR_TRAIN_FILES]
    x_test, y_test = read_cifar10_batch(folder / CIFAR_TEST_FILE)
    return ImageSplits(torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]),
                       x_test, y_test, 10)


# -- SVHN, .mat ------------------------------------------------------------------------------


def read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One SVHN `.mat`: (images uint8 (N, 3, 32, 32), labels int64 (N,) with 0-9; SVHN's
    label 10 is the digit 0)."""
    from scipy.io import loadmat

    try:
        content = loadmat(path, variable_names=("X", "y"))
    except (OSError, ValueError, TypeError, NotImplementedError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"SVHN file {path}: not a readable MATLAB file ({reason}); fetch it "
                        f"again") from None
    if "X" not in content or "y" not in content:
        raise DataError(f"SVHN file {path}: no X and y arrays; it is not SVHN's cropped-digit "
                        f"format (train_32x32.mat, test_32x32.mat)")
    images, labels = content["X"], np.asarray(content["y"]).reshape(-1)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.dtype != np.uint8:
        raise DataError(f"SVHN file {path}: X is {images.dtype} {images.shape}, expected uint8 "
                        f"(32, 32, 3, N)")
    if len(labels) != images.shape[3]:
        raise DataError(f"SVHN file {path}: {len(labels):,} labels for {images.shape[3]:,} "
                        f"images")
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"SVHN file {path}: labels must lie in 1..10 (10 is the digit 0), "
                        f"found {labels.min()}..{labels.max()}")
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(3, 2, 0, 1)))
    y = torch.from_numpy(labels.astype(np.int64) % 10)
    return x, y


def read_svhn(folder: Path) -> ImageSplits:
    x_train, y_train = read_svhn_mat(folder / "train_32x32.mat")
    x_test, y_test = read_svhn_mat(folder / "test_32x32.mat")
    return ImageSplits(x_train, y_train, x_test, y_test, 10)


# -- npz: a user's own arrays ---------------------------------------------------------------


def _as_nchw(images: np.ndarray, where: str) -> torch.Tensor:
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8 (0-255), got {images.dtype}")
    if images.ndim == 3:  # (N, H, W): one channel
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)  # NHWC
    elif images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"{where}: images of shape {images.shape}; expected (N, H, W), NHWC or "
                        f"NCHW with 1 or 3 channels")
    return torch.from_numpy(np.ascontiguousarray(images))


def read_npz(path: Path) -> ImageSplits:
    """`npz:PATH`: x_train, y_train, x_test, y_test; the class count is the largest label
    plus one."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            content = {name: arrays[name] for name in arrays.files}
    except FileNotFoundError:
        raise DataError(f"npz dataset {path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"npz dataset {path}: not a readable .npz of plain arrays ({reason})"
                        ) from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in content]
    if missing:
        raise DataError(f"npz dataset {path}: missing {', '.join(missing)} (it needs x_train, "
                        f"y_train, x_test, y_test)")
    splits = {}
    for split in ("train", "test"):
        x = _as_nchw(content[f"x_{split}"], f"npz dataset {path}, x_{split}")
        y = content[f"y_{split}"].reshape(-1) if content[f"y_{split}"].ndim <= 2 else None
        if y is None or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"npz dataset {path}: y_{split} must be integer class labels, one "
                            f"per image")
        if len(y) != len(x):
            raise DataError(f"npz dataset {path}: {len(y):,} labels in y_{split} for "
                            f"{len(x):,} images in x_{split}")
        splits[split] = (x, torch.from_numpy(y.astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"npz dataset {path}: train images are {tuple(x_train.shape[1:])} "
                        f"(C, H, W) but test images {tuple(x_test.shape[1:])}")
    num_classes = int(y_train.max()) + 1 if len(y_train) else 0
    _check_labels(y_train, num_classes, f"npz dataset {path}, y_train")
    _check_labels(y_test, num_classes, f"npz dataset {path}, y_test (classes of y_train)")
    return ImageSplits(x_train, y_train, x_test, y_test, num_classes)


# -- folder: a user's own image files ------------------------------------------------------


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file()
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def _folder_fingerprint(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _decode(paths: list[Path], channels: int | None) -> torch.Tensor:
    with warnings.catch_warnings():
        # torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; they
        # still ship and work, and the issue asks for torchvision's decoding.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_all(paths, channels)


def _decode_all(paths: list[Path], channels: int | None) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    images: list[torch.Tensor] = []
    for path in paths:
        try:
            mode = {None: ImageReadMode.UNCHANGED, 1: ImageReadMode.GRAY,
                    3: ImageReadMode.RGB}[channels]
            image = decode_image(read_file(str(path)), mode=mode)
        except (RuntimeError, ValueError) as error:
            raise DataError(f"folder dataset: image {path} cannot be decoded "
                            f"({str(error).splitlines()[0]}); replace or remove it") from None
        if channels is None:
            channels = 3 if image.shape[0] >= 3 else 1
            image = image[:channels]
        if images and image.shape != images[0].shape:
            raise DataError(f"folder dataset: image {path} is {tuple(image.shape)} (C, H, W), "
                            f"unlike {tuple(images[0].shape)} of {paths[0]}; every image "
                            f"needs one size")
        images.append(image)
    return torch.stack(images)


def read_folder(root: Path, cache_dir: Path) -> ImageSplits:
    """`folder:PATH`, decoded once into `cache_dir/folder-FINGERPRINT.npz`."""
    train_dir, test_dir = root / "train", root / "test"
    for split in (train_dir, test_dir):
        if not split.is_dir():
            raise DataError(f"folder dataset {root}: no {split.name}/ folder (it needs "
                            f"train/CLASS/*.png and test/CLASS/*.png)")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"folder dataset {root}: train/ holds no class folders")
    unknown = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    unknown = [name for name in unknown if name not in classes]
    if unknown:
        raise DataError(f"folder dataset {root}: test/ has classes that train/ lacks: "
                        f"{', '.join(unknown)}")
    labeled = {split: [(path, index) for index, name in enumerate(classes)
                       if (folder / name).is_dir() for path in _image_files(folder / name)]
               for split, folder in (("train", train_dir), ("test", test_dir))}
    for split_name, items in labeled.items():
        if not items:
            raise DataError(f"folder dataset {root}: {split_name}/ holds no .png or .jpg "
                            f"images")
    unlabeled_dir = root / "unlabeled"
    unlabeled = _image_files(unlabeled_dir) if unlabeled_dir.is_dir() else []
    files = [p for items in labeled.values() for p, _ in items] + unlabeled
    cache = cache_dir / f"folder-{_folder_fingerprint(root, files)}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as arrays:
            stored = {name: torch.from_numpy(arrays[name]) for name in arrays.files}
    else:
        first = _decode([labeled["train"][0][0]], None)
        channels = int(first.shape[1])
        stored = {f"x_{s}": _decode([p for p, _ in items], channels)
                  for s, items in labeled.items()}
        stored |= {f"y_{s}": torch.tensor([i for _, i in items], dtype=torch.int64)
                   for s, items in labeled.items()}
        if unlabeled:
            stored["unlabeled"] = _decode(unlabeled, channels)
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial.npz")
        to_save: dict[str, Any] = {k: v.numpy() for k, v in stored.items()}
        np.savez(partial, **to_save)
        partial.replace(cache)  # whole or absent, never half written
    if stored["x_train"].shape[1:] != stored["x_test"].shape[1:]:
        raise DataError(f"folder dataset {root}: train images are "
                        f"{tuple(stored['x_train'].shape[1:])} but test images "
                        f"{tuple(stored['x_test'].shape[1:])} (C, H, W)")
    return ImageSplits(stored["x_train"], stored["y_train"], stored["x_test"],
                       stored["y_test"], len(classes), stored.get("unlabeled"), tuple(classes))
