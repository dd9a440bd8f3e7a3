"""Blob coalescing across replicas of one data center: one redis lock per digest in flight.

The replica that claims a digest first fetches it from the upstream; the lock's value says where its blob
endpoint serves the growing spool. A replica asked for the same digest meanwhile reads it from there, over
the data center's network, instead of over the WAN. While the leader fetches it renews its claim; when it is
done the claim lives on for as long as the spool is kept, for replicas that come late. If redis cannot be
reached, each replica fetches on its own (the WAN may then see a layer more than once) and the mirror keeps
serving.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from registry_mirror.config.load import ScaleConfig
from registry_mirror.redact import error_text

log = logging.getLogger(__name__)

LOCK_PREFIX = "artifactory-mirror:blob:"
REDIS_RETRY_SECONDS = 10.0  # after a failure, redis is not asked again for this long
# change the claim only while it is still this replica's: a claim that expired and was taken stays taken
_RENEW_IF_MINE = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
                  "else return 0 end")
_DELETE_IF_MINE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def redis_client(scale: ScaleConfig, **options) -> aioredis.Redis:
    """A client of the replicas' redis with short timeouts, so that a redis away never holds anything up."""
    redis = scale.shared_redis
    return aioredis.Redis(host=redis.host, port=redis.port, db=scale.redis_db,
                          password=scale.redis_password or None, socket_timeout=2, socket_connect_timeout=2,
                          **options)


@dataclass(frozen=True)
class Peer:
    """A replica's blob endpoint: its address and the key it serves only the mirror's own requests with."""
    url: str
    key: str

    def encode(self) -> str:
        return json.dumps({"url": self.url, "key": self.key}, sort_keys=True)

    @classmethod
    def decode(cls, text: bytes | str | None) -> Peer | None:
        try:
            data = json.loads(text) if text else None
            return cls(str(data["url"]), str(data["key"])) if isinstance(data, dict) else None
        except (ValueError, KeyError):
            return None


class PeerCoordinator:
    def __init__(self, scale: ScaleConfig, keep_seconds: float, timer: Callable[[], float] = time.monotonic):
        self.scale, self.keep_seconds = scale, keep_seconds
        self._timer = timer
        self._me: Peer | None = None  # set by announce, before the coordinator is shared with the blob fill
        self.redis_errors = 0
        self.last_error = ""
        self._skip_until = 0.0  # after a redis failure, fetch on our own a while instead of waiting on it
        self._releases: set[asyncio.Task] = set()
        self._redis = redis_client(scale)

    def announce(self, port: int, key: str) -> None:
        host = f"[{self.scale.advertise}]" if ":" in self.scale.advertise else self.scale.advertise
        self._me = Peer(f"http://{host}:{port}", key)

    @property
    def me(self) -> Peer:
        """This replica's blob endpoint, as the others reach it."""
        assert self._me is not None, "PeerCoordinator.announce() comes first (BlobServer.share_with_peers)"
        return self._me

    async def close(self) -> None:
        if self._releases:
            await asyncio.wait(self._releases, timeout=3)
        await self._redis.aclose()

    async def claim(self, digest: str) -> Peer | None:
        """None when this replica is to fetch `digest` from the upstream; else the replica already fetching it."""
        if self._skipping():
            return None
        mine, key = self.me.encode(), LOCK_PREFIX + digest
        try:
            for _ in range(2):  # a claim released between our SET and GET: try to take it once more
                if await self._redis.set(key, mine, nx=True, px=int(self.scale.lock_seconds * 1000)):
                    return None
                if (text := await self._redis.get(key)) is not None:
                    break
        except (RedisError, OSError) as e:
            self._failed(f"claim {digest}", e)
            return None
        holder = Peer.decode(text)
        if holder is None or holder == self.me:  # our own claim from an earlier transfer (or junk): lead
            return None
        return holder

    @asynccontextmanager
    async def leading(self, digest: str):
        """Hold the claim on `digest` while the body runs; keep it for late replicas if the body succeeds."""
        renewer = asyncio.create_task(self._renew(digest))
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            renewer.cancel()
            # in the background: the blob's last bytes never wait on redis
            task = asyncio.create_task(self._release(digest, keep=succeeded and self.keep_seconds > 0))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, digest: str, keep: bool) -> None:
        if self._skipping():
            return  # the claim expires on its own
        try:
            if keep:
                await self._redis.eval(_RENEW_IF_MINE, 1, LOCK_PREFIX + digest, self.me.encode(),
                                       int(self.keep_seconds * 1000))
            else:
                await self._redis.eval(_DELETE_IF_MINE, 1, LOCK_PREFIX + digest, self.me.encode())
        except (RedisError, OSError) as e:
            self._failed(f"release {digest}", e)  # the claim expires on its own

    async def _renew(self, digest: str) -> None:
        while True:
            await asyncio.sleep(self.scale.lock_seconds / 3)
            if self._skipping():
                continue
            try:
                await self._redis.eval(_RENEW_IF_MINE, 1, LOCK_PREFIX + digest, self.me.encode(),
                                       int(self.scale.lock_seconds * 1000))
            except (RedisError, OSError) as e:
                self._failed(f"renew {digest}", e)

    def _skipping(self) -> bool:
        return self._timer() < self._skip_until

    def _failed(self, what: str, e: BaseException) -> None:
        self._skip_until = self._timer() + REDIS_RETRY_SECONDS
        self.redis_errors += 1
        self.last_error = f"{what}: {error_text(e)}"
        log.warning("redis at %s unavailable (%s); this replica fetches on its own for %.0f s", self.scale.redis,
                    self.last_error, REDIS_RETRY_SECONDS)
