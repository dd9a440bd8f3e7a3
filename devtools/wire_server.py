"""A server in front of the test upstream that delivers bodies the way real servers and networks do.

Our own front writes each body at once over loopback; real servers do not. This one forwards every request
to the front and writes the answer back as a test asks (`POST /_wire/behave?...`, see Behaviour): bodies in
small pieces with pauses, chunked, or held part-way until the test releases them (`POST /_wire/release`),
so that a test's "mid-transfer" is a state it controls, not a window this machine's speed opens. And the
quirks of real servers: stray bytes after a body on a keep-alive connection, 429 with Retry-After, a blob
GET redirected to a signed URL on another host (`--storage-listen`: a stand-in for cloud storage, which
counts requests that carried an Authorization header: none may), a HEAD with a wrong size, TLS.
`GET /_wire/stats` says how many answers are open and held, and what the storage saw.

    python wire_server.py --listen 127.0.0.1:PORT --target http://127.0.0.1:FRONT \
        [--storage-listen 127.0.0.2:PORT] [--tls-cert CERT --tls-key KEY]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
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
    # quirks, for the first `times` matching requests (0: all of them)
    garbage: str = ""  # bytes written after the answer, as if they belonged to the connection's next one
    status: int = 0  # answer this status instead of forwarding (e.g. 429)...
    retry_after: str = ""  # ...with this Retry-After
    head_size: int = -1  # HEAD answers claim this Content-Length
    redirect: bool = False  # blob GETs answer 307 to a signed URL on the storage host
    times: int = 0
    applied: int = 0

    @classmethod
    def from_query(cls, query: dict[str, str]) -> "Behaviour":
        kinds = {f.name: f.type for f in fields(cls)}
        unknown = set(query) - set(kinds) - {"held", "applied"}
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

    def takes_quirk(self, path: str) -> bool:
        """Whether this request gets the quirks (counted against `times`)."""
        if not self.applies(path) or (self.times and self.applied >= self.times):
            return False
        self.applied += 1
        return True

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
    def __init__(self, target: str, public: str, storage: str = ""):
        self.target, self.public = target.rstrip("/"), public  # the front's origin, and ours
        self.storage = storage  # the storage host's origin
        self.signed: dict[str, tuple[str, CIMultiDict]] = {}  # signed URL token -> (path, request headers)
        self.storage_requests = 0
        self.storage_with_authorization = 0
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
                elif target.startswith("/signed/"):
                    if not await self.serve_signed(method, target, headers, writer):
                        return
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
                      "held": self.behaviour.held, "quirks": self.behaviour.applied,
                      "storage_requests": self.storage_requests,
                      "storage_with_authorization": self.storage_with_authorization}
        else:
            status, answer = 404, {"error": "unknown control path"}
        data = json.dumps(answer).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data)
        await writer.drain()

    async def forward(self, method: str, target: str, headers: CIMultiDict, body: bytes,
                      writer: asyncio.StreamWriter, plain: bool = False) -> bool:
        """Forward one request (`plain`: without the behaviour); False when the connection is to close."""
        behaviour = Behaviour() if plain else self.behaviour
        sent_headers = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP | {"host"})
        quirk = behaviour.takes_quirk(target)
        if quirk and (answer := self.quirk_answer(method, target, sent_headers, behaviour)):
            writer.write(answer + behaviour.garbage.encode("latin-1"))
            await writer.drain()
            self.answered += 1
            return headers.get("connection", "").lower() != "close"
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
                          if k.lower() not in HOP_BY_HOP and not (chunked and k.lower() == "content-length")
                          and not (quirk and method == "HEAD" and behaviour.head_size >= 0
                                   and k.lower() == "content-length")]
                if quirk and method == "HEAD" and behaviour.head_size >= 0:
                    lines.append(f"Content-Length: {behaviour.head_size}")
                if chunked:
                    lines.append("Transfer-Encoding: chunked")
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                if method != "HEAD":
                    await self.write_body(up, writer, behaviour if applies else Behaviour(), chunked, hold)
                if quirk and behaviour.garbage:
                    writer.write(behaviour.garbage.encode("latin-1"))
                await writer.drain()
        except aiohttp.ClientError:
            return False
        finally:
            self.open -= 1
            self.answered += 1
        return headers.get("connection", "").lower() != "close"

    def quirk_answer(self, method: str, target: str, headers: CIMultiDict, behaviour: Behaviour) -> bytes | None:
        """An answer written instead of forwarding: a status (429), or a blob's redirect to signed storage."""
        if behaviour.status:
            body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "injected"}]}).encode()
            retry = f"Retry-After: {behaviour.retry_after}\r\n" if behaviour.retry_after else ""
            return (f"HTTP/1.1 {behaviour.status} X\r\nContent-Type: application/json\r\n{retry}"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + \
                (body if method != "HEAD" else b"")
        if behaviour.redirect and method == "GET" and "/blobs/" in target and self.storage:
            token = secrets.token_urlsafe(12)
            self.signed[token] = (target, headers)
            location = f"{self.storage}/signed/{token}?X-Amz-Signature={secrets.token_hex(16)}"
            return f"HTTP/1.1 307 X\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
        return None

    async def serve_signed(self, method: str, target: str, headers: CIMultiDict,
                           writer: asyncio.StreamWriter) -> bool:
        """The storage host: the blob behind a signed URL (fetched from the front with the original request's
        credentials, which the storage itself never needs)."""
        self.storage_requests += 1
        self.storage_with_authorization += "authorization" in headers
        token = target[len("/signed/"):].partition("?")[0]
        original = self.signed.get(token)
        if original is None:
            writer.write(b"HTTP/1.1 403 X\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return True
        path, original_headers = original
        forwarded = CIMultiDict(original_headers)
        if "range" in headers:
            forwarded["Range"] = headers["range"]
        return await self.forward(method, path, forwarded, b"", writer, plain=True)

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
    parser.add_argument("--storage-listen", default="", help="host:port of the signed-URL storage host")
    parser.add_argument("--tls-cert", default="")
    parser.add_argument("--tls-key", default="")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    storage = f"http://{args.storage_listen}" if args.storage_listen else ""
    wire = Wire(args.target, f"{'https' if tls else 'http'}://{args.listen}", storage)
    wire.session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None),
                                         cookie_jar=aiohttp.DummyCookieJar())
    servers = [await asyncio.start_server(wire.serve, host, int(port), limit=MAX_HEAD, ssl=tls)]
    if storage:
        storage_host, _, storage_port = args.storage_listen.rpartition(":")
        servers.append(await asyncio.start_server(wire.serve, storage_host, int(storage_port), limit=MAX_HEAD))
    print(f"wire listening on {args.listen}, forwarding to {args.target}", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main())
