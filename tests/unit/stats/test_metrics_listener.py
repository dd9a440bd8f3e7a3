"""The metrics listener serves /metrics and /healthz and nothing else, over TLS when asked."""
import ssl
from dataclasses import replace

import aiohttp
import pytest

from registry_mirror.config.load import Address, parse
from registry_mirror.stats.metrics_listener import HEALTH_PATH, MetricsListener
from registry_mirror.stats.views import METRICS_PATH
from registry_mirror.tls import certs
from tests.unit.stats.test_counters import filled, route


def config(tmp_path, tls: bool):
    certs.ensure_self_signed(str(tmp_path / "mirror.crt"), str(tmp_path / "mirror.key"))
    cfg = parse({"upstream": {"url": "https://art.example.com", "repository": "r", "anonymous": True},
                 "mirror": {"tls_cert": str(tmp_path / "mirror.crt"), "tls_key": str(tmp_path / "mirror.key")},
                 "metrics": {"listen": "127.0.0.1:9464", "tls": tls}}, base_dir=tmp_path)
    return replace(cfg, metrics=replace(cfg.metrics, listen=Address("127.0.0.1", 0)))  # a free port


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_metrics_and_health_and_nothing_else(tmp_path, tls):
    stats, health = filled()
    started = [False]
    listener = MetricsListener(config(tmp_path, tls), lambda: stats.snapshot([route(health, "https://art/x")]),
                               lambda: started[0])
    await listener.start()
    context = ssl.create_default_context(cafile=str(tmp_path / "mirror.crt")) if tls else None
    base = f"{'https' if tls else 'http'}://127.0.0.1:{listener.port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + METRICS_PATH, ssl=context) as resp:
                text = await resp.text()
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                assert "mirror_upstream_up 1.0" in text and "mirror_requests_total{" in text
            async with session.get(base + HEALTH_PATH, ssl=context) as resp:
                assert resp.status == 503 and (await resp.json())["reason"] == "the mirror is starting"
            started[0] = True
            async with session.get(base + HEALTH_PATH, ssl=context) as resp:
                assert resp.status == 200 and (await resp.json())["healthy"] is True
            for path in ("/_mirror/stats.json", "/_mirror/forget", "/v2/"):  # never the rewriter's pages
                async with session.get(base + path, ssl=context) as resp:
                    assert resp.status == 404
    finally:
        await listener.close()
