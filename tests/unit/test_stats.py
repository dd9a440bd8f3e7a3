import json
import logging
from types import SimpleNamespace

from registry_mirror.health import UpstreamHealth
from registry_mirror.stats import Stats, percentile
from registry_mirror.stats_views import human_bytes, prometheus_text, render_html, summary_text


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def filled() -> tuple[Stats, UpstreamHealth]:
    stats = Stats(clock=Clock())
    stats.served("blob", "MISS", 1000)
    stats.served("blob", "COALESCED", 1000)
    stats.served("manifest-by-tag", "HIT", 500)
    stats.upstream("blob", "GET", "app@sha256:x", 200, 1000, 0.05)
    stats.upstream("token", "GET", "repository:app:pull", 200, 80, 0.05)
    stats.upstream("manifest-by-tag", "GET", "app:1.0", "timeout", 0, 5.0, "error")
    health = UpstreamHealth(wall_clock=Clock())
    health.failure("GET app:1.0: timed out <script>")
    return stats, health


def route(health: UpstreamHealth, url: str, label: str = "upstream", prefix: str = "", refreshes: int = 1):
    """What the snapshot reads of a routing.Route."""
    return SimpleNamespace(health=health, url=url,
                           upstream=SimpleNamespace(auth=SimpleNamespace(token_refreshes=refreshes)),
                           cfg=SimpleNamespace(label=label, match_prefix=prefix, match_ns=()))


def test_snapshot_counts_and_savings():
    stats, health = filled()
    snap = stats.snapshot([route(health, "https://art/x")])
    assert snap["served"]["blob"] == {"miss": {"requests": 1, "bytes": 1000},
                                      "coalesced": {"requests": 1, "bytes": 1000}}
    assert snap["bytes"] == {"served_to_registry": 2500, "fetched_from_upstream": 1080, "saved": 1420,
                             "from_other_replicas": 0}
    assert snap["upstream"]["requests"] == {"blob:200": 1, "manifest-by-tag:timeout": 1, "token:200": 1}
    assert snap["upstream"]["latency_ms"]["p50"] == 50.0  # a request with no answer has no latency
    assert json.loads(json.dumps(snap)) == snap


def test_snapshot_lists_every_route_with_its_own_health():
    stats, health = filled()
    team_a = route(UpstreamHealth(), "https://art/team-a", "routes[0]", "team-a", refreshes=2)
    snap = stats.snapshot([team_a, route(health, "https://art/x")])
    assert [(r["route"], r["prefix"], r["state"]) for r in snap["routes"]] == [("routes[0]", "team-a", "up"),
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
    assert "mirror_upstream_up 1.0" in text and 'mirror_upstream_latency_ms{quantile="p50"} 50.0' in text


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
    stats = Stats(clock=Clock())
    stats.upstream("manifest-by-tag", "GET", "app:1.0", 200, 500, 0.040)
    stats.upstream("blob", "HEAD", "app@sha256:x", 200, 0, 0.030)
    stats.upstream("blob", "GET", "app@sha256:y", 200, 160_000_000, 8.5)  # a layer's transfer
    stats.upstream("blob", "GET", "app@sha256:z", 404, 90, 0.0)  # recorded without a timing
    assert sorted(stats.latencies) == [0.030, 0.040]
