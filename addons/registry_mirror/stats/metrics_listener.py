"""The metrics listener (`metrics.listen`): `/metrics` for a fleet's Prometheus and `/healthz` for a load balancer,
and nothing else. `rewriter.listen` answers with the upstream's credential and stays on loopback; this one may face
the data center's network. TLS with the mirror's certificate when `metrics.tls`, reloaded on renewal.

`/healthz` is 200 once the mirror has started, whatever the upstream's state: a mirror serving its cached images
while Artifactory is down is healthy, and a balancer that took it out would only move the same outage elsewhere.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from registry_mirror.config.load import Config
from registry_mirror.stats.views import METRICS_PATH, prometheus_text
from registry_mirror.tls.served_cert import ServedCert

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"


class MetricsListener:
    def __init__(self, cfg: Config, snapshot: Callable[[], dict], started: Callable[[], bool]):
        """`snapshot`: the stats as the stats page has them; `started`: whether the mirror serves yet."""
        if cfg.metrics.listen is None:  # config/load.py: no listener without an address
            raise ValueError("a metrics listener needs metrics.listen")
        self.cfg, self.listen = cfg, cfg.metrics.listen
        self.snapshot, self.started = snapshot, started
        self.port = 0
        self.served_cert: ServedCert | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(METRICS_PATH, self.metrics)
        app.router.add_get(HEALTH_PATH, self.health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=20)
        await self._runner.setup()
        mirror = self.cfg.mirror
        if self.cfg.metrics.tls:
            self.served_cert = ServedCert(mirror.tls_cert, mirror.tls_key, "metrics listener")
        await web.TCPSite(self._runner, self.listen.host, self.listen.port,
                          ssl_context=self.served_cert.context if self.served_cert else None).start()
        self.port = self._runner.addresses[0][1]
        if self.served_cert:
            self.served_cert.start()
        log.info("metrics listener on %s://%s (%s, %s)", "https" if self.served_cert else "http", self.listen,
                 METRICS_PATH, HEALTH_PATH)

    async def close(self) -> None:
        if self.served_cert:
            await self.served_cert.stop()
        if self._runner:
            await self._runner.cleanup()

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=prometheus_text(self.snapshot()),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def health(self, _request: web.Request) -> web.Response:
        started = self.started()
        return web.json_response({"healthy": started, "reason": "" if started else "the mirror is starting"},
                                 status=200 if started else 503)
