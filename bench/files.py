"""Output files: folders checked before any work, files written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sslbench.bench.errors import UserError


def check_writable(folder: Path) -> None:
    """Create `folder` or raise a one-line UserError saying why not and what to do."""
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"cannot create output folder {folder}: {blocking} is a file, not a "
                        f"folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output folder {folder}: {error.strerror}; "
                        f"choose another --out") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"output folder {folder} is not writable; choose another --out")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".part", delete=False) as tmp:
        try:
            tmp.write(text)
            tmp.flush()
        except OSError:
            tmp.close()
            os.unlink(tmp.name)  # a failed write (a full disk) leaves no .part behind
            raise
    # A temporary file is private (0600); the result gets the usual mode under the umask.
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp.name, 0o666 & ~umask)
        os.replace(tmp.name, path)
    except OSError:
        os.unlink(tmp.name)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1))
