"""A server in front of the test upstream that delivers bodies the way real servers and networks do.

Our own front writes each body at once over loopback; real servers do not. This one forwards every request
to the front and writes the answer back as a test asks (`POST /_wire/behave?...`, see Behaviour): bodies in
small pieces with pauses, chunked, or held part-way until the test releases them (`POST /_wire/release`),
so that a test's "mid-transfer" is a state it controls, not a window this machine's speed opens.
`GET /_wire/stats` says how many answers are open and held.

    python wire_server.py --listen 127.0.0.1:PORT --target http://127.0.0.1:FRONT
"""
from __future__ import annotations

import argparse
import asyncio
import json
import urllib.parse
from dataclasses import dataclass, fields

import aiohttp
from multidict import CIMultiDict

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
MAX_HEAD = 64 * 1024  # the stream's limit: a longer head ends the connection
HEAD_DEADLINE = 30.0


@dataclass
class Behaviour:
    """How answers are written. `target`: all, or some of manifests, blobs, token, tags (comma-separated)."""
    target: str = "all"
    piece: int = 0  # write bodies in pieces of this many bytes (0: as they arrive)
    pause: float = 0.0  # seconds between pieces
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length
    hold_after: int = -1  # stop after this many body bytes until released (-1: never)
    hold_times: int = 0  # hold only the first K matching answers (0: all)
    held: int = 0

    @classmethod
    def from_query(cls, query: dict[str, str]) -> "Behaviour":
        kinds = {f.name: f.type for f in fields(cls)}
        unknown = set(query) - set(kinds) - {"held"}
        if unknown:
            raise ValueError(f"unknown behaviour {sorted(unknown)}; known: {sorted(kinds)}")
        parsed = {}
        for key, text in query.items():
            kind = kinds[key]
            parsed[key] = text in ("1", "true") if kind == "bool" else float(text) if kind == "float" else \
                int(text) if kind == "int" else text
        return cls(**parsed)

    def applies(self, path: str) -> bool:
        if self.target == "all":
            return True
        marker = {"manifests": "/manifests/", "blobs": "/blobs/", "token": "/v2/token", "tags": "/tags/"}
        return any(marker.get(t, "\0") in path for t in self.target.split(","))

    def takes_hold(self, path: str, length: int | None) -> bool:
        """Whether this answer stops part-way: only a body longer than `hold_after` (a shorter one would be
        whole before the hold)."""
        if self.hold_after < 0 or not self.applies(path) or (self.hold_times and self.held >= self.hold_times):
            return False
        if length is None or length <= self.hold_after:
            return False
        self.held += 1
        return True


class Wire:
    def __init__(self, target: str, public: str):
        self.target, self.public = target.rstrip("/"), public  # the front's origin, and ours
        self.behaviour = Behaviour()
        self.release = asyncio.Event()
        self.open = 0  # answers being written
        self.holding = 0  # of which held, waiting for a release
        self.answered = 0
        self.session: aiohttp.ClientSession | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_DEADLINE)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                method, target, headers = parse_head(head)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if target.startswith("/_wire/"):
                    await self.control(method, target, writer)
                elif not await self.forward(method, target, headers, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def control(self, method: str, target: str, writer: asyncio.StreamWriter) -> None:
        path, _, query = target.partition("?")
        status, answer = 200, {}
        if path == "/_wire/behave" and method == "POST":
            try:
                self.behaviour = Behaviour.from_query(dict(urllib.parse.parse_qsl(query)))
                self.release.set()  # what the last behaviour held goes on
                self.release = asyncio.Event()
            except (ValueError, TypeError) as e:
                status, answer = 400, {"error": str(e)}
        elif path == "/_wire/release" and method == "POST":
            self.release.set()
        elif path == "/_wire/stats":
            answer = {"open": self.open, "holding": self.holding, "answered": self.answered,
                      "held": self.behaviour.held}
        else:
            status, answer = 404, {"error": "unknown control path"}
        data = json.dumps(answer).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data)
        await writer.drain()

    async def forward(self, method: str, target: str, headers: CIMultiDict, body: bytes,
                      writer: asyncio.StreamWriter) -> bool:
        """Forward one request; False when the connection is to close."""
        behaviour = self.behaviour
        sent_headers = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP | {"host"})
        self.open += 1
        try:
            async with self.session.request(method, self.target + target, headers=sent_headers, data=body or None,
                                            allow_redirects=False) as up:
                applies = behaviour.applies(target)
                # an answer of unknown length (the front streams large ones) is relayed chunked too
                chunked = method != "HEAD" and up.status not in (204, 304) and (
                    (applies and behaviour.chunked) or "Content-Length" not in up.headers)
                hold = method != "HEAD" and behaviour.takes_hold(target, up.content_length)
                lines = [f"HTTP/1.1 {up.status} {up.reason or 'X'}"]
                # the token realm and redirects name the front: a client follows them through here, as it would
                # through a real reverse proxy configured with its public address
                lines += [f"{k}: {v.replace(self.target, self.public)}" for k, v in up.headers.items()
                          if k.lower() not in HOP_BY_HOP and not (chunked and k.lower() == "content-length")]
                if chunked:
                    lines.append("Transfer-Encoding: chunked")
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                if method != "HEAD":
                    await self.write_body(up, writer, behaviour if applies else Behaviour(), chunked, hold)
                await writer.drain()
        except aiohttp.ClientError:
            return False
        finally:
            self.open -= 1
            self.answered += 1
        return headers.get("connection", "").lower() != "close"

    async def write_body(self, up: aiohttp.ClientResponse, writer: asyncio.StreamWriter, behaviour: Behaviour,
                         chunked: bool, hold: bool) -> None:
        written = 0
        async for data in up.content.iter_any():
            for piece in pieces(data, behaviour.piece):
                if hold and written + len(piece) > behaviour.hold_after:
                    first = piece[:behaviour.hold_after - written]
                    await self.write(writer, first, chunked)
                    written += len(first)
                    piece = piece[len(first):]
                    await self.hold()
                    hold = False
                await self.write(writer, piece, chunked)
                written += len(piece)
                if behaviour.pause:
                    await asyncio.sleep(behaviour.pause)
        if chunked:
            writer.write(b"0\r\n\r\n")

    async def hold(self) -> None:
        self.holding += 1
        try:
            await self.release.wait()
        finally:
            self.holding -= 1

    @staticmethod
    async def write(writer: asyncio.StreamWriter, data: bytes, chunked: bool) -> None:
        if not data:
            return
        writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        await writer.drain()


def parse_head(head: bytes) -> tuple[str, str, CIMultiDict]:
    """Request line and headers, every line kept (the registry sends several Accept lines)."""
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers: CIMultiDict = CIMultiDict()
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.add(name.strip(), value.strip())
    return method, target, headers


def pieces(data: bytes, size: int):
    if size <= 0:
        yield data
        return
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--target", required=True, help="the upstream front's URL")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    wire = Wire(args.target, f"http://{args.listen}")
    wire.session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None),
                                         cookie_jar=aiohttp.DummyCookieJar())
    server = await asyncio.start_server(wire.serve, host, int(port), limit=MAX_HEAD)
    print(f"wire listening on {args.listen}, forwarding to {args.target}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
