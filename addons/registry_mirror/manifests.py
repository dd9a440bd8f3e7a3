"""Manifests, tags and blob HEADs: answered from caches where that is safe, else from one upstream fetch.

- Manifests by digest are immutable: an LRU bounded in bytes, stored only after their digest is checked.
- Tag -> digest lives `cache.tag_ttl` seconds (30 by default), keyed by the set of media types the client
  accepts, because the upstream answers a different manifest (index or image) for a different Accept.
- Blob HEADs: a blob's size and type by digest never change; an LRU of them answers repeated HEADs.
- Requests for the same thing that overlap share one upstream fetch.
Every answer says how it was served: HIT, MISS or COALESCED.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache, TTLCache

from .config import CacheConfig
from .requests import Kind, RegistryRequest
from .responses import passed_headers
from .upstream import Upstream


class ManifestMismatch(Exception):
    """The upstream's manifest bytes do not match their digest."""


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
    outcome: str  # HIT, MISS or COALESCED
    auth_scheme: str = ""  # the credential kind sent upstream, for the flow's redaction marker


def accept_key(accept_values: list[str]) -> frozenset[str]:
    """The media types a client accepts, whatever their order, spacing or parameters."""
    return frozenset(t.split(";", 1)[0].strip().lower() for v in accept_values for t in v.split(",") if t.strip())


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def manifest_answer(manifest: Manifest, outcome: str, auth_scheme: str = "") -> Answer:
    headers = {"Content-Type": manifest.content_type, "Docker-Content-Digest": manifest.digest,
               "Content-Length": str(len(manifest.body)), "ETag": f'"{manifest.digest}"'}
    return Answer(200, headers, manifest.body, outcome, auth_scheme)


class ManifestService:
    def __init__(self, upstream: Upstream, cfg: CacheConfig, timer: Callable[[], float] = time.monotonic):
        self.upstream = upstream
        self.manifests: LRUCache = LRUCache(maxsize=max(1, cfg.manifest_bytes), getsizeof=lambda m: len(m.body))
        self.tags: TTLCache | None = TTLCache(maxsize=65536, ttl=cfg.tag_ttl, timer=timer) if cfg.tag_ttl else None
        self.blob_heads: LRUCache = LRUCache(maxsize=65536)
        self._inflight: dict[tuple, asyncio.Future] = {}

    async def answer(self, req: RegistryRequest, headers) -> Answer:
        """The answer to a GET for `req` (HEADs get the same headers, without the body)."""
        if req.kind is Kind.MANIFEST_BY_DIGEST:
            cached = self.manifests.get(req.reference)
            if cached is not None:
                return manifest_answer(cached, "HIT")
        elif req.kind is Kind.MANIFEST_BY_TAG and self.tags is not None:
            digest = self.tags.get((req.name, req.reference, accept_key(headers.get_all("Accept"))))
            cached = self.manifests.get(digest) if digest else None
            if cached is not None:
                return manifest_answer(cached, "HIT")
        elif req.kind is Kind.BLOB:
            known = self.blob_heads.get((req.name, req.reference))
            if known is not None:
                return Answer(200, dict(known), b"", "HIT")
        key = (req.kind, req.name, req.reference, req.query, accept_key(headers.get_all("Accept")))
        pending = self._inflight.get(key)
        if pending is not None:
            answer = await asyncio.shield(pending)
            return Answer(answer.status, answer.headers, answer.body, "COALESCED", answer.auth_scheme)
        pending = asyncio.ensure_future(self._fetch(req, headers))
        self._inflight[key] = pending
        try:
            return await asyncio.shield(pending)
        finally:
            self._inflight.pop(key, None)

    async def _fetch(self, req: RegistryRequest, headers) -> Answer:
        # manifests are fetched with GET even for a HEAD: they are small, and the body fills the cache
        method = "HEAD" if req.kind is Kind.BLOB else "GET"
        up = await self.upstream.fetch_small(method, req, headers)
        if up.status != 200 or req.kind is Kind.TAGS:
            return Answer(up.status, passed_headers(up.headers), up.body, "MISS", up.authorized)
        if req.kind is Kind.BLOB:
            known = passed_headers(up.headers)
            if "Content-Length" in known:
                self.blob_heads[(req.name, req.reference)] = known
            return Answer(200, known, b"", "MISS", up.authorized)
        return self._store_manifest(req, accept_key(headers.get_all("Accept")), up.headers, up.body, up.authorized)

    def _store_manifest(self, req: RegistryRequest, accepts: frozenset[str], up_headers, body: bytes,
                        auth_scheme: str) -> Answer:
        actual = digest_of(body)
        claimed = up_headers.get("Docker-Content-Digest", actual)
        expected = req.reference if req.kind is Kind.MANIFEST_BY_DIGEST else claimed
        if actual != expected or claimed != actual:  # never cached, never handed on
            raise ManifestMismatch(f"upstream manifest for {req.name}:{req.reference} does not match its digest "
                                   f"(expected {expected}, got {actual}); discarded")
        manifest = Manifest(actual, up_headers.get("Content-Type", "application/octet-stream"), body)
        if len(body) <= self.manifests.maxsize:
            self.manifests[actual] = manifest
        if req.kind is Kind.MANIFEST_BY_TAG and self.tags is not None:
            # the tag's digest is valid only with the manifest it names, which the LRU may evict
            self.tags[(req.name, req.reference, accepts)] = actual
        return manifest_answer(manifest, "MISS", auth_scheme)
