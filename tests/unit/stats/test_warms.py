"""The stats views of the registry's notifications (pulls by who pulled) and of the webhooks' warms: their HTML
tables and their Prometheus metrics, from the counters that feed them."""
from prometheus_client import CollectorRegistry, generate_latest

from registry_mirror.stats.counters import Stats
from registry_mirror.stats.warms import pull_metrics, pulls_html, warm_metrics, warming_html
from registry_mirror.warming.queue import WarmJob, WarmQueue
from tests.unit.support.clocks import Clock

DIGEST = "sha256:" + "a" * 64


def metrics(families) -> list[str]:
    """The exposition lines of `families`, as /metrics shows them."""
    class Collector:
        def collect(self):
            yield from families
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry).decode().splitlines()


def pulls() -> dict:
    stats = Stats()
    stats.pulled([("clients", "blob", "GET", 2000), ("clients", "manifest", "GET", 500),
                  ("clients", "manifest", "HEAD", 0), ("warming", "blob", "GET", 700)])
    return stats.snapshot()["registry_pulls"]


def webhooks(answers=None, error: str = "") -> dict:
    """A listener's snapshot: two warms done 1.5 s and 2 s after their events, one failed for good, one running
    and one queued; an event for a queued warm coalesced."""
    clock = Clock()
    queue = WarmQueue(attempts=1, clock=clock)
    for n in range(5):
        queue.submit(WarmJob(f"sha256:{n:064x}", ("team/app",)))
    queue.submit(WarmJob("sha256:" + "0" * 64, ("team/app",)))  # already queued: coalesced
    first, second, third = queue.take(), queue.take(), queue.take()
    clock.now += 1.5
    queue.finished(first, nbytes=3_000_000, blobs=3)
    clock.now += 0.5
    queue.finished(second, nbytes=1_200_000, blobs=2)
    queue.finished(third, error=error or "the mirror answered 500")
    queue.take()
    return {"listen": "0.0.0.0:8084", "answers": {"202": 6} if answers is None else answers,
            "warms": queue.snapshot()}


def test_the_pulls_table_has_a_row_per_puller_and_class():
    page = pulls_html(pulls())
    assert "<tr><th>clients</th><th>manifest</th><td>2</td><td>1</td><td>500 B</td></tr>" in page
    assert "<tr><th>clients</th><th>blob</th><td>1</td><td>0</td><td>2.0 KB</td></tr>" in page
    assert page.index("<th>clients</th><th>blob</th>") < page.index("<th>warming</th><th>blob</th>")
    assert "none yet" in pulls_html({}) and "<th>clients</th>" not in pulls_html({})


def test_the_pull_metrics_count_requests_and_bytes_by_puller_and_class():
    lines = metrics(pull_metrics(pulls()))
    for line in ('mirror_registry_pulls_total{by="clients",class="manifest"} 2.0',
                 'mirror_registry_pulls_total{by="warming",class="blob"} 1.0',
                 'mirror_registry_pull_bytes_total{by="clients",class="blob"} 2000.0',
                 'mirror_registry_pull_bytes_total{by="warming",class="blob"} 700.0'):
        assert line in lines, line


def test_the_warms_table_shows_the_queue_now_and_the_finished_warms():
    page = warming_html(webhooks())
    assert "Warms from Artifactory's webhooks (on 0.0.0.0:8084)" in page
    for cell in ('<td id="warms-queued">1</td>', '<td id="warms-running">1</td>', '<td id="warms-done">2</td>',
                 '<td id="warms-failed">1</td>'):
        assert cell in page
    assert "<td>4.2 MB</td><td>3.5 s</td><td>2.0 s</td>" in page  # bytes, time in all, the last warm's
    assert "Events answered, by status: 202: 6" in page and "the mirror answered 500" in page


def test_the_warms_table_before_any_warm_and_without_webhooks():
    fresh = {"listen": "0.0.0.0:8084", "answers": {}, "warms": WarmQueue().snapshot()}
    page = warming_html(fresh)
    assert '<td id="warms-done">0</td>' in page and "<td>none yet</td>" in page  # no last warm
    assert "Events answered, by status: none yet" in page and "last error:\nnone" in page
    assert warming_html(None) == ""  # webhooks off: no section at all


def test_what_an_event_or_the_listener_says_is_escaped():
    page = warming_html(webhooks(answers={"<b>": 1}, error="refused <script>alert(1)</script>"))
    assert "<script>" not in page and "refused &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;: 1" in page


def test_the_warm_metrics_by_state_outcome_and_status():
    lines = metrics(warm_metrics(webhooks(answers={"202": 6, "401": 1})))
    for line in ('mirror_warms{state="queued"} 1.0', 'mirror_warms{state="running"} 1.0',
                 'mirror_warms_ended_total{outcome="done"} 2.0', 'mirror_warms_ended_total{outcome="failed"} 1.0',
                 'mirror_webhook_answers_total{status="401"} 1.0', "mirror_warm_bytes_total 4.2e+06",
                 "mirror_warm_seconds_total 3.5", "mirror_warms_coalesced_total 1.0"):
        assert line in lines, line
