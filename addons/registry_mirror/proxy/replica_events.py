"""Cache invalidations across replicas sharing one storage, over a redis channel every replica subscribes to.

A replica that forgets an image (`forget`, a tag deleted upstream) removes it from the shared storage itself;
the others only need to drop it from their caches, or they would keep answering it (and their registries
store it again). Pub/sub is fire-and-forget: a replica not subscribed at that moment misses the message, and
PUBLISH's count says how many heard it. A lost subscription is taken up again with backoff; redis being down
never stops a forget nor a pull.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from registry_mirror.blobs import peers
from registry_mirror.config.load import CacheConfig, ScaleConfig
from registry_mirror.expiry.forget import Target
from registry_mirror.oci.registry_requests import TAG_RE, valid_digest, valid_name
from registry_mirror.redact import error_text

log = logging.getLogger(__name__)

CHANNEL = "artifactory-mirror:forgotten"
RETRY_SECONDS = (1.0, 30.0)  # the first wait after a lost subscription, doubled up to the second
READ_SECONDS = 5.0  # a read that waits this long returns, so that the subscriber's health check runs
HEALTH_CHECK_SECONDS = 30  # an idle subscription PINGs redis this often, so that a dropped connection shows


@dataclass(frozen=True)
class Invalidation:
    """What a forget dropped from the caches: `tag` None is every tag of the repository."""
    sender: str  # who published it, for the log ("replica <its blob endpoint>"); a replica skips its own
    repository: str
    tag: str | None = None
    digests: frozenset[str] = frozenset()

    def __str__(self) -> str:
        digests = f" ({len(self.digests)} digest{'s' if len(self.digests) > 1 else ''})" if self.digests else ""
        return self.repository + (f":{self.tag}" if self.tag else "") + digests


def forgotten_digests(target: Target, removed: Iterable[str]) -> frozenset[str]:
    """The manifests a forget drops from the caches: the images it removed and the digest it named."""
    return frozenset(removed) | ({target.digest} if target.digest else frozenset())


def encode(inv: Invalidation) -> str:
    return json.dumps({"from": inv.sender, "repository": inv.repository, "tag": inv.tag,
                       "digests": sorted(inv.digests)}, sort_keys=True)


def decode(data: bytes | str) -> Invalidation | None:
    """The invalidation `data` holds; None for anything else (junk, another program's message)."""
    try:
        msg = json.loads(data)
    except (ValueError, TypeError):  # a bytes string that is not UTF-8 is a ValueError too
        return None
    if not isinstance(msg, dict):
        return None
    sender, repository, tag, digests = (msg.get(k) for k in ("from", "repository", "tag", "digests"))
    if not (isinstance(sender, str) and sender and isinstance(repository, str) and valid_name(repository)
            and (tag is None or isinstance(tag, str) and TAG_RE.fullmatch(tag))
            and isinstance(digests, list) and all(isinstance(d, str) and valid_digest(d) for d in digests)):
        return None
    return Invalidation(sender, repository, tag, frozenset(digests))


def told_text(heard: int | None, cache: CacheConfig) -> str:
    """What a forget's answer says of the other replicas: how many heard it, or how long they may still answer."""
    if heard is not None:
        return f"told {heard} other replica{'s' if heard != 1 else ''} to drop it from their caches"
    return (f"the other replicas could not be told (redis unreachable): they may still answer it from their caches, "
            f"by tag for up to cache.tag_ttl ({cache.tag_ttl:g} s) while the upstream answers and up to "
            f"cache.max_stale ({cache.max_stale:g} s) after their last fetch of it while it fails, by digest until "
            f"their manifest cache evicts it or they restart; run forget again once redis is back, or on each replica")


def redis_client(scale: ScaleConfig, **options) -> aioredis.Redis:
    """blobs/peers.py's client, with one retry at once (a pooled connection redis closed) instead of the client's
    default backoff: a forget would wait seconds for a redis that is down, and the subscriber backs off on its own."""
    return peers.redis_client(scale, retry=Retry(NoBackoff(), 1), **options)


async def publish_once(scale: ScaleConfig, inv: Invalidation) -> int | None:
    """For a process that does not subscribe (the forget command on its own): how many heard it, or None."""
    client = redis_client(scale)
    try:
        return await client.publish(CHANNEL, encode(inv))
    except (RedisError, OSError) as e:
        log.warning("cannot tell the replicas to drop %s: redis at %s: %s", inv, scale.redis, error_text(e))
        return None
    finally:
        await client.aclose()


class ReplicaEvents:
    """This replica's end of the channel: `publish` tells the others; what they publish goes to `apply`, which
    drops it from the caches and returns how many entries went."""

    def __init__(self, scale: ScaleConfig, me: str, apply: Callable[[Invalidation], int],
                 retry_seconds: tuple[float, float] = RETRY_SECONDS):
        self.scale, self.me, self._apply, self._retry = scale, me, apply, retry_seconds
        self.subscribed = False
        self.received = self.entries_dropped = self.ignored = self.published = self.publish_failures = 0
        self.last_error = ""
        self._outage = False  # the subscription failed and is not taken up again yet
        self._publisher = redis_client(scale)
        self._subscriber = redis_client(scale, health_check_interval=HEALTH_CHECK_SECONDS)
        self._listener: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._listener:
            self._listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._listener
        if self._background:
            await asyncio.wait(self._background, timeout=3)
        await self._publisher.aclose()
        await self._subscriber.aclose()

    async def publish(self, repository: str, tag: str | None = None, digests: Iterable[str] = ()) -> int | None:
        """How many other replicas heard it; None when redis could not be reached (logged, counted)."""
        inv = Invalidation(self.me, repository, tag, frozenset(digests))
        try:
            heard = await self._publisher.publish(CHANNEL, encode(inv))
        except (RedisError, OSError) as e:
            self.publish_failures += 1
            self.last_error = f"publish: {error_text(e)}"
            log.warning("cannot tell the other replicas to drop %s from their caches: redis at %s: %s", inv,
                        self.scale.redis, self.last_error)
            return None
        self.published += 1
        return max(0, heard - (1 if self.subscribed else 0))  # this replica's own subscription heard it too

    def publish_soon(self, repository: str, tag: str | None = None, digests: Iterable[str] = ()) -> None:
        """`publish` in the background: an answer that only tells the others never waits on redis."""
        task = asyncio.create_task(self.publish(repository, tag, digests))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def snapshot(self) -> dict:
        return {"subscribed": self.subscribed, "received": self.received, "cache_entries_dropped":
                self.entries_dropped, "ignored": self.ignored, "published": self.published,
                "publish_failures": self.publish_failures, "last_error": self.last_error}

    async def _listen(self) -> None:
        wait = self._retry[0]
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                self._subscribed()
                wait = self._retry[0]
                while True:
                    message = await pubsub.get_message(timeout=READ_SECONDS)
                    if message is not None and message["type"] == "message":
                        self._received(message["data"])
            except (RedisError, OSError) as e:
                self._lost(e, wait)
            finally:
                with suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(wait)
            wait = min(wait * 2, self._retry[1])

    def _subscribed(self) -> None:
        if self._outage:
            log.warning("subscribed again to %s on redis at %s", CHANNEL, self.scale.redis)
        self.subscribed, self._outage = True, False

    def _lost(self, e: BaseException, wait: float) -> None:
        self.last_error = f"subscribe: {error_text(e)}"
        if not self._outage:  # once per outage, not once per retry
            log.warning("not subscribed to %s on redis at %s (%s): forgets on other replicas do not reach this "
                        "one's caches; retrying in %g s, then less often", CHANNEL, self.scale.redis,
                        self.last_error, wait)
        self.subscribed, self._outage = False, True

    def _received(self, data: bytes) -> None:
        inv = decode(data)
        if inv is None:
            self.ignored += 1
            log.warning("ignored a message on %s that is no cache invalidation (%d bytes)", CHANNEL, len(data))
        elif inv.sender != self.me:
            dropped = self._apply(inv)
            self.received += 1
            self.entries_dropped += dropped
            log.warning("%s forgot %s: %d cache entries dropped here", inv.sender, inv, dropped)
