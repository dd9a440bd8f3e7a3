"""Manifests, tags and blob HEADs: answered from caches where that is safe, else from one upstream fetch.

- Manifests by digest are immutable: an LRU bounded in bytes, stored only after oci/manifest_body.py has checked
  the body and its digest.
- Tag -> digest lives `cache.tag_ttl` seconds (30 by default), keyed by the set of media types the client
  accepts, because the upstream answers a different manifest (index or image) for a different Accept.
- Blob HEADs: a blob's size and type by digest never change, so a cache of them (manifests/blob_heads.py) answers
  repeated HEADs, each for `cache.blob_head_ttl` seconds (3600); the route owns it, and once a transfer's bytes
  are verified (blobs/fill.py), every cached HEAD of that digest with another size is dropped, so a wrong answer
  cannot stick.
- Requests for the same thing that overlap share one upstream fetch.
- Stale-if-error: a tag whose refresh fails, or takes longer than `cache.stale_budget`, is answered from its
  last known digest (up to `cache.max_stale` old) while the refresh goes on in the background; while the
  upstream is assumed down (upstream/health.py) cached answers come at once and uncached ones fail at once.
Every answer says how it was served: HIT, MISS, COALESCED or STALE (with its age).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cachetools import LRUCache, TTLCache

from registry_mirror.config.load import CacheConfig
from registry_mirror.manifests.blob_heads import BlobHeads
from registry_mirror.manifests.tag_state import KnownTag, TagState
from registry_mirror.oci.manifest_body import verified_digest
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.outcomes import Outcome
from registry_mirror.responses import next_page_link, passed_headers
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.auth import AuthError
from registry_mirror.upstream.client import Upstream, UpstreamError
from registry_mirror.upstream.health import UpstreamHealth

log = logging.getLogger(__name__)

SICK_SECONDS = 10.0  # after a failed or slow refresh, a tag is answered stale at once this long


def refresh_failed(status: int) -> bool:
    """An upstream answer a known tag is answered stale for: a 5xx, or a 429 (rate-limited)."""
    return status >= 500 or status == 429


class UpstreamDown(Exception):
    """The upstream is assumed down and the answer is not cached; the message says until when."""


@dataclass(frozen=True)
class Manifest:
    digest: str
    content_type: str
    body: bytes


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    outcome: Outcome  # HIT, MISS, COALESCED or STALE
    auth_scheme: str = ""  # the credential kind sent upstream, for the flow's redaction marker


def accept_key(accept_values: list[str]) -> frozenset[str]:
    """The media types a client accepts, whatever their order, spacing or parameters."""
    return frozenset(t.split(";", 1)[0].strip().lower() for v in accept_values for t in v.split(",") if t.strip())


def manifest_answer(manifest: Manifest, outcome: Outcome, auth_scheme: str = "") -> Answer:
    headers = {"Content-Type": manifest.content_type, "Docker-Content-Digest": manifest.digest,
               "Content-Length": str(len(manifest.body)), "ETag": f'"{manifest.digest}"'}
    return Answer(200, headers, manifest.body, outcome, auth_scheme)


class ManifestService:
    def __init__(self, upstream: Upstream, cfg: CacheConfig, health: UpstreamHealth, stats: Stats, known: TagState,
                 blob_heads: BlobHeads, timer: Callable[[], float] = time.monotonic, route: str = "upstream"):
        """`route`: the route's label, for the stats' histograms."""
        self.upstream, self.cfg, self.health, self.stats, self.known = upstream, cfg, health, stats, known
        self.route = route
        self.blob_heads = blob_heads  # the route's
        self.manifests: LRUCache = LRUCache(maxsize=max(1, cfg.manifest_bytes), getsizeof=lambda m: len(m.body))
        self.tags: TTLCache | None = TTLCache(maxsize=65536, ttl=cfg.tag_ttl, timer=timer) if cfg.tag_ttl else None
        self._inflight: dict[tuple, asyncio.Future] = {}
        # tags answered stale at once for SICK_SECONDS after a failed or slow refresh (bounded, expiring)
        self._sick: TTLCache = TTLCache(maxsize=65536, ttl=SICK_SECONDS, timer=timer)
        # told of a tag the upstream answers 404 for (cache.forget_deleted_tags: Services removes it)
        self.on_tag_gone: Callable[[str, str], Awaitable[None]] | None = None

    async def answer(self, req: RegistryRequest, headers, method: str = "GET") -> Answer:
        """The answer to `method` for `req` (a HEAD gets the GET's headers, without the body)."""
        accepts = accept_key(headers.get_all("Accept"))
        if req.kind is Kind.MANIFEST_BY_DIGEST:
            cached = self.manifests.get(req.reference)
            if cached is not None:
                return manifest_answer(cached, Outcome.HIT)
        elif req.kind is Kind.MANIFEST_BY_TAG:
            digest = self.tags.get((req.name, req.reference, accepts)) if self.tags is not None else None
            cached = self.manifests.get(digest) if digest else None
            if cached is not None:
                return manifest_answer(cached, Outcome.HIT)
            return await self._tag(req, headers, method, accepts)
        elif req.kind is Kind.BLOB:
            known = self.blob_heads.get(req.name, req.reference)
            if known is not None:
                return Answer(200, dict(known), b"", Outcome.HIT)
        await self._wait_if_down()
        return await self._shared_fetch(req, headers, accepts)

    def forget_tag(self, name: str, tag: str) -> int:
        """Drop the cached digest of `name:tag` (for every Accept), so that the next request asks the upstream:
        a webhook said the tag moved. The last known digest stays, for stale-if-error. How many were dropped."""
        tags = self.tags if self.tags is not None else {}
        keys = [key for key in tags if key[:2] == (name, tag)]
        for key in keys:
            tags.pop(key, None)
        return len(keys)

    def forget(self, name: str, tag: str | None = None, digests: frozenset[str] = frozenset()) -> int:
        """Drop what is cached of an image an operator forgot (or the upstream deleted): its tags (every tag of
        `name` when `tag` is None), their last known digests (no stale answer brings it back) and the
        manifests `digests`. How many entries went."""
        tags = self.tags if self.tags is not None else {}
        keys = [key for key in tags if key[0] == name and (tag is None or key[1] == tag)
                and (tag is not None or not digests or tags.get(key) in digests)]
        named = {tags.pop(key, None) for key in keys} | self.known.forget(name, tag, digests)
        dropped = len(keys) + len(named)
        for digest in (named - {None}) | digests:
            dropped += self.manifests.pop(digest, None) is not None
        return dropped

    async def _tag(self, req: RegistryRequest, headers, method: str, accepts: frozenset) -> Answer:
        """A tag the TTL cache does not answer: refresh, or the last known digest if that fails or is slow.

        Once a refresh of a tag failed or overran the budget, the tag is answered stale at once for
        SICK_SECONDS while refreshes go on in the background, so that no request waits for a sick upstream
        twice."""
        known = self.known.get((req.name, req.reference, accepts))
        stale = self._stale_answer(known, method) if known else None
        key = (req.kind, req.name, req.reference, req.query, accepts)
        if stale is None:
            await self._wait_if_down()
            return await self._shared_fetch(req, headers, accepts)
        if self.health.down:
            return stale  # the probe decides when to ask again
        refresh = asyncio.ensure_future(self._shared_fetch(req, headers, accepts))
        if key in self._sick:
            refresh.add_done_callback(lambda f: self._after_refresh(key, f))
            return stale
        try:
            answer = await asyncio.wait_for(asyncio.shield(refresh), self.cfg.stale_budget)
        except (TimeoutError, UpstreamError, AuthError):
            # a slow refresh goes on and updates the caches when it ends; no one waits for it meanwhile
            self._sick[key] = True
            refresh.add_done_callback(lambda f: self._after_refresh(key, f))
            return stale
        if refresh_failed(answer.status):
            self._sick[key] = True
            return stale
        return answer

    def _after_refresh(self, key: tuple, refresh: asyncio.Future) -> None:
        if refresh.cancelled() or refresh.exception() is not None or refresh_failed(refresh.result().status):
            return
        self._sick.pop(key, None)

    def _stale_answer(self, known: KnownTag, method: str) -> Answer | None:
        age = self.known.age(known)
        if age > self.cfg.max_stale:
            return None
        cached = self.manifests.get(known.digest)
        if cached is not None:
            answer = manifest_answer(cached, Outcome.STALE)
        elif method == "HEAD":  # after a restart: the registry has the manifest itself, by digest
            answer = Answer(200, {"Content-Type": known.content_type, "Docker-Content-Digest": known.digest,
                                  "Content-Length": str(known.length)}, b"", Outcome.STALE)
        else:
            return None
        answer.headers.update({"Age": str(int(age)), "X-Mirror-Stale-Age": str(int(age)),
                               "Warning": '110 - "Response is Stale"'})
        return answer

    async def _wait_if_down(self) -> None:
        """While the upstream is assumed down, an uncached answer waits up to the stale budget for it to come
        back (a flap), then fails with a message saying why."""
        if not await self.health.wait_until_up(self.cfg.stale_budget):
            raise UpstreamDown(f"the upstream is assumed down (retrying in {self.health.retry_in():.0f} s; last "
                               f"error: {self.health.last_error}) and this answer is not cached")

    async def _shared_fetch(self, req: RegistryRequest, headers, accepts: frozenset) -> Answer:
        key = (req.kind, req.name, req.reference, req.query, accepts)
        pending = self._inflight.get(key)
        if pending is not None:
            answer = await asyncio.shield(pending)
            return Answer(answer.status, answer.headers, answer.body, Outcome.COALESCED, answer.auth_scheme)
        pending = asyncio.ensure_future(self._fetch(req, headers))
        self._inflight[key] = pending
        pending.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _fetch(self, req: RegistryRequest, headers) -> Answer:
        # manifests are fetched with GET even for a HEAD: they are small, and the body fills the cache
        method = "HEAD" if req.kind is Kind.BLOB else "GET"
        what = f"{req.name}:{req.reference}" if req.reference else req.name
        started = time.monotonic()
        try:
            up = await self.upstream.fetch_small(method, req, headers)
        except UpstreamError as e:
            self.health.failure(str(e), hung=e.timed_out)
            self.stats.upstream(req.kind.value, method, what, "timeout" if e.timed_out else "error", 0,
                                time.monotonic() - started, Outcome.ERROR, route=self.route)
            raise
        except AuthError as e:
            (self.health.failure if e.upstream_failure else self.health.refused)(str(e))
            raise
        self.stats.upstream(req.kind.value, method, what, up.status, len(up.body), time.monotonic() - started,
                            route=self.route)
        if up.status >= 500:
            self.health.failure(f"{method} {req.kind.value} {req.name}: status {up.status}")
        else:  # a 429 too: a rate-limited upstream answers, so it is not down (the probe agrees: any status < 500)
            self.health.success()
        if up.status in (401, 403):
            self.health.refused(f"{method} {req.kind.value} {req.name}: status {up.status}: the upstream refused "
                                "the mirror's credential or its permissions")
        if req.kind is Kind.MANIFEST_BY_DIGEST and up.status == 404:
            # the stock registry answers clients a bare 500 for it whatever is said here: the page says why
            self.stats.missing_digest(self.route)
            self.health.noted(f"{method} {req.kind.value} {req.name}@{req.reference}: the upstream has no such "
                              f"manifest (404); clients see 500 from the stock registry")
        if req.kind is Kind.MANIFEST_BY_TAG and up.status == 404 and self.on_tag_gone is not None:
            # before anyone hears the 404 (the registry then has no tag of its own to fall back to), a refresh
            # in the background too
            await self.on_tag_gone(req.name, req.reference)
        if req.kind is Kind.TAGS and up.status == 200 and (link := next_page_link(up.headers.get("Link"), req.name)):
            return Answer(200, {**passed_headers(up.headers), "Link": link}, up.body, Outcome.MISS, up.authorized)
        if up.status != 200 or req.kind is Kind.TAGS:
            return Answer(up.status, passed_headers(up.headers), up.body, Outcome.MISS, up.authorized)
        if req.kind is Kind.BLOB:
            known = passed_headers(up.headers)
            # a size is kept only from an answer that names this blob: one that does not (a stray answer a
            # broken connection left behind, a proxy's page) is passed on once, never cached
            names_it = known.get("Docker-Content-Digest") == req.reference
            if "Content-Length" in known and names_it:
                self.blob_heads.put(req.name, req.reference, known)
            return Answer(200, known, b"", Outcome.MISS, up.authorized)
        return self._store_manifest(req, accept_key(headers.get_all("Accept")), up.headers, up.body, up.authorized)

    def _store_manifest(self, req: RegistryRequest, accepts: frozenset[str], up_headers, body: bytes,
                        auth_scheme: str) -> Answer:
        content_type = up_headers.get("Content-Type", "application/octet-stream")
        asked = req.reference if req.kind is Kind.MANIFEST_BY_DIGEST else None
        actual = verified_digest(body, content_type, up_headers.get("Docker-Content-Digest"), asked,
                                 f"{req.name}:{req.reference}")
        manifest = Manifest(actual, content_type, body)
        if len(body) <= self.manifests.maxsize:
            self.manifests[actual] = manifest
        if req.kind is Kind.MANIFEST_BY_TAG:
            key = (req.name, req.reference, accepts)
            if self.tags is not None:  # the digest is used only with the manifest it names, which may be evicted
                self.tags[key] = actual
            self.known.put(key, KnownTag(actual, manifest.content_type, len(body), self.known.now()))
        return manifest_answer(manifest, Outcome.MISS, auth_scheme)
