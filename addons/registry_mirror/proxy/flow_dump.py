"""`artifactory-mirror up --dump FILE`: flows written as mitmdump's `-w` writes them, except that a write that fails
(a full disk) drops that flow instead of stopping mitmproxy, whose own writer exits on purpose.

Listed after RegistryMirror in the entry script: by the time a flow is written its credentials are redacted.
A flow is written whole or not at all: a record cut short by a full disk is truncated away, so the file always
reads back.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import BinaryIO

from mitmproxy import ctx, exceptions, http
from mitmproxy.io import FlowWriter

log = logging.getLogger(__name__)


class FlowDump:
    def __init__(self) -> None:
        self.path: Path | None = None
        self.written = 0
        self.dropped = 0  # flows that could not be written
        self.last_error = ""
        self._file: BinaryIO | None = None
        self._active: set[http.HTTPFlow] = set()  # flows in flight, written as they are if mitmproxy stops

    def load(self, loader) -> None:
        loader.add_option("mirror_dump", str, "", "Write flows to this file (+FILE appends), as -w would; a "
                                                  "failed write drops that flow and the proxy goes on.")

    def configure(self, updated: set[str]) -> None:
        if "mirror_dump" not in updated:
            return
        self.done()
        spec = ctx.options.mirror_dump
        if not spec:
            return
        self.path = Path(spec[1:] if spec.startswith("+") else spec).expanduser()
        try:  # readable by its owner only: flows hold every request's URL and headers
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if spec.startswith("+") else os.O_TRUNC),
                         0o600)
            self._file = os.fdopen(fd, "ab" if spec.startswith("+") else "wb")
        except OSError as e:
            raise exceptions.OptionsError(f"mirror_dump {spec}: cannot open it for writing: {e.strerror}") from e

    def request(self, flow: http.HTTPFlow) -> None:
        if self._file is not None:
            self._active.add(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._save(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._save(flow)

    def done(self) -> None:
        if self._file is None:
            return
        for flow in list(self._active):
            self._save(flow)
        self._file.close()
        self._file = None

    def _save(self, flow: http.HTTPFlow) -> None:
        self._active.discard(flow)
        file, path = self._file, self.path
        if file is None or path is None:  # no dump, or one that could not be reopened
            return
        record = io.BytesIO()
        FlowWriter(record).add(flow)
        end = file.tell()
        try:
            file.write(record.getvalue())
            file.flush()
        except OSError as e:
            self.dropped += 1
            self.last_error = f"{path}: {e.strerror or e}"
            log.warning("flow dump: dropped a flow (%s)", self.last_error)
            self._file = _truncated(file, path, end)
            return
        self.written += 1

    def snapshot(self) -> dict:
        return {"path": str(self.path or ""), "written": self.written, "dropped": self.dropped,
                "last_error": self.last_error}


def _truncated(file: BinaryIO, path: Path, end: int) -> BinaryIO | None:
    """`file` reopened with the record a failed write left half in it cut away at `end` (its buffered rest is
    discarded with it); None when it cannot be reopened, and no more flows are written."""
    try:
        file.close()
    except OSError:
        pass  # the failed flush again: the bytes it could not write are gone, as intended
    try:
        reopened = open(path, "r+b")
        reopened.truncate(end)
        reopened.seek(end)
        return reopened
    except OSError as e:
        log.warning("flow dump: cannot reopen %s (%s); no more flows are written", path, e.strerror)
        return None
