"""Optuna's journal file, with writes that never leave a torn line behind.

Optuna's reader refuses a line that is not valid JSON unless it is the last one, so an
append cut short (a full disk, a killed process) and the next append glued onto it would
make every later command fail. Here an append that fails is cut back to the size the file
had before it, under the journal's own lock; and a file whose last line is torn (a writer
killed mid-write) is cut back to its last whole line when the store is opened. Nothing that
was committed (a whole line, fsynced) is ever removed.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file

CHUNK = 1 << 16  # bytes read back at a time while looking for the last whole line


class SafeJournalFileBackend(JournalFileBackend):
    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self.repair()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        import json

        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock):
            before = os.path.getsize(self._file_path)
            try:
                with open(self._file_path, "ab") as handle:
                    handle.write(text.encode("utf-8"))
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError:
                with contextlib.suppress(OSError):  # truncating frees space: it works when full
                    os.truncate(self._file_path, before)
                raise

    def _torn(self) -> bool:
        size = os.path.getsize(self._file_path)
        if size == 0:
            return False
        with open(self._file_path, "rb") as handle:
            handle.seek(size - 1)
            return handle.read(1) != b"\n"

    def repair(self) -> int:
        """Cut a torn last line (one without its newline); returns the bytes removed.

        A whole file is left alone without taking the lock, so a read-only store still
        opens for reading."""
        if not self._torn():
            return 0
        with get_lock_file(self._lock):
            size = os.path.getsize(self._file_path)
            if size == 0:
                return 0
            with open(self._file_path, "rb+") as handle:
                handle.seek(size - 1)
                if handle.read(1) == b"\n":
                    return 0
                end = size
                while end > 0:
                    start = max(0, end - CHUNK)
                    handle.seek(start)
                    found = handle.read(end - start).rfind(b"\n")
                    if found >= 0:
                        keep = start + found + 1
                        break
                    end = start
                else:
                    keep = 0
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
            return size - keep
