"""A loopback endpoint inside the addon's process that streams blobs from the upstream.

mitmproxy routes blob GETs here (so the flow still shows in mitmweb) and streams the answer on; this
endpoint owns the upstream fetch: credentials, redirects without them, and a stall timeout. Bytes pass
through in chunks, never whole, so memory stays flat whatever the blob's size.
"""
from __future__ import annotations

import logging
import secrets
import time

import aiohttp
from aiohttp import web

from .requests import Kind, RegistryRequest, classify
from .responses import CACHE_HEADER, error_body, passed_headers, upstream_status_error
from .upstream import Upstream, UpstreamError
from .upstream_auth import AuthError

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
KEY_HEADER = "X-Mirror-Blob-Key"  # only the addon, which knows the key, may use this endpoint
AUTH_HEADER = "X-Mirror-Upstream-Auth"  # the credential scheme used, for the flow's redaction marker


class BlobServer:
    def __init__(self, upstream: Upstream):
        self.upstream = upstream
        self.key = secrets.token_urlsafe(16)
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1") -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not secrets.compare_digest(request.headers.get(KEY_HEADER, ""), self.key):
            return _error(403, "DENIED", "this endpoint serves only the mirror's own addon")
        req = classify("GET", request.path_qs)
        if not isinstance(req, RegistryRequest) or req.kind is not Kind.BLOB:
            return _error(400, "BLOB_UNKNOWN", "only blob GETs are served here")
        return await self._stream(request, req)

    async def _stream(self, request: web.Request, req: RegistryRequest) -> web.StreamResponse:
        started, sent = time.monotonic(), 0
        what = f"blob {req.name}@{req.reference}"
        try:
            async with self.upstream.open("GET", req, request.headers) as (up, scheme):
                if up.status not in (200, 206):
                    body = await up.content.read(64 * 1024)
                    mapped = upstream_status_error(up.status, what)
                    log.info("upstream GET %s -> %d (%.0f ms)", what, up.status, _ms(started))
                    if mapped:
                        return _error(*mapped)
                    return web.Response(status=up.status, body=body, headers=passed_headers(up.headers))
                out = web.StreamResponse(status=up.status, headers={
                    **passed_headers(up.headers), CACHE_HEADER: "MISS", AUTH_HEADER: scheme})
                await out.prepare(request)
                async for chunk in up.content.iter_chunked(CHUNK):
                    await out.write(chunk)
                    sent += len(chunk)
                await out.write_eof()
                log.info("upstream GET %s -> %d %d bytes (%.0f ms)", what, up.status, sent, _ms(started))
                return out
        except (UpstreamError, AuthError) as e:
            log.warning("upstream GET %s failed after %d bytes: %s", what, sent, e)
            if sent:
                raise  # headers are out: dropping the connection tells the client the body is short
            return _error(503, "UNAVAILABLE", str(e))
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("upstream GET %s interrupted after %d bytes: %s", what, sent, type(e).__name__)
            raise


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(code, message), content_type="application/json")


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
