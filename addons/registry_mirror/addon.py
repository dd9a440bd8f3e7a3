"""The mitmproxy addon: turns the stock registry's Docker Hub-style requests into the upstream's.

Each request is classified once (requests.classify). The ping is answered here; manifests, tags and blob
HEADs are answered by ManifestService (caches, stale-if-error, one upstream fetch for overlapping requests)
with `Response.make`; blob GETs get a 307 to the in-process blob endpoint (or, with
`rewriter.blob_redirect: false`, are routed there and streamed on by mitmproxy). The mirror's own pages
(stats, readiness, notifications) are another addon's, pages.py. Credentials never enter a flow: the
upstream client adds them, and the flow shows a redacted marker where they went.
"""
from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from . import config as config_mod
from . import notifications
from .blob_access import TICKET_HEADER
from .blob_answer import AUTH_HEADER
from .blob_server import BlobServer
from .disk import DiskWatch
from .expiry import Expiry
from .forget import Target
from .manifest_body import ManifestMismatch
from .manifests import UpstreamDown
from .outcomes import Outcome
from .peers import PeerCoordinator
from .pulls import LastPulls, pulls_folder
from .replica_events import Invalidation, ReplicaEvents, forgotten_digests, told_text
from .requests import Kind, Refusal, RegistryRequest, classify
from .responses import CACHE_HEADER, error_response, ping_response, small_response, upstream_status_error
from .routing import Router
from .scrub import Scrub
from .stats import Stats
from .upstream import UpstreamError
from .upstream_auth import AuthError
from .webhooks import WebhookListener

log = logging.getLogger(__name__)

REDACTED = "<redacted by artifactory-mirror>"
MANIFEST_KINDS = (Kind.MANIFEST_BY_TAG, Kind.MANIFEST_BY_DIGEST)
# options the mirror cannot work without: with eager connects mitmproxy dials the reverse target before the
# addon answers, and a failed dial drops the local answer; an unstreamed body is held whole in memory
REQUIRED_OPTIONS = {"connection_strategy": "lazy", "stream_large_bodies": "1m"}
# mitmproxy listens before it runs the addons' `running` hooks; a request in between waits this long
STARTUP_WAIT = 30.0


