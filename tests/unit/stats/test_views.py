"""The stats snapshot as the page, the Prometheus text and the `status` summary show it: routes and their blob
transfer slots, transfers in flight, the disk's warnings and the certificate's state."""
import os
from types import SimpleNamespace

from registry_mirror.free_space import DiskWatch
from registry_mirror.stats.counters import Stats
from registry_mirror.stats.views import disk_warnings, prometheus_text, render_html, summary_text
from registry_mirror.upstream.health import UpstreamHealth
from tests.unit.stats.test_counters import filled, route
from tests.unit.support.clocks import Clock

DIGEST = "sha256:" + "ab" * 32
GB = 10 ** 9


def routes_snapshot() -> dict:
    """routes[0] (team-a) assumed down, 3 of its 256 transfers running, 2 in line, 1 refused after waiting; then
    the default route, `upstream`, last as Router.routes orders them."""
    stats, health = filled()
    down = UpstreamHealth(timer=Clock(), wall_clock=Clock())
    down.failure("GET team-a/app:1.0: timed out", hung=True)
    team_a = route(down, "https://art.example.com/team-a", "routes[0]", "team-a")
    team_a.blob_slots.active, team_a.blob_slots.waiting, team_a.blob_slots.timed_out = 3, 2, 1
    return stats.snapshot([team_a, route(health, "https://art.example.com/x")])


def test_each_route_on_the_page_with_its_state_and_blob_transfers():
    page = render_html(routes_snapshot())
    assert ("<tr><th>routes[0]</th><td>team-a</td><td></td><td><code>https://art.example.com/team-a</code></td>"
            "<td class='down'>down</td><td>3 of 256, 2 waiting, 1 refused after waiting</td>"
            "<td>GET team-a/app:1.0: timed out (at 1970-01-01 00:00:00 UTC)</td></tr>") in page
    # the default route serves every other name; its transfers all run, none waits
    assert ("<tr><th>upstream</th><td>*</td><td></td><td><code>https://art.example.com/x</code></td>"
            "<td class='up'>up</td><td>0 of 256</td>") in page


def test_each_route_in_the_metrics():
    lines = prometheus_text(routes_snapshot()).decode().splitlines()
    for line in ('mirror_route_up{prefix="team-a",route="routes[0]"} 0.0',
                 'mirror_route_up{prefix="",route="upstream"} 1.0',
                 'mirror_blob_transfers{route="routes[0]"} 3.0',
                 'mirror_blob_transfers_waiting{route="routes[0]"} 2.0',
                 'mirror_blob_queue_timeouts_total{route="routes[0]"} 1.0',
                 'mirror_blob_queue_timeouts_total{route="upstream"} 0.0'):
        assert line in lines, line


def test_the_summary_names_the_other_routes_below_the_upstream_line():
    lines = summary_text(routes_snapshot()).splitlines()
    assert lines[0].startswith("upstream https://art.example.com/x: UP  latency p50 50.0 ms")
    assert "  route routes[0] (team-a) -> https://art.example.com/team-a: DOWN" in lines
    assert not any(line.startswith("  route upstream") for line in lines)  # the first line is the default route's


def test_transfers_in_flight_on_the_page_in_the_metrics_and_in_the_summary():
    running = SimpleNamespace(digest=DIGEST, name="team/<app>", written=40_000_000, size=100_000_000, readers=2,
                              served=3, origin="", finished=False)
    done = SimpleNamespace(**{**vars(running), "digest": "sha256:" + "cd" * 32, "finished": True})
    snap = Stats(clock=Clock()).snapshot(transfers=[running, done])
    page = render_html(snap)
    assert (f"<td><code>{DIGEST[:19]}…</code></td><td>team/&lt;app&gt;</td><td><progress max='100000000' "
            f"value='40000000'></progress> 40.0 MB of 100.0 MB</td><td>2</td><td>upstream</td>") in page
    assert "cdcdcd" not in page  # a finished transfer is no longer in flight
    assert "mirror_transfers_in_flight 1.0" in prometheus_text(snap).decode().splitlines()
    assert summary_text(snap).endswith(f"  in flight: {DIGEST[:19]}… 40.0 MB of 100.0 MB")
    assert "<td colspan='5'>none</td>" in render_html(Stats().snapshot())


def disk_snapshot(tmp_path, free: dict[str, int]) -> dict:
    """The page's disk section as the addon builds it: the storage and spool filesystems (`free` bytes each, of
    100 GB) under a reserve of 1 GB, a log file with dropped lines, a flow dump that dropped flows."""
    paths = {what: tmp_path / what for what in free}
    for path in paths.values():
        path.mkdir()

    def statvfs(path):
        what = next(what for what, p in paths.items() if str(p) == path)
        return os.statvfs_result((4096, 1, 100 * GB, free[what], free[what], 0, 0, 0, 0, 255))
    disk = DiskWatch(GB, {what: str(path) for what, path in paths.items()}, statvfs=statvfs)
    disk.refusal(10)
    return {**disk.snapshot(), "log_files": {"mitmproxy.log": {"dropped_lines": 4, "last_error": "No space left"},
                                             "registry.log": {"dropped_lines": 0, "last_error": ""}},
            "dump": {"path": str(tmp_path / "flows"), "written": 7, "dropped": 2, "last_error": "No space left"}}


