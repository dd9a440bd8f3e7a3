"""The mitmproxy addon: turns the stock registry's Docker Hub-style requests into the upstream's.

Each request is classified once (requests.classify). The ping is answered here; manifests, tags and blob
HEADs are answered by ManifestService (caches, stale-if-error, one upstream fetch for overlapping requests)
with `Response.make`; blob GETs get a 307 to the in-process blob endpoint (or, with
`rewriter.blob_redirect: false`, are routed there and streamed on by mitmproxy). The mirror's own pages
(stats, readiness, notifications) are another addon's, proxy/pages.py. Credentials never enter a flow: the
upstream client adds them, and the flow shows a redacted marker where they went.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from registry_mirror.blobs.access import TICKET_HEADER
from registry_mirror.blobs.answer import UPSTREAM_AUTH_HEADER
from registry_mirror.blobs.server import BlobServer
from registry_mirror.config import load as config_mod
from registry_mirror.manifests.service import UpstreamDown
from registry_mirror.oci.manifest_body import ManifestMismatch
from registry_mirror.oci.registry_requests import Kind, Refusal, RegistryRequest, classify
from registry_mirror.outcomes import Outcome
from registry_mirror.proxy import notifications
from registry_mirror.proxy.services import Services, start_services
from registry_mirror.responses import CACHE_HEADER, error_response, ping_response, small_response, upstream_status_error
from registry_mirror.routes.routing import Router
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.auth import AuthError
from registry_mirror.upstream.client import UpstreamError

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
        self.config: config_mod.Config | None = None  # loaded by `configure`
        self.services: Services | None = None  # built by `running` from that configuration
        self._stops = contextlib.AsyncExitStack()  # what `running` started, for `done` to stop
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
            if self.services is not None:  # routes, caches and the registry were built from the loaded one
                raise exceptions.OptionsError(
                    f"mirror_config: the running mirror was started with {self.services.config.source}; restart "
                    f"it (artifactory-mirror up) to use {path}")
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
        dump = ctx.options.mirror_dump.lstrip("+") if "mirror_dump" in ctx.options else ""
        folders = {"logs": ctx.options.mirror_log_dir, "dump": str(Path(dump).parent) if dump else None}
        self.services = await start_services(self.config, self.stats, folders, self._stops)
        self.notify_secret = notifications.notification_secret(self.config.mirror.storage)
        self.started.set()

    async def done(self) -> None:
        await self._stops.aclose()

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:  # answered already: a reserved page (proxy/pages.py)
            return
        req = classify(flow.request.method, flow.request.path)
        if isinstance(req, Refusal) or req.kind is Kind.PING:  # answered here, started or not
            flow.response = self._local_answer(flow, req)
        elif (services := await self._wait_until_started()) is None:
            flow.response = error_response(503, "UNAVAILABLE", "the mirror has not started; see its log")
        elif req.kind is Kind.BLOB and flow.request.method == "GET":
            self._to_blob_server(flow, req, services)
        else:
            flow.response = await self._small_exchange(flow, req, services)
        if flow.response is not None and flow.request.method == "HEAD":
            flow.response.raw_content = b""  # a HEAD answer carries no body; Content-Length stays

    async def _wait_until_started(self) -> Services | None:
        """What `running` has built (the routes, the blob endpoint); waits for it, up to a bound."""
        if self.config is None:  # no start-up is coming
            return None
        try:
            await asyncio.wait_for(self.started.wait(), STARTUP_WAIT)
        except TimeoutError:
            return None
        return self.services

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:  # mitmproxy calls this hook once a response's headers are in
            return
        if flow.metadata.get("mirror.kind") == Kind.BLOB.value and flow.request.method == "GET":
            flow.response.stream = True  # never hold a blob in memory, whatever stream_large_bodies says
            scheme = flow.response.headers.pop(UPSTREAM_AUTH_HEADER, "")
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

    def _to_blob_server(self, flow: http.HTTPFlow, req: RegistryRequest, services: Services) -> None:
        if services.config.rewriter.blob_redirect:
            flow.response = self._redirect_to_blob_server(flow, req, services.blobs, services.router)
        else:
            self._route_to_blob_server(flow, req, services.blobs, services.router)

    @staticmethod
    def _redirect_to_blob_server(flow: http.HTTPFlow, req: RegistryRequest, blobs: BlobServer,
                                 router: Router) -> http.Response:
        # The registry follows the redirect and reads the blob from the blob endpoint directly, which
        # sends it from the spool with sendfile: the bytes skip a Python hop (its cost: docs/benchmarks.md).
        location = blobs.redirect_url(flow.client_conn.sockname[0], req)
        upstream_url = router.for_request(req).upstream.url_for(req)
        return http.Response.make(307, b"", {"Location": location, CACHE_HEADER: "BLOB-ENDPOINT",
                                             "X-Mirror-Upstream-Url": upstream_url})

    @staticmethod
    def _route_to_blob_server(flow: http.HTTPFlow, req: RegistryRequest, blobs: BlobServer, router: Router) -> None:
        flow.metadata["mirror.kind"] = req.kind.value  # for responseheaders
        flow.metadata["mirror.upstream_url"] = router.for_request(req).upstream.url_for(req)
        host = blobs.address_for("127.0.0.1")
        flow.request.scheme, flow.request.host, flow.request.port = "http", host, blobs.port
        # a ticket, never the endpoint's key: a flow still in flight when mitmproxy stops is saved as it is
        flow.request.headers[TICKET_HEADER] = blobs.tickets.issue(req)
        flow.request.headers.pop("Authorization", None)

    async def _small_exchange(self, flow: http.HTTPFlow, req: RegistryRequest,
                              services: Services) -> http.Response:
        method, started = flow.request.method, time.monotonic()
        what = f"{req.kind.value} {req.name}:{req.reference}" if req.reference else f"{req.kind.value} {req.name}"
        route = services.router.for_request(req)
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
        prefetch = services.blobs.prefetch
        if prefetch and req.kind in MANIFEST_KINDS and method == "GET" and answer.status == 200 \
                and answer.outcome is not Outcome.STALE:
            prefetch.manifest_served(req.name, route, answer.body, answer.headers.get("Content-Type", ""))
        resp = small_response(answer.status, answer.headers, answer.body, is_head=method == "HEAD")
        resp.headers[CACHE_HEADER] = answer.outcome
        return resp

    @staticmethod
    def _show_upstream(flow: http.HTTPFlow, upstream_url: str, scheme: str) -> None:
        """Make the flow show where the request really went, with the credential as a redacted marker."""
        flow.request.url = upstream_url
        flow.request.headers.pop("Authorization", None)
        if scheme:
            flow.request.headers["Authorization"] = f"{scheme} {REDACTED}"
