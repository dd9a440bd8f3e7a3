import asyncio
import json
import logging
from types import SimpleNamespace

import pytest

from registry_mirror.config.load import parse
from registry_mirror.oci.registry_requests import Kind, RegistryRequest
from registry_mirror.stats.counters import Stats, percentile
from registry_mirror.stats.views import human_bytes, prometheus_text, render_html, summary_text
from registry_mirror.upstream.auth import AuthError
from registry_mirror.upstream.client import Upstream, UpstreamError
from registry_mirror.upstream.health import UpstreamHealth
from registry_mirror.upstream.slots import TransferSlots
from tests.unit.support.clocks import Clock


def filled() -> tuple[Stats, UpstreamHealth]:
    stats = Stats(clock=Clock(1000.0))
    stats.served("blob", "MISS", 1000)
    stats.served("blob", "COALESCED", 1000)
    stats.served("manifest-by-tag", "HIT", 500)
    stats.upstream("blob", "GET", "app@sha256:x", 200, 1000, 0.05)
    stats.upstream("token", "GET", "repository:app:pull", 200, 80, 0.05)
    stats.upstream("manifest-by-tag", "GET", "app:1.0", "timeout", 0, 5.0, "error")
    # the registry's notifications: clients pulled 2500 bytes (from its storage too), a warm 700
    stats.pulled([("clients", "blob", "GET", 2000), ("clients", "manifest", "GET", 500),
                  ("clients", "manifest", "HEAD", 0), ("warming", "blob", "GET", 700)])
    health = UpstreamHealth(wall_clock=Clock(1000.0))
    health.failure("GET app:1.0: timed out <script>")
    return stats, health


def route(health: UpstreamHealth, url: str, label: str = "upstream", prefix: str = "", refreshes: int = 1):
    """What the snapshot reads of a routing.Route."""
    return SimpleNamespace(health=health, url=url,
                           upstream=SimpleNamespace(auth=SimpleNamespace(token_refreshes=refreshes)),
                           blob_slots=TransferSlots(256, 300),
                           cfg=SimpleNamespace(label=label, match_prefix=prefix, match_ns=()))


def test_snapshot_counts_and_savings():
    stats, health = filled()
    snap = stats.snapshot([route(health, "https://art/x")])
    assert snap["served"]["blob"] == {"miss": {"requests": 1, "bytes": 1000},
                                      "coalesced": {"requests": 1, "bytes": 1000}}
    assert snap["bytes"] == {"served_to_registry": 2500, "fetched_from_upstream": 1080, "served_to_clients": 2500,
                             "served_to_warming": 700, "saved": 1420, "from_other_replicas": 0}
    assert snap["registry_pulls"] == {"clients": {"blob": {"requests": 1, "heads": 0, "bytes": 2000},
                                                  "manifest": {"requests": 2, "heads": 1, "bytes": 500}},
                                      "warming": {"blob": {"requests": 1, "heads": 0, "bytes": 700}}}
    assert snap["upstream"]["requests"] == {"blob:200": 1, "manifest-by-tag:timeout": 1, "token:200": 1}
    assert snap["upstream"]["latency_ms"]["p50"] == 50.0  # a request with no answer has no latency
    assert json.loads(json.dumps(snap)) == snap


def test_snapshot_lists_every_route_with_its_own_health():
    stats, health = filled()
    team_a = route(UpstreamHealth(), "https://art/team-a", "routes[0]", "team-a", refreshes=2)
    snap = stats.snapshot([team_a, route(health, "https://art/x")])
    # team-a's health has seen no exchange yet: unknown, not up
    assert [(r["route"], r["prefix"], r["state"]) for r in snap["routes"]] == [("routes[0]", "team-a", "unknown"),
                                                                             ("upstream", "", "up")]
    assert snap["routes"][1]["consecutive_failures"] == 1 and snap["routes"][0]["consecutive_failures"] == 0
    assert snap["routes"][1]["last_error_at"] == snap["upstream"]["last_error_at"] == 1000.0  # an epoch, shown as such
    assert snap["upstream"]["url"] == "https://art/x" and snap["upstream"]["token_refreshes"] == 3


def test_percentile():
    assert percentile([], 0.5) is None
    assert percentile([1, 2, 3, 4], 0.5) == 3 and percentile([1, 2, 3, 4], 0.99) == 4


def test_html_escapes_and_refreshes():
    stats, health = filled()
    page = render_html(stats.snapshot([route(health, "https://art/<x>")]))
    assert 'http-equiv="refresh"' in page and "&lt;script&gt;" in page and "<script>" not in page
    assert "https://art/&lt;x&gt;" in page and ">coalesced<" in page


def test_prometheus_exposition():
    stats, health = filled()
    text = prometheus_text(stats.snapshot([route(health, "u")])).decode()
    assert 'mirror_requests_total{class="blob",outcome="miss"} 1.0' in text
    assert 'mirror_upstream_requests_total{class="manifest-by-tag",status="timeout"} 1.0' in text
    assert "mirror_upstream_up 1.0" in text and 'mirror_upstream_latency_seconds{quantile="0.5"} 0.05' in text
    assert 'mirror_registry_pulls_total{by="clients",class="manifest"} 2.0' in text
    assert 'mirror_registry_pull_bytes_total{by="warming",class="blob"} 700.0' in text


