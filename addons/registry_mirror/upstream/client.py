"""The HTTP client toward the upstream: credentials, one retry on 401, redirects, bounded timeouts; retries
of flaps and 429s are upstream/retry.py's.

Only GET and HEAD ever leave here. Redirects to another host (Artifactory's signed cloud-storage URLs) are
followed without the upstream's `Authorization`.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict

from registry_mirror.bodies import BodyError, read_body
from registry_mirror.config.load import UpstreamConfig
from registry_mirror.oci.registry_requests import RegistryRequest, upstream_path
from registry_mirror.redact import error_text, url_for_logs
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.auth import AuthError, UpstreamAuth
from registry_mirror.upstream.retry import Retrying, UpstreamError

log = logging.getLogger(__name__)

MAX_SMALL_BODY = 8 * 1024 * 1024  # manifests and error bodies; Distribution caps manifests at 4 MiB
MAX_TOKEN_BODY = 64 * 1024
MAX_REDIRECTS = 3
# request headers worth passing on from the stock registry; everything else (Authorization included) stays
FORWARDED_REQUEST_HEADERS = ("Accept", "Range", "If-None-Match", "If-Range")


@dataclass
class SmallResponse:
    status: int
    headers: CIMultiDict
    body: bytes
    authorized: str  # the scheme of the credential that was sent ("Basic", "Bearer" or "")


class Upstream:
    """`sleep` and `clock`: for the retries' waits (upstream_retry.Retrying)."""

    def __init__(self, cfg: UpstreamConfig, stats: Stats | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, clock: Callable[[], float] = time.time,
                 session: aiohttp.ClientSession | None = None):
        """`session`: connections shared with others to the same origin (`upstream_session(cfg)`), left open by
        `close`; by default its own."""
        self.cfg = cfg
        self.stats = stats or Stats()
        self._retrying = Retrying(cfg.retries, sleep, clock)
        self.auth = UpstreamAuth(cfg, self._fetch_token)
        self._session, self._own_session = session, session is None
        self._origin = urlsplit(cfg.origin)

    async def start(self) -> None:
        if self._session is None:
            self._session = upstream_session(self.cfg)

    async def close(self) -> None:
        if self._session and self._own_session:
            await self._session.close()

    @property
    def _started_session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream.start() was not awaited"
        return self._session

    async def probe(self) -> int | None:
        """The status of an anonymous GET of the upstream's /v2/ (None: unreachable); for the health probe."""
        timeout = aiohttp.ClientTimeout(total=self.cfg.connect_timeout + 2, connect=self.cfg.connect_timeout)
        try:
            async with self._started_session.get(f"{self.cfg.origin}{self.cfg.prefix}/v2/", timeout=timeout,
                                         allow_redirects=False) as resp:
                return resp.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    def url_for(self, request: RegistryRequest) -> str:
        return self.cfg.origin + upstream_path(self.cfg.prefix, self._as_upstream(request))

    def _as_upstream(self, request: RegistryRequest) -> RegistryRequest:
        """The request under the name the upstream knows (route prefix stripped, library/ added or removed)."""
        name = self.cfg.upstream_name(request.name)
        return request if name == request.name else replace(request, name=name)

    async def fetch_small(self, method: str, request: RegistryRequest, headers: Mapping[str, str]) -> SmallResponse:
        """A bounded exchange (manifest, tags, HEAD of a blob) read whole, within request_timeout."""
        limits = aiohttp.ClientTimeout(total=self.cfg.request_timeout, connect=self.cfg.connect_timeout)
        async with self.open(method, request, headers, limits) as (resp, authorized):
            body = b""
            if method != "HEAD":
                what = f"{method} {request.kind.value} {request.name}:{request.reference}"
                try:
                    body = await self._read_small(resp, MAX_SMALL_BODY)
                except TimeoutError as e:
                    raise UpstreamError(f"{what}: body timed out", timed_out=True) from e
                except (aiohttp.ClientError, OSError, BodyError) as e:
                    raise UpstreamError(f"{what}: {error_text(e)}") from e
            return SmallResponse(resp.status, CIMultiDict(resp.headers), body, authorized)

    @asynccontextmanager
    async def open(self, method: str, request: RegistryRequest, headers: Mapping[str, str],
                   limits: aiohttp.ClientTimeout | None = None) -> AsyncIterator[tuple[aiohttp.ClientResponse, str]]:
        """Yield (response, credential scheme) with its body unread; blobs stream from it (their caller holds
        one of the route's `blob_slots`). `limits`: the client's timeouts (default: a stall, not a total, bounds
        a blob)."""
        if limits is None:
            limits = aiohttp.ClientTimeout(total=None, connect=self.cfg.connect_timeout,
                                            sock_read=self.cfg.blob_stall_timeout)
        assert self._session is not None, "Upstream.start() was not awaited"
        base = {k: v for k in FORWARDED_REQUEST_HEADERS if (v := headers.get(k))}
        asked = self._as_upstream(request)
        url, name = self.cfg.origin + upstream_path(self.cfg.prefix, asked), asked.name
        for attempt in range(2):
            sent = await self.auth.authorization(name)
            resp = await self._send(method, url, base, sent, limits)
            if resp.status != 401 or attempt == 1:
                break
            try:
                retry = await self.auth.on_unauthorized(
                    name, resp.headers.getall("WWW-Authenticate", []), sent)
            except AuthError:
                resp.release()
                raise
            if not retry:
                break
            resp.release()
        try:
            yield resp, (sent or "").partition(" ")[0]
        finally:
            resp.release()

    async def _send(self, method: str, url: str, headers: dict[str, str], authorization: str | None,
                    limits: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        for _hop in range(MAX_REDIRECTS + 1):
            h = dict(headers)
            if authorization and self._same_origin(url):
                h["Authorization"] = authorization
            resp = await self._retrying.request(self._started_session, method, url, h, limits)
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                resp.release()
                url = _redirect_target(url, resp.headers["Location"])
                continue
            return resp
        raise UpstreamError(f"upstream redirected more than {MAX_REDIRECTS} times for {url_for_logs(url)}")

    async def _read_small(self, resp: aiohttp.ClientResponse, cap: int) -> bytes:
        """The whole body under `cap`; one over it or cut short is counted (the stats' integrity) and raised."""
        try:
            return await read_body(resp.content, cap, resp.content_length)
        except (BodyError, aiohttp.ClientPayloadError):  # aiohttp sees a body shorter than its length first
            self.stats.body_cut_short()
            raise

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.hostname, parts.port) == (
            self._origin.scheme, self._origin.hostname, self._origin.port)

    async def _fetch_token(self, realm: str, params: dict[str, str], authorization: str | None) -> tuple[int, bytes]:
        started = time.monotonic()
        headers = {"Authorization": authorization} if authorization else {}
        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout, connect=self.cfg.connect_timeout)
        try:
            async with self._started_session.get(realm, params=params, headers=headers, timeout=timeout,
                                         allow_redirects=False) as resp:
                body = await self._read_small(resp, MAX_TOKEN_BODY)
                self.stats.upstream("token", "GET", params.get("scope", ""), resp.status, len(body),
                                    time.monotonic() - started, route=self.cfg.label)
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError, OSError, BodyError) as e:
            self.stats.upstream("token", "GET", params.get("scope", ""), "error", 0, time.monotonic() - started,
                                "error", route=self.cfg.label)
            raise AuthError(f"token endpoint {url_for_logs(realm)}: {error_text(e)}", upstream_failure=True) from e


