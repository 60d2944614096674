"""Optuna's journal file, with writes that never leave a torn line behind and a reader that
survives a bad line.

Optuna's reader refuses a line that is not valid JSON unless it is the last one, so one bad
line (a torn write that happened to end in a newline, a filesystem that zero-filled a tail,
an edit by hand) made every later command fail and its finished runs unreadable. Here:
- the reader skips any line that is not a JSON operation, wherever it is, says which line
  it skipped (once per process), and numbers the operations it keeps, so a later read never
  replays one twice;
- an append that fails is cut back to the size the file had before it, under the journal's
  own lock, and an append never follows a torn tail (bytes after the last newline, left by
  a writer that died mid-write, are cut first, under the same lock);
- opened read-only (`report`, `export`, `plan`), the file is never written, not even to
  repair it; a file whose first line is not a journal operation is refused, untouched.
Nothing that was committed (a whole line, fsynced) is ever removed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Generator
from typing import Any

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file

from sslbench.bench.errors import StoreError
from sslbench.bench.messages import say

CHUNK = 1 << 16  # bytes read back at a time while looking for the last whole line


def whole_lines(data: bytes) -> bytes:
    """A journal's bytes up to and including its last newline: a torn tail (a writer that
    died mid-line) dropped. Every reader and copier of a journal cuts it here."""
    return data[:data.rfind(b"\n") + 1]


def is_operation(line: bytes) -> bool:
    """A journal line Optuna can replay: a JSON object with an op_code."""
    try:
        log = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return False
    return isinstance(log, dict) and "op_code" in log


def check_is_journal(path: str) -> None:
    """A StoreError, before anything reads or writes it, for a file whose first line is not
    a journal operation (a notes file passed as journal:///notes.txt)."""
    with open(path, "rb") as handle:
        first = handle.readline(1 << 20)
    if first.strip() and not is_operation(first):
        raise StoreError(f"{path} is not an Optuna journal (its first line is not a journal "
                         f"operation); it was left as it is: pass the --storage URL of a run "
                         f"store")


class SafeJournalFileBackend(JournalFileBackend):
    def __init__(self, file_path: str, read_only: bool = False,
                 warn: Callable[[str], None] = say) -> None:
        super().__init__(file_path)
        self.read_only, self.warn = read_only, warn
        # Byte offset and line index of each kept operation's number: where read_logs
        # resumes, so that a skipped line never shifts the numbering Optuna replays by.
        self._kept_at: dict[int, tuple[int, int]] = {0: (0, 0)}
        self._warned: set[int] = set()  # line indexes already reported as skipped
        if not read_only:
            self.repair()

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        known = max(n for n in self._kept_at if n <= log_number_from)
        number, (offset, index) = known, self._kept_at[known]
        with open(self._file_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size  # lines appended meanwhile wait
            handle.seek(offset)
            for line in handle:
                if offset + len(line) > size or not line.endswith(b"\n"):
                    break  # a tail still being written, or torn: not an operation yet
                offset, index = offset + len(line), index + 1
                if not is_operation(line):
                    if index not in self._warned:
                        self._warned.add(index)
                        self.warn(f"journal {self._file_path}: line {index} skipped, not a "
                                  f"journal operation ({len(line)} bytes); every other line "
                                  f"is kept (`sslbench store check` writes a repaired copy)")
                    continue
                if number >= log_number_from:
                    yield json.loads(line)
                number += 1
                self._kept_at[number] = (offset, index)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self.read_only:
            raise StoreError(f"journal {self._file_path} was opened read-only")
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock):
            self._cut_torn_tail()  # never glue an operation onto a dead writer's bytes
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
            return self._cut_torn_tail()

    def _cut_torn_tail(self) -> int:
        """Under the journal's lock: cut the bytes after the last newline (a writer that
        died mid-write; writers hold the lock while they write); the bytes removed."""
        size = os.path.getsize(self._file_path)
        if size == 0 or not self._torn():
            return 0
        with open(self._file_path, "rb+") as handle:
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
