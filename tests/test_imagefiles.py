"""The image-file readers (bench.core.imagefiles) on format-exact fabricated files: CIFAR-10's
binary records written byte by byte, SVHN's `.mat` saved by scipy, `.npz` arrays and PNG
folders. No real CIFAR-10 or SVHN download was run here (no internet): these files follow
the published formats, and truncated or malformed ones are refused in one line."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat
from torchvision.io import encode_png

from sslbench.bench.core.imagefiles import (
    CIFAR_FOLDER,
    CIFAR_RECORD_BYTES,
    CIFAR_TEST_FILE,
    CIFAR_TRAIN_FILES,
    read_cifar10,
    read_folder,
    read_npz,
    read_svhn,
)
from sslbench.bench.errors import DataError

# The tests' own PNG encoding: torchvision 0.29 marks its codecs deprecated (they work).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def one_line(error: pytest.ExceptionInfo[DataError]) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# -- CIFAR-10 -------------------------------------------------------------------------------


def cifar_record(label: int, index: int) -> bytes:
    """One record as the format defines it: the label byte, then the red, green and blue
    planes of a 32x32 image, each row-major. Pixel (plane c, row r, col k) holds
    (index + 3c + r + 7k) mod 256, so orientation and plane order are checkable."""
    planes = bytearray()
    for c in range(3):
        for r in range(32):
            for k in range(32):
                planes.append((index + 3 * c + r + 7 * k) % 256)
    return bytes([label]) + bytes(planes)


def write_cifar(folder: Path, per_file: int = 3, test: int = 2) -> list[int]:
    """The six batch files, `per_file` records each (test: `test`); returns train labels."""
    folder.mkdir(parents=True)
    labels, index = [], 0
    for name in CIFAR_TRAIN_FILES:
        with (folder / name).open("wb") as handle:
            for _ in range(per_file):
                labels.append(index % 10)
                handle.write(cifar_record(index % 10, index))
                index += 1
    (folder / CIFAR_TEST_FILE).write_bytes(
        b"".join(cifar_record((9 - i) % 10, 100 + i) for i in range(test)))
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\n")
    return labels


def test_cifar10_binary_records_become_nchw_images_with_their_labels(tmp_path):
    labels = write_cifar(tmp_path / "src" / CIFAR_FOLDER)
    tarball = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(tmp_path / "src" / CIFAR_FOLDER, arcname=CIFAR_FOLDER)
    for source in (tarball, tmp_path / "src"):
        data = read_cifar10(source)
        assert data.x_train.shape == (15, 3, 32, 32) and data.x_train.dtype == torch.uint8
        assert data.y_train.tolist() == labels
        assert data.x_test.shape == (2, 3, 32, 32) and data.y_test.tolist() == [9, 8]
        assert (data.num_classes, data.channels, data.image_size) == (10, 3, (32, 32))
        # image 4, green plane, row 5, column 6
        assert int(data.x_train[4, 1, 5, 6]) == (4 + 3 + 5 + 42) % 256
        assert int(data.x_test[1, 2, 31, 0]) == (101 + 6 + 31) % 256


def test_a_truncated_or_altered_cifar10_file_is_one_line(tmp_path):
    folder = tmp_path / CIFAR_FOLDER
    write_cifar(folder)
    batch = folder / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-1])
    with pytest.raises(DataError) as error:
        read_cifar10(tmp_path)
    assert one_line(error) == (
        f"CIFAR-10 file {batch}: {3 * CIFAR_RECORD_BYTES - 1:,} bytes is not a whole number "
        f"of 3,073-byte records (truncated or not the binary version); fetch "
        f"cifar-10-binary.tar.gz again")
    batch.write_bytes(cifar_record(10, 0))  # a label no CIFAR-10 class has
    with pytest.raises(DataError, match=re.escape("labels must lie in 0..9, found 10..10")):
        read_cifar10(tmp_path)
    batch.unlink()
    with pytest.raises(DataError, match=re.escape("lacks data_batch_3.bin")):
        read_cifar10(tmp_path)
    not_tar = tmp_path / "cifar.tar.gz"
    not_tar.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="is not a tar archive"):
        read_cifar10(not_tar)


def test_a_crafted_cifar10_tarball_writes_nothing_outside(tmp_path):
    tarball = tmp_path / "evil.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        member = tarfile.TarInfo("../escaped.bin")
        member.size = 3
        archive.addfile(member, io.BytesIO(b"abc"))
    with pytest.raises(DataError):
        read_cifar10(tarball)
    assert not (tmp_path.parent / "escaped.bin").exists()


# -- SVHN -----------------------------------------------------------------------------------


def svhn_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # SVHN's own layout
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, 10 is the digit 0
    return x, y


def test_svhn_mat_files_become_nchw_images_with_digit_labels(tmp_path):
    x, y = svhn_arrays(12, 0)
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    xt, yt = svhn_arrays(4, 1)
    savemat(tmp_path / "test_32x32.mat", {"X": xt, "y": yt})
    data = read_svhn(tmp_path)
    assert data.x_train.shape == (12, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.y_train.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert torch.equal(data.x_train[7, 2], torch.from_numpy(x[:, :, 2, 7]))
    assert torch.equal(data.x_test[3], torch.from_numpy(xt[..., 3].transpose(2, 0, 1).copy()))


def test_a_truncated_or_wrong_svhn_file_is_one_line(tmp_path):
    x, y = svhn_arrays(12, 0)
    path = tmp_path / "train_32x32.mat"
    savemat(path, {"X": x, "y": y})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    with pytest.raises(DataError) as error:
        read_svhn(tmp_path)
    assert one_line(error).startswith(f"SVHN file {path}: not a readable MATLAB file (")
    savemat(path, {"X": x})
    with pytest.raises(DataError, match="no X and y arrays"):
        read_svhn(tmp_path)
    savemat(path, {"X": x[:, :, :1], "y": y})
    with pytest.raises(DataError, match=r"expected uint8 \(32, 32, 3, N\)"):
        read_svhn(tmp_path)
    savemat(path, {"X": x, "y": y[:5]})
    with pytest.raises(DataError, match="5 labels for 12 images"):
        read_svhn(tmp_path)
    savemat(path, {"X": x, "y": y * 0})
    with pytest.raises(DataError, match=r"labels must lie in 1..10"):
        read_svhn(tmp_path)


# -- npz ------------------------------------------------------------------------------------


def test_npz_arrays_in_any_layout_give_the_same_images(tmp_path):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, size=(20, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(20) % 4
    layouts = {"nchw": nchw, "nhwc": nchw.transpose(0, 2, 3, 1)}
    for name, x in layouts.items():
        np.savez(tmp_path / f"{name}.npz", x_train=x, y_train=labels, x_test=x[:6],
                 y_test=labels[:6])
        data = read_npz(tmp_path / f"{name}.npz")
        assert torch.equal(data.x_train, torch.from_numpy(nchw)), name
        assert data.num_classes == 4 and data.y_test.tolist() == [0, 1, 2, 3, 0, 1]
    gray = nchw[:, 0]
    np.savez(tmp_path / "gray.npz", x_train=gray, y_train=labels, x_test=gray, y_test=labels)
    assert read_npz(tmp_path / "gray.npz").x_train.shape == (20, 1, 8, 8)


def test_a_bad_npz_is_one_line(tmp_path):
    x = np.zeros((10, 1, 8, 8), dtype=np.uint8)
    y = np.arange(10) % 2
    path = tmp_path / "d.npz"
    cases = [
        ({"x_train": x, "y_train": y, "x_test": x}, "missing y_test"),
        ({"x_train": x.astype(np.float32), "y_train": y, "x_test": x, "y_test": y},
         "images must be uint8"),
        ({"x_train": x, "y_train": y[:7], "x_test": x, "y_test": y},
         "7 labels in y_train for 10 images"),
        ({"x_train": x, "y_train": y, "x_test": np.zeros((10, 1, 9, 8), np.uint8),
          "y_test": y}, "train images are (1, 8, 8)"),
        ({"x_train": x, "y_train": y, "x_test": x, "y_test": y + 5},
         "y_test (classes of y_train): labels must lie in 0..1"),
        ({"x_train": np.zeros((10, 5, 8, 8), np.uint8), "y_train": y, "x_test": x,
          "y_test": y}, "expected (N, H, W), NHWC or NCHW"),
        ({"x_train": x, "y_train": y.astype(np.float64), "x_test": x, "y_test": y},
         "y_train must be integer class labels"),
    ]
    for arrays, message in cases:
        np.savez(path, **arrays)
        with pytest.raises(DataError) as error:
            read_npz(path)
        assert message in one_line(error), (message, str(error.value))
    # Objects would need unpickling: refused, never loaded.
    np.savez(path, x_train=np.array([object()], dtype=object), y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match=re.escape("not a readable .npz of plain arrays")):
        read_npz(path)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=re.escape("not a readable .npz")):
        read_npz(path)
    with pytest.raises(DataError, match="does not exist"):
        read_npz(tmp_path / "absent.npz")


# -- folder ---------------------------------------------------------------------------------


def write_png(path: Path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image).numpy().tobytes())


def image_folder(root: Path, size: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    made = {}
    for split, count in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(count):
                image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
                write_png(root / split / cls / f"{i}.png", image)
                made[f"{split}/{cls}/{i}"] = image
    for i in range(4):
        image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
        write_png(root / "unlabeled" / f"u{i}.png", image)
        made[f"unlabeled/{i}"] = image
    return made


def test_an_image_folder_is_decoded_once_into_a_cache_keyed_by_its_content(tmp_path):
    root, cache = tmp_path / "images", tmp_path / "cache"
    made = image_folder(root)
    data = read_folder(root, cache)
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    assert data.x_train.shape == (6, 3, 8, 8) and data.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x_test.shape == (4, 3, 8, 8) and data.y_test.tolist() == [0, 0, 1, 1]
    assert torch.equal(data.x_train[4], made["train/dog/1"])  # PNG is lossless
    assert data.unlabeled is not None and data.unlabeled.shape == (4, 3, 8, 8)
    (cached,) = cache.glob("folder-*.npz")
    stamp = cached.stat().st_mtime_ns
    again = read_folder(root, cache)
    assert torch.equal(again.x_train, data.x_train) and cached.stat().st_mtime_ns == stamp
    write_png(root / "train" / "cat" / "0.png", torch.zeros(3, 8, 8, dtype=torch.uint8))
    changed = read_folder(root, cache)
    assert len(list(cache.glob("folder-*.npz"))) == 2  # a changed image: decoded again
    assert int(changed.x_train[0].sum()) == 0


def test_a_bad_image_folder_is_one_line(tmp_path):
    root, cache = tmp_path / "images", tmp_path / "cache"
    image_folder(root)
    bad = root / "train" / "dog" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError) as error:
        read_folder(root, cache)
    assert one_line(error).startswith(f"folder dataset: image {bad} cannot be decoded (")
    bad.unlink()
    write_png(root / "test" / "bird" / "0.png", torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match="test/ has classes that train/ lacks: bird"):
        read_folder(root, cache)
    (root / "test" / "bird" / "0.png").unlink()
    (root / "test" / "bird").rmdir()
    write_png(root / "train" / "cat" / "big.png", torch.zeros(3, 9, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match="every image needs one size"):
        read_folder(root, cache)
    with pytest.raises(DataError, match="no train/ folder"):
        read_folder(tmp_path / "empty", cache)
    assert not any(cache.glob("*.partial.npz"))  # nothing half written
