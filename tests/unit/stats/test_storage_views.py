"""The storage figures and the expiry's clock-step state on the stats page and in /metrics."""
from dataclasses import asdict

from registry_mirror.expiry.passes import ExpiryState
from registry_mirror.stats.views import prometheus_text, render_html
from tests.unit.stats.test_counters import filled, route


def snapshot(**state) -> dict:
    stats, health = filled()
    snap = stats.snapshot([route(health, "https://art/x")])
    snap["storage"] = {**asdict(ExpiryState(**state)), "max_bytes": None, "max_age_s": 7 * 86400.0,
                       "oldest_last_pull": None, "where": "/var/lib/mirror/registry"}
    return snap


def test_before_the_first_reading_nothing_is_claimed():
    snap = snapshot()
    assert "not measured yet" in render_html(snap)
    text = prometheus_text(snap).decode()
    assert "mirror_storage_bytes" not in text and "mirror_expiry_age_skipped 0.0" in text


def test_the_figures_read_and_stored_since_without_a_cap():
    snap = snapshot(used_bytes=212_800_000, images=43, measured_at=0.0, stored_since_pass=2_000_000)
    page = render_html(snap)
    assert "212.8 MB<small>read 1970-01-01 00:00:00 UTC, 2.0 MB stored since (an estimate)</small>" in page
    assert '<td id="storage-images">43</td>' in page and '<td id="storage-cap">no cap</td>' in page
    text = prometheus_text(snap).decode()
    for line in ("mirror_storage_bytes 2.128e+08", "mirror_storage_images 43.0",
                 "mirror_storage_read_timestamp_seconds 0.0", "mirror_storage_stored_since_read_bytes 2e+06"):
        assert line in text


def test_a_skipped_age_pass_shows_why():
    snap = snapshot(used_bytes=1000, measured_at=0.0, age_evictions_skipped="the clock stepped <forward>",
                    passes_age_skipped=2, clock_steps=1)
    page = render_html(snap)
    assert "skipped: the clock stepped &lt;forward&gt;" in page
    assert '<td id="passes-age-skipped">2</td>' in page and '<td id="clock-steps">1</td>' in page
    text = prometheus_text(snap).decode()
    for line in ("mirror_expiry_age_skipped 1.0", "mirror_expiry_age_skipped_passes_total 2.0",
                 "mirror_clock_steps_total 1.0"):
        assert line in text


def test_on_a_bucket_its_figures_and_the_requests_a_pass_made():
    snap = snapshot(used_bytes=5_000_000, images=7, measured_at=0.0, last_pass_requests=41)
    snap["storage"]["bucket"] = {"name": "registry-mirror", "endpoint": "https://s3.dc1.test", "uploads_aborted": 3}
    page = render_html(snap)
    assert "bucket <code>registry-mirror</code> at https://s3.dc1.test" in page
    assert '<td id="uploads-aborted">3</td>' in page and '<td id="storage-images">7</td>' in page
    assert "requests in the last pass</th><td id=\"pass-requests\">41</td>" in page
    text = prometheus_text(snap).decode()
    for line in ("mirror_bucket_uploads_aborted_total 3.0", "mirror_storage_bytes 5e+06",
                 "mirror_expiry_pass_requests 41.0"):
        assert line in text


def test_on_a_folder_its_path_and_no_bucket_figure():
    page = render_html(snapshot(used_bytes=1000, measured_at=0.0))
    assert "<code>/var/lib/mirror/registry</code>" in page and "file operations in the last pass" in page
    assert "uploads-aborted" not in page and "mirror_bucket_uploads_aborted" not in prometheus_text(
        snapshot()).decode()
