"""Small bodies (manifests, tag lists, token replies, error answers) read to their end under a byte cap.

aiohttp's `StreamReader.read(n)` returns what has arrived so far, not the whole body: a body that crosses a
WAN in TCP segments, in TLS records or from a server that flushes as it writes comes back cut. Reading
stops only at the end of the body; a body over the cap, or shorter than its Content-Length, is an error,
never a truncated success.
"""
from __future__ import annotations

from typing import Protocol

READ_SIZE = 64 * 1024


class BodyError(Exception):
    """A body over its cap or cut short; the message says which, with the byte counts."""


class BodyTooLarge(BodyError):
    pass


class BodyCutShort(BodyError):
    pass


class Readable(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def read_body(stream: Readable, cap: int, content_length: int | None = None) -> bytes:
    """The whole body of `stream`, at most `cap` bytes; `content_length` is what the headers promised."""
    if content_length is not None and content_length > cap:
        raise BodyTooLarge(f"body of {content_length} bytes is over the {cap}-byte cap")
    parts, size = [], 0
    while chunk := await stream.read(READ_SIZE):
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(f"body is over the {cap}-byte cap")
        parts.append(chunk)
    if content_length is not None and size != content_length:
        raise BodyCutShort(f"body cut short: {size} of {content_length} bytes arrived")
    return b"".join(parts)