def test_a_filesystem_under_the_reserve_and_lost_lines_are_warned_of_everywhere(tmp_path):
    disk = disk_snapshot(tmp_path, {"storage": 500_000_000, "spool": 50 * GB})
    warnings = disk_warnings(disk)
    assert warnings == [f"storage filesystem {tmp_path / 'storage'}: 500.0 MB free, under mirror.min_free (1.0 GB)",
                        "mitmproxy.log: 4 lines dropped (No space left)",
                        f"flow dump {tmp_path / 'flows'}: 2 flows dropped (No space left)"]
    snap = {**Stats().snapshot(), "disk": disk}
    page = render_html(snap)
    assert "<div id='disk-warning' class='down'>" in page and '<span id="refused-fetches">1</span>' in page
    assert "<td class='down'>500.0 MB</td>" in page and "<td class='up'>50.0 GB</td>" in page
    assert "the storage filesystem" in page  # the last refusal, said why
    assert [f"disk: {w}" for w in warnings] == [line for line in summary_text(snap).splitlines()
                                                if line.startswith("disk: ")]
    lines = prometheus_text(snap).decode().splitlines()
    for line in ('mirror_filesystem_free_bytes{use="storage"} 5e+08', "mirror_filesystem_reserve_bytes 1e+09",
                 "mirror_fetches_refused_for_space_total 1.0",
                 'mirror_log_lines_dropped_total{file="mitmproxy.log"} 4.0',
                 "mirror_dump_flows_dropped_total 2.0"):
        assert line in lines, line


def test_enough_room_and_nothing_dropped_warns_of_nothing(tmp_path):
    disk = disk_snapshot(tmp_path, {"storage": 50 * GB, "spool": 50 * GB})
    disk["log_files"]["mitmproxy.log"]["dropped_lines"] = 0
    disk["dump"] = None
    assert disk_warnings(disk) == [] and disk_warnings(None) == []
    snap = {**Stats().snapshot(), "disk": disk}
    assert "disk-warning" not in render_html(snap) and "disk:" not in summary_text(snap)
    assert "mirror_dump_flows_dropped" not in prometheus_text(snap).decode()


def test_the_certificate_state_on_the_page_in_the_metrics_and_in_the_summary():
    expiring = {"certificate": "/srv/certs/mirror.crt", "not_after": 1_800_000_000.0,
                "problem": "mirror.tls_cert /srv/certs/mirror.crt expires on 2027-01-15 08:00 UTC, in 13 days"}
    snap = {**Stats().snapshot(), "tls": expiring}
    page = render_html(snap)
    assert "valid until <span id='tls-expiry'>2027-01-15 08:00 UTC</span>" in page
    assert "<span id='tls-problem' class='down'>mirror.tls_cert" in page
    assert "mirror_tls_certificate_expiry_timestamp_seconds 1.8e+09" in prometheus_text(snap).decode().splitlines()
    assert f"certificate: {expiring['problem']}" in summary_text(snap).splitlines()
    unreadable = {**Stats().snapshot(), "tls": {"certificate": "/srv/certs/mirror.crt", "not_after": None,
                                                "problem": "cannot read mirror.tls_cert"}}
    assert "<span id='tls-expiry'>unreadable</span>" in render_html(unreadable)
    assert "mirror_tls_certificate_expiry" not in prometheus_text(unreadable).decode()
    fine = {**Stats().snapshot(), "tls": {**expiring, "problem": ""}}
    assert "tls-problem" not in render_html(fine) and "certificate:" not in summary_text(fine)


def test_before_any_upstream_answer_no_latency_is_shown_as_none():
    snap = Stats(clock=Clock(1000.0)).snapshot([route(UpstreamHealth(), "https://art.example.com/x")])
    for text in (summary_text(snap), render_html(snap)):
        assert "None" not in text and "latency: no upstream answer yet" in text


def test_a_last_error_keeps_its_time_and_shows_when_it_was_resolved():
    wall = Clock(1_800_000_000.0)
    health = UpstreamHealth(wall_clock=wall)
    health.failure("GET team/app:1.0: timed out")
    snap = Stats(clock=Clock(1000.0)).snapshot([route(health, "https://art.example.com/x")])
    assert "last error: GET team/app:1.0: timed out (at 2027-01-15 08:00:00 UTC)\n" in summary_text(snap) + "\n"
    wall.now += 90
    health.success()
    snap = Stats(clock=Clock(1000.0)).snapshot([route(health, "https://art.example.com/x")])
    assert snap["upstream"]["last_error_resolved_at"] == 1_800_000_090.0
    assert "(at 2027-01-15 08:00:00 UTC; resolved at 2027-01-15 08:01:30 UTC)" in summary_text(snap)
    health.failure("GET team/app:1.0: timed out again")  # a new error is unresolved again
    snap = Stats(clock=Clock(1000.0)).snapshot([route(health, "https://art.example.com/x")])
    assert snap["upstream"]["last_error_resolved_at"] == 0 and "resolved" not in summary_text(snap)