def upstream_session(cfg: UpstreamConfig) -> aiohttp.ClientSession:
    """An HTTP client for the upstream's origin: its TLS (CA, verification, client certificate), no cookies (nothing
    carries from one request's credential to another's), bodies as sent."""
    ssl_ctx = ssl.create_default_context(cafile=cfg.ca_file)
    if not cfg.tls_verify:
        ssl_ctx.check_hostname, ssl_ctx.verify_mode = False, ssl.CERT_NONE
    if cfg.client_cert and cfg.client_key:  # an upstream that requires mutual TLS
        ssl_ctx.load_cert_chain(cfg.client_cert, cfg.client_key)
    # No pool limit: aiohttp's `connect` timeout includes the wait for a pooled connection, and a timeout is
    # taken for a hung upstream. Small exchanges (and the health probe) never queue; blob GETs wait for one
    # of the route's blob_slots, a wait of its own that is never an upstream failure.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=0, ttl_dns_cache=60),
        timeout=aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout),
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "artifactory-mirror"}, skip_auto_headers=("Accept-Encoding",),
    )


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect leads; an UpstreamError (never a ValueError) for one that cannot be followed."""
    try:
        target = urljoin(url, location)
        parts = urlsplit(target)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as e:
        raise UpstreamError(f"upstream redirected to an invalid URL {url_for_logs(location)}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"upstream redirected to a non-http URL {url_for_logs(target)}")
    return target
