"""A route and a router as the blob path sees them (blobs/route.BlobRoute), typed, for unit tests: the real
health, slots and HEAD cache, a stand-in upstream with what the test's path calls (`open`, `auth`, `url_for`)."""
from __future__ import annotations

import dataclasses
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from registry_mirror.config.load import UpstreamConfig
from registry_mirror.manifests.blob_heads import BlobHeads
from registry_mirror.upstream.health import UpstreamHealth
from registry_mirror.upstream.slots import TransferSlots

UNREACHABLE = 3600.0  # a timeout no test reaches unless its upstream never answers


def upstream_config(request_timeout: float = UNREACHABLE, blob_stall_timeout: float = UNREACHABLE,
                    blob_resumes: int = 0) -> UpstreamConfig:
    return dataclasses.replace(UpstreamConfig(url="https://artifactory.test"), request_timeout=request_timeout,
                               blob_stall_timeout=blob_stall_timeout, blob_resumes=blob_resumes)


class SizedHeads(BlobHeads):
    """A HEAD cache in which every blob's cached HEAD gave `size` (None: no HEAD cached)."""

    def __init__(self, size: int | None):
        super().__init__(UNREACHABLE, time.monotonic)
        self._size = size

    def size(self, name: str, digest: str) -> int | None:
        return self._size


@dataclass
class FakeRoute:
    upstream: Any
    cfg: UpstreamConfig = field(default_factory=upstream_config)
    health: UpstreamHealth = field(default_factory=UpstreamHealth)
    blob_slots: TransferSlots = field(default_factory=lambda: TransferSlots(256, UNREACHABLE))
    blob_heads: BlobHeads = field(default_factory=lambda: BlobHeads(UNREACHABLE, time.monotonic))


@dataclass
class FakeRouter:
    """Every request goes to `route`; `routes` are those a verified transfer corrects the HEADs of."""
    route: FakeRoute | None = None
    routes: dict[str, FakeRoute] = field(default_factory=dict)

    def for_request(self, req) -> FakeRoute:
        assert self.route is not None, "this test's router has no route for requests"
        return self.route


class BlobUpstream:
    """A stand-in upstream (`open`, as the blob path calls it) answering every blob GET 200 with `blob`, in pieces
    of `chunk` bytes; counts the GETs."""

    def __init__(self, blob: bytes, chunk: int = 65536):
        self.blob, self.chunk, self.gets = blob, chunk, 0

    @asynccontextmanager
    async def open(self, method, req, headers):
        """A resume (`Range: bytes=N-`) gets a 206 with the rest, as a registry answers it."""
        self.gets += 1
        start = int(headers["Range"][len("bytes="):-1]) if headers.get("Range") else 0

        async def content():
            for i in range(start, len(self.blob), self.chunk):
                yield self.blob[i:i + self.chunk]
        size = len(self.blob)
        answer = {"Content-Length": str(size - start)}
        if start:
            answer["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        yield SimpleNamespace(status=206 if start else 200, headers=answer,
                              content=SimpleNamespace(iter_any=content)), "Basic"
