"""The processes' log files: written by the supervisor from their output pipes, rotated by size, and never the
reason a process stops.

mitmproxy exits at the first log line it cannot write (its TermLogHandler calls sys.exit on any OSError), so its
output goes through a pipe that this side drains whatever happens to the file: a line that cannot be written (a
full disk) is dropped and counted, and writing resumes when space comes back.
"""
from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 64 * 1024 * 1024  # a log file is rotated past this size...
KEPT = 4  # ...into .1 (newest) to .4: a log folder holds at most 5 x 64 MiB per process


class LogFile:
    """Appends lines to `path`, rotating it past `max_bytes`; counts the lines it had to drop."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, kept: int = KEPT):
        self.path, self.max_bytes, self.kept = path, max_bytes, kept
        self.dropped_lines = 0
        self.last_error = ""
        self._lock = threading.Lock()  # one writer thread per process, but `dropped` is read by another
        self._file: BinaryIO | None = None
        self._size = 0
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, line: bytes) -> None:
        with self._lock:
            try:
                if self._file is not None and self._size + len(line) > self.max_bytes:
                    self._rotate(self._file)
                file = self._file if self._file is not None else self._open()
                written = file.write(line)
                if written < len(line):  # a full disk took part of it: cut it back, a truncate needs no space
                    os.ftruncate(file.fileno(), self._size)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self._size += written
            except OSError as e:
                self.dropped_lines += 1
                self.last_error = f"{self.path}: {e.strerror or e}"
                self._size = self._end()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open(self) -> BinaryIO:
        self._file = file = open(self.path, "ab", buffering=0)  # unbuffered: a line is on its way when written
        self._size = self._end()
        return file

    def _end(self) -> int:
        try:
            return os.fstat(self._file.fileno()).st_size if self._file else 0
        except OSError:
            return 0

    def _rotate(self, file: BinaryIO) -> None:
        """Closes `file`, the open log, then mitmproxy.log -> .1 -> .2 ...; the oldest goes. A rename needs no
        space: it works on a full disk."""
        self._file = None
        file.close()
        for n in range(self.kept, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n}"))


def copy_lines(source: BinaryIO, log: LogFile, secrets: tuple[str, ...] = ()) -> None:
    """Drain a process's output into `log` until it ends, with every string in `secrets` replaced: a full pipe
    would stop the process, so nothing here may stop reading."""
    with source:
        for line in source:
            for secret in secrets:
                line = line.replace(secret.encode(), b"<redacted by artifactory-mirror>")
            try:
                log.write(line)
            except Exception:  # noqa: BLE001 - a dead copier would leave the process blocked on a full pipe
                log.dropped_lines += 1
    log.close()
