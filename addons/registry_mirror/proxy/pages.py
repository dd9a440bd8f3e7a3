"""The mirror's own pages on reserved paths: the stats page, its JSON, /metrics, readiness, the registry's
notifications and a browser's favicon.

An addon of its own, listed before RegistryMirror in the entry script: mitmproxy calls `request` on its
addons in that order, and RegistryMirror leaves a flow that has a response alone, so a reserved path is
never classified as a registry request.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from mitmproxy import http

from registry_mirror.expiry.forget import TargetError, parse_target
from registry_mirror.expiry.last_pulls import served_pulls
from registry_mirror.proxy import notifications
from registry_mirror.proxy.addon import RegistryMirror
from registry_mirror.proxy.flow_dump import FlowDump
from registry_mirror.stats.metrics_listener import MetricsListener
from registry_mirror.stats.views import (
    FORGET_PATH,
    JSON_PATH,
    LOGS_PATH,
    METRICS_PATH,
    READY_PATH,
    STATS_PATH,
    prometheus_text,
    render_html,
)
from registry_mirror.tls import certs

log = logging.getLogger(__name__)

Page = Callable[[http.HTTPFlow], http.Response | Awaitable[http.Response]]

FAVICON_PATH = "/favicon.ico"  # a browser on the stats page asks for it; not a registry request


def certificate_state(cert_path: str, now: float) -> dict:
    """The mirror's certificate as clients see it: its expiry, and what to do about it when it is near or past."""
    try:
        not_after = certs.certificate_expiry(cert_path)
    except certs.CertError as e:
        return {"certificate": cert_path, "not_after": None, "problem": str(e)}
    problem = certs.expiry_problem(cert_path, not_after, now)
    return {"certificate": cert_path, "not_after": not_after, "problem": problem[1] if problem else ""}


def json_response(status: int, data: object, indent: int | None = None) -> http.Response:
    return http.Response.make(status, json.dumps(data, indent=indent).encode(), {"Content-Type": "application/json"})