class RegistryMirror:
    def __init__(self) -> None:
        self.config: config_mod.Config | None = None
        self.router: Router | None = None
        self.blobs: BlobServer | None = None
        self.expiry: Expiry | None = None
        self.webhooks: WebhookListener | None = None
        self.disk: DiskWatch | None = None
        self.scrub: Scrub | None = None
        self.replicas: ReplicaEvents | None = None  # scale-out: tells the others what this one forgot, and back
        self.log_files: dict = {}  # the supervisor's report of its log files: lines dropped, last error
        self.notify_secret = ""
        self.stats = Stats()
        self.started = asyncio.Event()

    def load(self, loader) -> None:
        loader.add_option("mirror_config", str, "",
                          f"Path of the mirror's YAML configuration (default: ${config_mod.ENV_PATH} or "
                          f"./{config_mod.DEFAULT_PATH}).")
        loader.add_option("mirror_log_dir", str, "", "The folder of the processes' logs, whose free space the "
                                                     "stats page shows (artifactory-mirror up sets it).")

    def configure(self, updated: set[str]) -> None:
        if "mirror_config" in updated:
            path = config_mod.config_path(ctx.options.mirror_config)
            if self.router is not None:  # routes, caches and the registry were built from the loaded one
                raise exceptions.OptionsError(
                    f"mirror_config: the running mirror was started with {self.config.source}; restart it "
                    f"(artifactory-mirror up) to use {path}")
            try:
                self.config = config_mod.load(path)
            except config_mod.ConfigError as e:
                raise exceptions.OptionsError(f"mirror_config {path}: {e}") from e
            up = self.config.upstream
            log.info("mirror configured from %s: upstream %s, prefix %s, %d more routes", path, up.origin,
                     up.prefix, len(self.config.routes))
        for name, value in REQUIRED_OPTIONS.items():
            if name in ctx.options and getattr(ctx.options, name) != value:
                ctx.options.update(**{name: value})

    async def running(self) -> None:
        if self.config is None:
            return
        self.stats = Stats(self.config.rewriter.log_format)
        self.router = Router(self.config, self.stats)
        await self.router.start()
        mirror, cache = self.config.mirror, self.config.cache
        dump = ctx.options.mirror_dump.lstrip("+") if "mirror_dump" in ctx.options else ""
        self.disk = DiskWatch(mirror.min_free, {"storage": mirror.storage,
                                                "spool": cache.spool_dir or tempfile.gettempdir(),
                                                "logs": ctx.options.mirror_log_dir,
                                                "dump": str(Path(dump).parent) if dump else None})
        self.blobs = BlobServer(self.router, cache, self.stats, mirror.verify_interval, storage=mirror.storage,
                                disk=self.disk)
        scale = self.config.scale
        if scale.enabled:  # the other replicas read spools here too
            await self.blobs.start(scale.listen.host, scale.listen.port)
            peers = PeerCoordinator(scale, self.config.cache.spool_keep)
            self.blobs.share_with_peers(peers)
            self.replicas = ReplicaEvents(scale, f"replica {peers.me.url}", self._forgotten_elsewhere)
            self.replicas.start()
        else:  # the registry, on the address it reaches the addon at
            await self.blobs.start(self.config.rewriter.listen.host if self.config.rewriter.blob_redirect
                                   else "127.0.0.1")
        self.expiry = self._start_expiry()
        self.scrub = Scrub(Path(mirror.storage), mirror.scrub_interval, self.blobs.verifier.check_now)
        self.scrub.start()
        if self.config.cache.forget_deleted_tags:
            for route in self.router.routes.values():
                route.manifests.on_tag_gone = self.tag_gone
        if self.config.webhooks.enabled:  # its own listener: Artifactory never reaches rewriter.listen
            self.webhooks = WebhookListener(self.config, self.router, drop_tag=self.drop_tag)
            await self.webhooks.start()
        self.started.set()

    def _start_expiry(self) -> Expiry:
        mirror = self.config.mirror
        self.notify_secret = notifications.notification_secret(mirror.storage)
        # one file of last pulls per replica (replicas may share the storage), named by what the configuration
        # says of it, so that a restart (a new container's hostname) writes the same file
        scale = self.config.scale
        replica = f"{scale.advertise}-{scale.listen.port}" if scale.enabled else "mirror"
        pulls = LastPulls(pulls_folder(mirror.storage), replica)
        expiry = Expiry(mirror.storage, mirror.max_age, mirror.max_bytes, pulls,
                        in_flight=self.blobs.in_use)
        self.blobs.on_stored = expiry.stored
        expiry.start()
        return expiry

    async def forget(self, target: Target, dry_run: bool = False) -> dict:
        """Remove an image from the storage and every route's caches (forget.py), and tell the other replicas to
        drop it from theirs; what went, or would."""
        plan = await self.expiry.forget(target, dry_run)
        digests = forgotten_digests(target, (r.image.digest for r in plan.removals))
        done = {"target": str(target), "dry_run": dry_run, "bytes": plan.bytes_freed, "blobs": len(plan.blobs),
                "images": [f"{r.image.repository}@{r.image.digest}" for r in plan.removals], "cache_entries": 0,
                "other_replicas": None, "replicas": None}
        if dry_run:
            return done
        done["cache_entries"] = self._drop_cached(target.repository, target.tag, digests)
        if self.replicas:
            done["other_replicas"] = await self.replicas.publish(target.repository, target.tag, digests)
            done["replicas"] = told_text(done["other_replicas"], self.config.cache)
        log.warning("forgot %s: %d images, %d blobs (%d bytes), %d cache entries%s", target, len(plan.removals),
                    len(plan.blobs), plan.bytes_freed, done["cache_entries"],
                    f"; {done['replicas']}" if done["replicas"] else "")
        return done

    def _drop_cached(self, repository: str, tag: str | None, digests: frozenset[str]) -> int:
        """Drop an image from every route's caches; how many entries went."""
        return sum(route.manifests.forget(repository, tag, digests) for route in self.router.routes.values())

    def _forgotten_elsewhere(self, inv: Invalidation) -> int:
        """Another replica forgot it and removed it from the shared storage: only the caches here are left."""
        return self._drop_cached(inv.repository, inv.tag, inv.digests)

    async def done(self) -> None:
        if self.webhooks:
            await self.webhooks.close()
        if self.replicas:
            await self.replicas.close()
        if self.scrub:
            await self.scrub.stop()
        if self.expiry:
            await self.expiry.stop()
        if self.blobs:
            await self.blobs.verifier.close()
            await self.blobs.close()
        if self.router:
            await self.router.close()

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:  # answered already: a reserved page (pages.py)
            return
        req = classify(flow.request.method, flow.request.path)
        if isinstance(req, Refusal) or req.kind is Kind.PING:  # answered here, started or not
            flow.response = self._local_answer(flow, req)
        elif not await self._wait_until_started():
            flow.response = error_response(503, "UNAVAILABLE", "the mirror has not started; see its log")
        elif req.kind is Kind.BLOB and flow.request.method == "GET":
            self._to_blob_server(flow, req)
        else:
            flow.response = await self._small_exchange(flow, req)
        if flow.response is not None and flow.request.method == "HEAD":
            flow.response.raw_content = b""  # a HEAD answer carries no body; Content-Length stays

    async def _wait_until_started(self) -> bool:
        """True once `running` has set up the routes and the blob endpoint; waits for it, up to a bound."""
        if self.config is None:
            return False
        try:
            await asyncio.wait_for(self.started.wait(), STARTUP_WAIT)
        except TimeoutError:
            return False
        return True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("mirror.kind") == Kind.BLOB.value and flow.request.method == "GET":
            flow.response.stream = True  # never hold a blob in memory, whatever stream_large_bodies says
            scheme = flow.response.headers.pop(AUTH_HEADER, "")
            self._show_upstream(flow, flow.metadata["mirror.upstream_url"], scheme)
            flow.request.headers.pop(TICKET_HEADER, None)

    def error(self, flow: http.HTTPFlow) -> None:
        # before mitmproxy's Save (script addons come first), which writes a failed flow to a `-w` dump as it is
        flow.request.headers.pop(TICKET_HEADER, None)

    def _local_answer(self, flow: http.HTTPFlow, req: RegistryRequest | Refusal) -> http.Response:
        if isinstance(req, Refusal):
            log.info("refused %s %s: %s", flow.request.method, flow.request.path[:200], req.message)
            self.stats.served("other", Outcome.REFUSED, 0)
            return error_response(req.status, req.code, req.message)
        self.stats.served("ping", Outcome.LOCAL, 0)
        return ping_response()

    def _to_blob_server(self, flow: http.HTTPFlow, req: RegistryRequest) -> None:
        if self.config.rewriter.blob_redirect:
            flow.response = self._redirect_to_blob_server(flow, req)
        else:
            self._route_to_blob_server(flow, req)

    def _redirect_to_blob_server(self, flow: http.HTTPFlow, req: RegistryRequest) -> http.Response:
        # The registry follows the redirect and reads the blob from the blob endpoint directly, which
        # sends it from the spool with sendfile: the bytes skip a Python hop (about 1 CPU-second per GB).
        location = self.blobs.redirect_url(flow.client_conn.sockname[0], req)
        upstream_url = self.router.for_request(req).upstream.url_for(req)
        return http.Response.make(307, b"", {"Location": location, CACHE_HEADER: "BLOB-ENDPOINT",
                                             "X-Mirror-Upstream-Url": upstream_url})

    def _route_to_blob_server(self, flow: http.HTTPFlow, req: RegistryRequest) -> None:
        flow.metadata["mirror.kind"] = req.kind.value  # for responseheaders
        flow.metadata["mirror.upstream_url"] = self.router.for_request(req).upstream.url_for(req)
        host = self.blobs.address_for("127.0.0.1")
        flow.request.scheme, flow.request.host, flow.request.port = "http", host, self.blobs.port
        # a ticket, never the endpoint's key: a flow still in flight when mitmproxy stops is saved as it is
        flow.request.headers[TICKET_HEADER] = self.blobs.tickets.issue(req)
        flow.request.headers.pop("Authorization", None)

    async def _small_exchange(self, flow: http.HTTPFlow, req: RegistryRequest) -> http.Response:
        method, started = flow.request.method, time.monotonic()
        what = f"{req.kind.value} {req.name}:{req.reference}" if req.reference else f"{req.kind.value} {req.name}"
        route = self.router.for_request(req)
        try:
            answer = await route.manifests.answer(req, flow.request.headers, method)
        except (UpstreamError, AuthError, ManifestMismatch, UpstreamDown) as e:
            log.warning("%s %s failed: %s", method, what, e)
            self.stats.served(req.kind.value, Outcome.ERROR, 0)
            return error_response(503, "UNAVAILABLE", str(e))
        stale = f" (stale, {answer.headers['X-Mirror-Stale-Age']} s old)" if answer.outcome is Outcome.STALE else ""
        log.info("%s %s %s -> %d %d bytes (%.0f ms)%s", answer.outcome, method, what, answer.status,
                 len(answer.body), (time.monotonic() - started) * 1000, stale)
        self.stats.served(req.kind.value, answer.outcome if answer.status < 400 else Outcome.ERROR,
                          0 if method == "HEAD" else len(answer.body))
        if answer.outcome.cached:  # mitmweb: answered from the mirror's caches, nothing went upstream
            flow.marked = ":floppy_disk:"
            flow.comment = f"answered by artifactory-mirror from its cache ({answer.outcome})"
        else:
            self._show_upstream(flow, route.upstream.url_for(req), answer.auth_scheme)
        mapped = upstream_status_error(answer.status, what)
        if mapped:
            return error_response(*mapped)
        if self.blobs.prefetch and req.kind in MANIFEST_KINDS and method == "GET" and answer.status == 200 \
                and answer.outcome is not Outcome.STALE:
            self.blobs.prefetch.manifest_served(req.name, route, answer.body, answer.headers.get("Content-Type", ""))
        resp = small_response(answer.status, answer.headers, answer.body, is_head=method == "HEAD")
        resp.headers[CACHE_HEADER] = answer.outcome
        return resp

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

    @staticmethod
    def _show_upstream(flow: http.HTTPFlow, upstream_url: str, scheme: str) -> None:
        """Make the flow show where the request really went, with the credential as a redacted marker."""
        flow.request.url = upstream_url
        flow.request.headers.pop("Authorization", None)
        if scheme:
            flow.request.headers["Authorization"] = f"{scheme} {REDACTED}"
