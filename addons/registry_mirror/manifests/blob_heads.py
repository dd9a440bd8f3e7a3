"""Blob HEADs by (repository, digest): a blob's size and type never change, so repeated HEADs are answered here,
each for `cache.blob_head_ttl` seconds, until a verified transfer says otherwise. Each route owns one: its manifest
service fills and answers from it, its blob fills read sizes from it and correct it (blobs/fill.py).
"""
from __future__ import annotations

from collections.abc import Callable

from cachetools import TTLCache

BLOB_HEADS = 65536  # cached blob HEADs, at most


class BlobHeads:
    """Blob HEADs by (repository, digest), each trusted `ttl` seconds, with an index digest -> repositories so
    that a verified transfer finds every cached HEAD of its digest without a scan of the cache."""

    def __init__(self, ttl: float, timer: Callable[[], float], maxsize: int = BLOB_HEADS):
        """`ttl` 0: nothing is kept (every HEAD asks the upstream)."""
        self._heads: TTLCache = TTLCache(maxsize=maxsize if ttl > 0 else 0, ttl=max(ttl, 1.0), timer=timer)
        self._names: dict[str, set[str]] = {}
        self._indexed = 0  # names in the index, expired or evicted ones included until the next rebuild

    def __len__(self) -> int:
        return len(self._heads)

    def get(self, name: str, digest: str) -> dict[str, str] | None:
        return self._heads.get((name, digest))

    def size(self, name: str, digest: str) -> int | None:
        """The size a cached HEAD of the blob gave, if any."""
        length = (self.get(name, digest) or {}).get("Content-Length", "")
        return int(length) if length.isdigit() else None

    def put(self, name: str, digest: str, headers: dict[str, str]) -> None:
        if not self._heads.maxsize:
            return
        self._heads[(name, digest)] = headers
        names = self._names.setdefault(digest, set())
        if name not in names:
            names.add(name)
            self._indexed += 1
        if self._indexed > 2 * self._heads.maxsize:  # mostly expired or evicted: rebuilt, amortized O(1)
            self._names = {}
            for cached_name, cached_digest in self._heads:
                self._names.setdefault(cached_digest, set()).add(cached_name)
            self._indexed = sum(map(len, self._names.values()))

    def drop_other_sizes(self, digest: str, size: int) -> int:
        """Drop every cached HEAD of `digest` whose Content-Length is not `size`; how many were dropped."""
        names, kept, dropped = self._names.pop(digest, set()), set(), 0
        for name in names:
            headers = self._heads.get((name, digest))  # None: expired or evicted, forgotten here too
            if headers is None:
                continue
            if headers.get("Content-Length") == str(size):
                kept.add(name)
            else:
                self._heads.pop((name, digest), None)
                dropped += 1
        self._indexed -= len(names) - len(kept)
        if kept:
            self._names[digest] = kept
        return dropped
