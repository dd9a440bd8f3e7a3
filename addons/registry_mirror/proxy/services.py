"""What the addon's `running` hook builds from the loaded configuration: the routes, the blob endpoint, the
storage's expiry and scrub, and the optional scale-out events and webhook listener.

All or nothing: the addon holds one `Services | None`, None until `running` has built every part, so a
hook checks once whether the mirror has started. Each part's stop is pushed on the addon's exit stack as it
starts, so `done` stops whatever a failed start left running, in the reverse order.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from registry_mirror.access.server import TokenServer
from registry_mirror.blobs.peers import PeerCoordinator
from registry_mirror.blobs.server import BlobServer
from registry_mirror.config.load import Config, S3Config
from registry_mirror.expiry.forget import Target
from registry_mirror.expiry.last_pulls import LastPulls
from registry_mirror.expiry.passes import Expiry
from registry_mirror.free_space import DiskWatch
from registry_mirror.proxy.replica_events import Invalidation, ReplicaEvents, forgotten_digests, told_text
from registry_mirror.routes.routing import Router
from registry_mirror.stats.counters import Stats
from registry_mirror.storage.bucket import Bucket
from registry_mirror.storage.bucket_uploads import UploadSweep
from registry_mirror.storage.scrub import Scrub
from registry_mirror.storage.stores import Stores, open_stores
from registry_mirror.storage.verify import Checked
from registry_mirror.warming.webhooks import WebhookListener

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Every part of a started mirror, and what acts on several of them: forgetting an image, dropping a tag."""
    config: Config  # the one the mirror started with
    router: Router
    disk: DiskWatch
    blobs: BlobServer
    expiry: Expiry
    scrub: Scrub
    uploads: UploadSweep | None = None  # mirror.s3: the bucket's incomplete uploads, aborted a day old
    replicas: ReplicaEvents | None = None  # scale-out: tells the others what this one forgot, and back
    webhooks: WebhookListener | None = None  # webhooks.enabled: Artifactory's events
    tokens: TokenServer | None = None  # access.enabled: who may pull, by each client's Artifactory user

    async def forget(self, target: Target, dry_run: bool = False) -> dict:
        """Remove an image from the storage and every route's caches (expiry/forget.py), and tell the other replicas to
        drop it from theirs; what went, or would."""
        plan = await self.expiry.forget(target, dry_run)
        digests = forgotten_digests(target, (r.image.digest for r in plan.removals))
        done: dict = {"target": str(target), "dry_run": dry_run, "bytes": plan.bytes_freed, "blobs": len(plan.blobs),
                      "images": [f"{r.image.repository}@{r.image.digest}" for r in plan.removals],
                      "cache_entries": 0, "other_replicas": None, "replicas": None}
        if dry_run:
            return done
        done["cache_entries"] = self.drop_cached(target.repository, target.tag, digests)
        if self.replicas:
            done["other_replicas"] = await self.replicas.publish(target.repository, target.tag, digests)
            done["replicas"] = told_text(done["other_replicas"], self.config.cache)
        log.warning("forgot %s: %d images, %d blobs (%d bytes), %d cache entries%s", target, len(plan.removals),
                    len(plan.blobs), plan.bytes_freed, done["cache_entries"],
                    f"; {done['replicas']}" if done["replicas"] else "")
        return done

    def drop_cached(self, repository: str, tag: str | None, digests: frozenset[str]) -> int:
        """Drop an image from every route's caches; how many entries went."""
        return sum(route.manifests.forget(repository, tag, digests) for route in self.router.routes.values())

    def forgotten_elsewhere(self, inv: Invalidation) -> int:
        """Another replica forgot it and removed it from the shared storage: only the caches here are left."""
        return self.drop_cached(inv.repository, inv.tag, inv.digests)

    async def drop_tag(self, name: str, tag: str, digest: str | None = None) -> bool:
        """A tag deleted upstream goes here too: its link in the storage (with `digest`, only while it names that
        digest) and the route's cached and last known digests; its image stays, by digest, until `forget`.
        Whether the storage had it."""
        stored = await self.expiry.drop_tag(name, tag, digest)
        if stored or digest is None:  # pushed again since: the caches may know the new digest already
            self.router.for_name(name).manifests.forget(name, tag)
            if self.replicas:  # the shared storage has lost the tag; the others' caches still hold it
                self.replicas.publish_soon(name, tag)
        return stored

    async def tag_gone(self, name: str, tag: str) -> None:
        """The upstream answers 404 for a tag (cache.forget_deleted_tags): no pull by it is served from here."""
        if await self.drop_tag(name, tag):
            log.warning("%s:%s is not found upstream: the mirror's tag is removed (cache.forget_deleted_tags); "
                        "its image stays pullable by digest until `artifactory-mirror forget`", name, tag)