class StatusPages:
    def __init__(self, mirror: RegistryMirror, dump: FlowDump | None = None) -> None:
        self.mirror, self.dump = mirror, dump
        self.listener: MetricsListener | None = None
        self.pages: dict[str, Page] = {
            STATS_PATH: self.stats_page, JSON_PATH: self.stats_json, METRICS_PATH: self.metrics,
            READY_PATH: self.ready, notifications.NOTIFY_PATH: self.notified, LOGS_PATH: self.log_report,
            FORGET_PATH: self.forget,
            FAVICON_PATH: lambda _flow: http.Response.make(204)}

    async def running(self) -> None:
        """The metrics listener, when configured: before the mirror's services (its health says 503 until
        they run), so a scrape never waits on them."""
        config = self.mirror.config
        if config is None or not config.metrics.enabled:
            return
        self.listener = MetricsListener(config, self.snapshot, self.mirror.started.is_set)
        await self.listener.start()

    async def done(self) -> None:
        if self.listener:
            await self.listener.close()

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if page := self.pages.get(flow.request.path):
            answer = page(flow)
            flow.response = answer if isinstance(answer, http.Response) else await answer

    def stats_page(self, _flow: http.HTTPFlow) -> http.Response:
        return http.Response.make(200, render_html(self.snapshot()).encode(),
                                  {"Content-Type": "text/html; charset=utf-8"})

    def stats_json(self, _flow: http.HTTPFlow) -> http.Response:
        return json_response(200, self.snapshot(), indent=1)

    def metrics(self, _flow: http.HTTPFlow) -> http.Response:
        return http.Response.make(200, prometheus_text(self.snapshot()), {"Content-Type": "text/plain; version=0.0.4"})

    def ready(self, _flow: http.HTTPFlow) -> http.Response:
        ready = self.mirror.started.is_set()
        return json_response(200 if ready else 503, {"ready": ready})

    def _with_secret(self, flow: http.HTTPFlow) -> tuple[int, str, Any]:
        """(status, reason, JSON body) of a POST that must carry the registry's notification secret, which is
        taken out of the flow: mitmweb and dumps never show it."""
        return notifications.check(
            flow.request.method, flow.request.headers.pop(notifications.SECRET_HEADER, ""), flow.request.content,
            self.mirror.notify_secret or "\0unset")

    def notified(self, flow: http.HTTPFlow) -> http.Response:
        """The registry's event: answered at once (it queues events in memory until then)."""
        services = self.mirror.services
        status, reason, envelope = self._with_secret(flow)
        if status != 202:
            log.warning("refused a notification: %s", reason)
        else:
            self.mirror.stats.pulled(served_pulls(envelope))
            if services:
                services.expiry.notified(envelope)
                services.blobs.verifier.notified(envelope)  # files the registry served itself: checked later
        return json_response(status, {"accepted": status == 202, "reason": reason})

    def log_report(self, flow: http.HTTPFlow) -> http.Response:
        """The supervisor's report of its log files (lines dropped on a full disk), with the registry's secret."""
        status, reason, report = self._with_secret(flow)
        try:
            files = {str(name): {"dropped_lines": int(v["dropped_lines"]), "last_error": str(v["last_error"])}
                     for name, v in report.items()} if status == 202 else None
        except (ValueError, TypeError, KeyError, AttributeError):
            status, reason, files = 400, "a JSON object of log files", None
        if files is not None:
            self.mirror.log_files = files
        return json_response(status, {"accepted": status == 202, "reason": reason})

    async def forget(self, flow: http.HTTPFlow) -> http.Response:
        """`artifactory-mirror forget`: {"image": "team/app:1.0", "dry_run": false}, with the registry's secret."""
        status, reason, body = self._with_secret(flow)
        if status != 202:
            return json_response(status, {"accepted": False, "reason": reason})
        if (services := self.mirror.services) is None:
            return json_response(503, {"accepted": False, "reason": "the mirror has not started"})
        try:
            target = parse_target(body["image"])
            dry_run = bool(body.get("dry_run", False))
        except (TargetError, TypeError, KeyError, AttributeError) as e:
            return json_response(400, {"accepted": False, "reason": str(e) or "a JSON object with image"})
        return json_response(200, await services.forget(target, dry_run))

    def snapshot(self) -> dict:
        """The stats, with the scale-out and storage state once the mirror runs them."""
        mirror, services = self.mirror, self.mirror.services
        if services is None:  # no routes yet: nothing says the upstream is up
            return {**self._add_tls(mirror.stats.snapshot((), ())), "started": False}
        snap = mirror.stats.snapshot(services.router.routes.values(), services.blobs.coalescer.transfers.values())
        snap["started"] = True
        if peers := services.blobs.peers:
            snap["scale"] = {"redis": str(peers.scale.redis), "this_replica": peers.me.url,
                             "redis_errors": peers.redis_errors, "last_redis_error": peers.last_error}
            if services.replicas:
                snap["scale"]["invalidations"] = services.replicas.snapshot()
        expiry, s3 = services.expiry, services.config.mirror.s3
        snap["storage"] = {**asdict(expiry.state), "max_bytes": expiry.max_bytes, "max_age_s": expiry.max_age,
                           "oldest_last_pull": expiry.pulls.oldest(), "where": expiry.store.name}
        if s3 is not None:
            snap["storage"]["bucket"] = {"name": s3.bucket, "endpoint": s3.endpoint or "AWS S3",
                                         "uploads_aborted": services.uploads.aborted if services.uploads else 0}
        if services.webhooks:
            snap["webhooks"] = services.webhooks.snapshot()
        if services.tokens:
            snap["access"] = services.tokens.snapshot()
        snap["stored_blobs"] = {**services.blobs.verifier.snapshot(), "scrub": asdict(services.scrub.state)}
        self._add_tls(snap)
        snap["disk"] = {**services.disk.snapshot(), "log_files": mirror.log_files,
                        "dump": self.dump.snapshot() if self.dump and self.dump.path else None}
        return snap

    def _add_tls(self, snap: dict) -> dict:
        """Adds the mirror's certificate state to `snap` when it serves TLS (configured, started or not)."""
        if (config := self.mirror.config) and config.mirror.tls:
            snap["tls"] = certificate_state(config.mirror.tls_cert, time.time())
        return snap
