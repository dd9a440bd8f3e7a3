"""The stored blobs' checks on the stats page, in /metrics and in `status`."""
from prometheus_client import CollectorRegistry, generate_latest

from registry_mirror.blobs.stored_verifier import BlobVerifier
from registry_mirror.stats.blob_checks import stored_blob_metrics, stored_blobs_html, stored_blobs_summary

DIGEST = "sha256:" + "ab" * 32


def snapshot(mismatch: bool) -> dict:
    snap = BlobVerifier(None, 3600).snapshot()
    snap.update(verified=7, verified_bytes=2048, mismatches=int(mismatch), quarantined=int(mismatch), queued=2)
    if mismatch:
        snap["last_mismatch"] = {"digest": DIGEST, "at": 1_800_000_000.0, "found": "sha256:" + "cd" * 32,
                                 "by": "pulled", "moved_to": "/s/docker/registry/v2/quarantine/x<y>"}
    return snap


def metrics_text(snap: dict) -> str:
    class Collector:
        def collect(self):
            yield from stored_blob_metrics(snap)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry).decode()


def test_the_counters_are_prometheus_metrics_by_the_mirrors_convention():
    text = metrics_text(snapshot(mismatch=True))
    for line in ("mirror_stored_blobs_verified_total 7.0", "mirror_stored_blobs_verified_bytes_total 2048.0",
                 "mirror_stored_blob_mismatches_total 1.0", "mirror_stored_blobs_quarantined_total 1.0",
                 "mirror_stored_blob_checks_skipped_total 0.0", "mirror_stored_blob_checks_queued 2.0",
                 "mirror_stored_blob_last_mismatch_timestamp_seconds 1.8e+09"):
        assert line in text.splitlines(), line
    assert "last_mismatch_timestamp" not in metrics_text(snapshot(mismatch=False))


def test_the_page_shows_the_last_mismatch_escaped():
    page = stored_blobs_html(snapshot(mismatch=True))
    assert '<td id="stored-mismatches">1</td>' in page and f"<code>{DIGEST}</code> at 2027-01-15 08:00:00 UTC" in page
    assert "moved to /s/docker/registry/v2/quarantine/x&lt;y&gt;" in page and "after a pull" in page
    assert "Last mismatch: none" in stored_blobs_html(snapshot(mismatch=False))
    assert stored_blobs_html(None) == ""


def test_status_names_corruption_only_when_found():
    assert stored_blobs_summary(snapshot(mismatch=False)) == ""
    assert stored_blobs_summary(snapshot(mismatch=True)) == (
        f"stored blobs: 1 corrupt found, 1 moved aside, last {DIGEST}; 7 verified")