async def start_services(config: Config, stats: Stats, folders: dict[str, str | None],
                         stops: contextlib.AsyncExitStack) -> Services:
    """Start every part `config` asks for. `folders`: the log and dump folders, whose free space the stats page
    shows."""
    mirror, cache = config.mirror, config.cache
    router = Router(config, stats)
    stops.push_async_callback(router.close)
    await router.start()
    disk = DiskWatch(mirror.min_free, {"storage": mirror.storage,
                                       "spool": cache.spool_dir or tempfile.gettempdir(), **folders})
    bucket = _open_bucket(mirror.s3, stops) if mirror.s3 else None
    blobs = await _start_blob_server(config, router, stats, disk, bucket, stops)
    stores = open_stores(mirror.storage, bucket)
    expiry = _start_expiry(config, stores, blobs, stops)
    scrub = Scrub(stores.registry, mirror.scrub_interval, _scrub_check(blobs, bucket))
    stops.push_async_callback(scrub.stop)
    scrub.start()
    services = Services(config, router, disk, blobs, expiry, scrub)
    if bucket is not None:
        services.uploads = UploadSweep(bucket)
        stops.push_async_callback(services.uploads.stop)
        services.uploads.start()
    await _follow_changes(services, stops)
    if config.access.enabled:  # its own listener: clients reach it, never rewriter.listen
        services.tokens = TokenServer(config, router)
        stops.push_async_callback(services.tokens.close)
        await services.tokens.start()
    return services


async def _follow_changes(services: Services, stops: contextlib.AsyncExitStack) -> None:
    """Images forgotten by other replicas, tags gone upstream, Artifactory's events: what changes the caches."""
    config, peers = services.config, services.blobs.peers
    if peers:
        services.replicas = ReplicaEvents(config.scale, f"replica {peers.me.url}", services.forgotten_elsewhere)
        stops.push_async_callback(services.replicas.close)
        services.replicas.start()
    if config.cache.forget_deleted_tags:
        for route in services.router.routes.values():
            route.manifests.on_tag_gone = services.tag_gone
    if config.webhooks.enabled:  # its own listener: Artifactory never reaches rewriter.listen
        services.webhooks = WebhookListener(config, services.router, drop_tag=services.drop_tag)
        stops.push_async_callback(services.webhooks.close)
        await services.webhooks.start()


def _open_bucket(s3: S3Config, stops: contextlib.AsyncExitStack) -> Bucket:
    bucket = Bucket(s3)
    stops.callback(bucket.close)
    return bucket


async def _start_blob_server(config: Config, router: Router, stats: Stats, disk: DiskWatch, bucket: Bucket | None,
                             stops: contextlib.AsyncExitStack) -> BlobServer:
    mirror, scale = config.mirror, config.scale
    blobs = BlobServer(router, config.cache, stats, mirror.verify_interval, storage=mirror.storage, disk=disk,
                       bucket=bucket)
    stops.push_async_callback(blobs.close)
    stops.push_async_callback(blobs.verifier.close)  # pushed last, so its checks end before the endpoint closes
    if scale.enabled:  # the other replicas read spools here too
        await blobs.start(scale.listen.host, scale.listen.port)
        blobs.share_with_peers(PeerCoordinator(scale, config.cache.spool_keep))
    else:  # the registry, on the address it reaches the addon at
        await blobs.start(config.rewriter.listen.host if config.rewriter.blob_redirect else "127.0.0.1")
    return blobs


def _scrub_check(blobs: BlobServer, bucket: Bucket | None) -> Callable[[str], Awaitable[Checked | None]]:
    """How the scrub hashes one blob: the file through the blob endpoint's verifier, or the bucket's object."""
    if bucket is None:
        return blobs.verifier.check_now
    return lambda digest: asyncio.to_thread(bucket.verify_blob, digest)


def _start_expiry(config: Config, stores: Stores, blobs: BlobServer, stops: contextlib.AsyncExitStack) -> Expiry:
    mirror, scale = config.mirror, config.scale
    # one file of last pulls per replica (replicas may share the storage), named by what the configuration
    # says of it, so that a restart (a new container's hostname) writes the same file
    replica = f"{scale.advertise}-{scale.listen.port}" if scale.enabled else "mirror"
    pulls = LastPulls(stores.pulls, replica)
    expiry = Expiry(stores.registry, mirror.max_age, mirror.max_bytes, pulls, in_flight=blobs.in_use,
                    tidy=stores.tidy)
    blobs.on_stored = expiry.stored
    expiry.start()
    stops.push_async_callback(expiry.stop)
    return expiry