def test_warms_on_the_page_and_in_metrics():
    stats, health = filled()
    snap = stats.snapshot([route(health, "u")])
    snap["webhooks"] = {"listen": "0.0.0.0:8084", "answers": {"202": 3, "401": 1},
                        "warms": {"queued": 1, "running": 1, "done": 2, "failed": 1, "retries": 2, "coalesced": 4,
                                  "refused": 0, "bytes": 4_200_000, "blobs": 8, "seconds": 3.5, "last_seconds": 1.25,
                                  "last_error": "the mirror answered <500>"}}
    page = render_html(snap)
    assert 'id="warms-done">2<' in page and "1.2 s" in page and "&lt;500&gt;" in page and "202: 3" in page
    assert "Pulls the registry served" in page and 'id="served-to-clients">2.5 KB<' in page
    text = prometheus_text(snap).decode()
    assert 'mirror_warms{state="queued"} 1.0' in text and 'mirror_warms_ended_total{outcome="failed"} 1.0' in text
    assert "mirror_warm_bytes_total 4.2e+06" in text and 'mirror_webhook_answers_total{status="401"} 1.0' in text
    assert "warms: 1 queued, 1 running, 2 done, 1 failed" in summary_text(snap)


def test_summary_and_units():
    stats, health = filled()
    text = summary_text(stats.snapshot([route(health, "u")]))
    assert "upstream u: UP" in text and "WAN saved 1.4 KB" in text
    assert human_bytes(999) == "999 B" and human_bytes(230_700_000) == "230.7 MB" and human_bytes(None) == "?"


def test_exchange_log_lines_text_and_json(caplog):
    with caplog.at_level(logging.INFO, logger="registry_mirror.exchanges"):
        Stats().upstream("blob", "GET", "app@d", 200, 10, 0.002)
        Stats(log_format="json").upstream("token", "GET", "repository:app:pull", 401, 0, 0.001)
    text, js = caplog.messages
    assert text == "class=blob method=GET what=app@d outcome=miss status=200 bytes=10 ms=2.0"
    assert json.loads(js) == {"class": "token", "method": "GET", "what": "repository:app:pull", "outcome": "miss",
                              "status": 401, "bytes": 0, "ms": 1.0}


def test_latency_is_the_upstreams_answers_not_blob_transfers():
    stats = Stats(clock=Clock(1000.0))
    stats.upstream("manifest-by-tag", "GET", "app:1.0", 200, 500, 0.040)
    stats.upstream("blob", "HEAD", "app@sha256:x", 200, 0, 0.030)
    stats.upstream("blob", "GET", "app@sha256:y", 200, 160_000_000, 8.5)  # a layer's transfer
    stats.upstream("blob", "GET", "app@sha256:z", 404, 90, 0.0)  # recorded without a timing
    assert sorted(stats.latencies) == [0.030, 0.040]


def test_integrity_counters_in_the_snapshot_page_metrics_and_summary():
    stats, health = filled()
    snap = stats.snapshot([route(health, "u")])
    assert snap["integrity"] == {"bodies_cut_short": 0, "cache_dropped_inconsistent": 0}
    assert "integrity:" not in summary_text(snap)  # nothing to report
    stats.body_cut_short()
    stats.body_cut_short()
    stats.dropped_inconsistent(3)
    snap = stats.snapshot([route(health, "u")])
    assert snap["integrity"] == {"bodies_cut_short": 2, "cache_dropped_inconsistent": 3}
    page = render_html(snap)
    assert '<td id="bodies-cut-short">2</td>' in page and '<td id="cache-dropped-inconsistent">3</td>' in page
    text = prometheus_text(snap).decode()
    assert "\nmirror_bodies_cut_short_total 2.0\n" in text
    assert "\nmirror_cache_dropped_inconsistent_total 3.0\n" in text
    assert "integrity: 2 upstream bodies cut short, 3 cached answers" in summary_text(snap)


async def raw_server(answer: bytes) -> tuple[asyncio.Server, int]:
    """Answers every request with `answer` (headers only, or a broken response), then closes."""
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


OVER_CAP = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
GARBAGE = b"HTTP/1.1 200 OK\r\nContent-Length: not-a-number\r\n\r\n"


async def upstream_exchange(answer: bytes, token: bool = False) -> tuple[Exception, Stats]:
    """The error of a manifest GET (or a token fetch) from an upstream answering `answer`, and the Stats."""
    server, port = await raw_server(answer)
    stats = Stats()
    cfg = parse({"upstream": {"url": f"http://127.0.0.1:{port}", "repository": "r", "anonymous": True,
                              "retries": 0}}).upstream
    upstream = Upstream(cfg, stats)
    await upstream.start()
    try:
        with pytest.raises((UpstreamError, AuthError)) as e:
            if token:
                await upstream._fetch_token(f"http://127.0.0.1:{port}/token", {"scope": "s"}, None)
            else:
                await upstream.fetch_small("GET", RegistryRequest(Kind.MANIFEST_BY_TAG, "app", "1.0"), {})
        return e.value, stats
    finally:
        await upstream.close()
        server.close()


@pytest.mark.parametrize("token", [False, True])
async def test_a_small_body_over_its_cap_is_counted_as_cut_short(token):
    error, stats = await upstream_exchange(OVER_CAP, token)
    assert isinstance(error, AuthError if token else UpstreamError) and "cap" in str(error)
    assert stats.bodies_cut_short == 1
    assert stats.snapshot()["integrity"]["bodies_cut_short"] == 1


@pytest.mark.parametrize("token", [False, True])
async def test_a_broken_answer_is_not_a_body_cut_short(token):
    _, stats = await upstream_exchange(GARBAGE, token)
    assert stats.bodies_cut_short == 0
