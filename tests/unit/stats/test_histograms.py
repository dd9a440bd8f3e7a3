"""Histograms a fleet adds up: cumulative buckets with `le` inclusive, their sum and count, per label values; the
upstream's answers by route and class and whole blob transfers by route, in /metrics."""
from registry_mirror.stats.counters import Stats
from registry_mirror.stats.histograms import ANSWER_BUCKETS, Histogram, Histograms
from registry_mirror.stats.views import prometheus_text
from tests.unit.support.clocks import Clock


def test_buckets_are_cumulative_and_a_value_on_a_bound_counts_in_it():
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(value)
    assert h.buckets() == [["0.1", 2], ["1", 4], ["+Inf", 5]] and h.total == 8.65


def test_each_label_set_has_its_own_histogram():
    hs = Histograms(ANSWER_BUCKETS)
    hs.observe(("upstream", "manifest-by-tag"), 0.02)
    hs.observe(("routes[0]", "token"), 3.0)
    assert [h["labels"] for h in hs.snapshot()] == [["routes[0]", "token"], ["upstream", "manifest-by-tag"]]


def test_answers_and_transfers_reach_the_metrics_by_route_and_class():
    stats = Stats(clock=Clock(1000.0))
    stats.upstream("manifest-by-tag", "GET", "app:1.0", 200, 500, 0.02, route="routes[0]")
    stats.upstream("token", "GET", "repository:app:pull", 200, 80, 0.3)
    stats.upstream("blob", "GET", "app@sha256:x", 200, 10_000_000, 4.0)  # a whole transfer
    stats.upstream("blob", "GET", "app@sha256:y", "error", 0, 9.0, "error")  # a failed one is no transfer time
    text = prometheus_text(stats.snapshot()).decode()
    assert 'mirror_upstream_answer_seconds_bucket{class="manifest-by-tag",le="0.025",route="routes[0]"} 1.0' in text
    assert 'mirror_upstream_answer_seconds_count{class="token",route="upstream"} 1.0' in text
    assert 'mirror_blob_transfer_seconds_bucket{le="2.5",route="upstream"} 0.0' in text
    assert 'mirror_blob_transfer_seconds_bucket{le="5",route="upstream"} 1.0' in text
    assert 'mirror_blob_transfer_seconds_count{route="upstream"} 1.0' in text
