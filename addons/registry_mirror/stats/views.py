"""The stats snapshot as an HTML page (refreshing itself), Prometheus text, and a terminal summary."""
from __future__ import annotations

import html
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from registry_mirror.stats.blob_checks import stored_blob_metrics, stored_blobs_html, stored_blobs_summary
from registry_mirror.stats.counters import CLASSES
from registry_mirror.stats.decisions import access_html, access_metrics
from registry_mirror.stats.warms import pull_metrics, pulls_html, warm_metrics, warming_html
from registry_mirror.units import human_bytes

STATS_PATH, JSON_PATH, METRICS_PATH = "/_mirror/stats", "/_mirror/stats.json", "/metrics"
READY_PATH = "/_mirror/ready"  # 200 {"ready": true} once the addon has started, else 503
LOGS_PATH = "/_mirror/logs"  # the supervisor POSTs its log files' dropped lines here
FORGET_PATH = "/_mirror/forget"  # `artifactory-mirror forget` POSTs the image to remove here


def render_html(snap: dict, refresh_seconds: int = 5) -> str:
    up = snap["upstream"]
    e = html.escape
    state_class = up["state"]  # down, up or unknown
    outcomes = sorted({o for entry in snap["served"].values() for o in entry})
    rows = []
    for kind in [k for k in CLASSES if k in snap["served"]] + [k for k in snap["served"] if k not in CLASSES]:
        entry = snap["served"][kind]
        cells = "".join(f"<td>{entry[o]['requests']}<small>{human_bytes(entry[o]['bytes'])}</small></td>"
                        if o in entry else "<td></td>" for o in outcomes)
        rows.append(f"<tr><th>{e(kind)}</th>{cells}</tr>")
    transfers = "".join(
        f"<tr><td><code>{e(t['digest'][:19])}…</code></td><td>{e(t['repository'])}</td>"
        f"<td><progress max='{t['size'] or 1}' value='{t['received']}'></progress> "
        f"{human_bytes(t['received'])} of {human_bytes(t['size'])}</td><td>{t['readers']}</td>"
        f"<td>{e(t.get('from', 'upstream'))}</td></tr>"
        for t in snap["transfers"]) or "<tr><td colspan='5'>none</td></tr>"
    exchanges = "".join(
        f"<tr><th>{e(kind)}</th><td>{e(status)}</td><td>{n}</td><td>{human_bytes(up['bytes'].get(kind, 0))}</td></tr>"
        for kind, status, n in sorted((*k.partition(":")[::2], n) for k, n in up["requests"].items())
    ) or "<tr><td colspan='4'>none yet</td></tr>"
    routes = "".join(
        f"<tr><th>{e(r['route'])}</th><td>{e(r['prefix'] or ('*' if not r['ns'] else ''))}</td>"
        f"<td>{e(', '.join(r['ns']))}</td><td><code>{e(r['url'])}</code></td>"
        f"<td class='{e(r['state'])}'>{e(r['state'])}</td>"
        f"<td>{_slots_text(r['blob_transfers'])}</td>"
        f"<td>{e(last_error_text(r))}</td></tr>" for r in snap.get("routes", []))
    b = snap["bytes"]
    lat = up["latency_ms"]
    integrity = snap["integrity"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_seconds}">
<title>artifactory-mirror stats</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.05em; margin-top: 1.4em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: .3em .7em; text-align: right; }}
th {{ background: #f4f4f4; }} small {{ display: block; color: #777; }}
.up {{ color: #17752b; font-weight: bold; }} .down {{ color: #b3261e; font-weight: bold; }}
.cards {{ display: flex; gap: 1em; }} .card {{ border: 1px solid #ccc; padding: .6em 1em; border-radius: 6px; }}
.card b {{ display: block; font-size: 1.3em; }}
</style></head><body>
<h1>artifactory-mirror</h1>
<p>Upstream <code>{e(up['url'])}</code>: <span id="state" class="{state_class}">{e(up['state'])}</span>
 &middot; {e(latency_text(lat))} &middot; token refreshes {up['token_refreshes']}
 &middot; up for {snap['uptime_s']:.0f} s</p>
<p>Last error: <span id="last-error">{e(last_error_text(up))}</span></p>
{_disk_warning(snap.get("disk"))}
{_tls_html(snap.get("tls"))}
<div class="cards">
<div class="card">served to clients<b id="served-to-clients">{human_bytes(b.get('served_to_clients'))}</b></div>
<div class="card">served to the registry<b id="served">{human_bytes(b['served_to_registry'])}</b></div>
<div class="card">fetched from the upstream<b id="fetched">{human_bytes(b['fetched_from_upstream'])}</b></div>
<div class="card">WAN saved<b id="saved">{human_bytes(b['saved'])}</b></div>
</div>
<h2>Routes: image-name prefix or containerd ns to upstream</h2>
<table id="routes"><tr><th>route</th><th>prefix</th><th>ns</th><th>upstream</th><th>state</th>
<th>blob transfers</th><th>last error</th></tr>
{routes}</table>
<h2>Answers to the registry, by request class and outcome (requests, bytes)</h2>
<table id="answers"><tr><th></th>{''.join(f'<th>{e(o)}</th>' for o in outcomes)}</tr>{''.join(rows)}</table>
<h2>Exchanges with the upstream, by class and status</h2>
<table id="upstream"><tr><th></th><th>status</th><th>requests</th><th>bytes (class)</th></tr>{exchanges}</table>
<h2>Integrity</h2>
<table id="integrity"><tr><th>upstream bodies cut short or over their cap</th>
<td id="bodies-cut-short">{integrity['bodies_cut_short']}</td></tr>
<tr><th>cached answers dropped as inconsistent</th>
<td id="cache-dropped-inconsistent">{integrity['cache_dropped_inconsistent']}</td></tr>
<tr><th>manifests by digest the upstream does not have (clients see 500)</th>
<td id="missing-digests">{sum(snap.get('missing_digests', {}).values())}</td></tr></table>
{pulls_html(snap.get("registry_pulls", {}))}
{warming_html(snap.get("webhooks"))}
{access_html(snap.get("access"))}
{_storage_html(snap.get("storage"))}
{_disk_html(snap.get("disk"))}
{stored_blobs_html(snap.get("stored_blobs"))}
{_replicas_html(snap.get("scale"))}
<h2>Blob transfers in flight</h2>
<table id="transfers"><tr><th>digest</th><th>repository</th><th>progress</th><th>readers</th><th>from</th></tr>
{transfers}</table>
<p><small>JSON: <a href="{JSON_PATH}">{JSON_PATH}</a> &middot; Prometheus: <a href="{METRICS_PATH}">{METRICS_PATH}</a>
 &middot; refreshes every {refresh_seconds} s</small></p>
</body></html>
"""


def disk_warnings(disk: dict | None) -> list[str]:
    """What an operator must act on: a filesystem under the reserve, log lines or flows dropped."""
    if not disk:
        return []
    warnings = [f"{fs['what']} filesystem {fs['path']}: {human_bytes(fs['free_bytes'])} free, under mirror.min_free "
                f"({human_bytes(disk['min_free_bytes'])})" for fs in disk["filesystems"] if fs["low"]]
    warnings += [f"{name}: {v['dropped_lines']} lines dropped ({v['last_error']})"
                 for name, v in disk["log_files"].items() if v["dropped_lines"]]
    if (dump := disk.get("dump")) and dump["dropped"]:
        warnings.append(f"flow dump {dump['path']}: {dump['dropped']} flows dropped ({dump['last_error']})")
    return warnings


def _tls_html(tls: dict | None) -> str:
    if not tls:
        return ""
    until = "unreadable" if tls["not_after"] is None else \
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(tls["not_after"]))
    problem = f" <span id='tls-problem' class='down'>{html.escape(tls['problem'])}</span>" if tls["problem"] else ""
    return f"<p>Certificate <code>{html.escape(tls['certificate'])}</code> valid until " \
           f"<span id='tls-expiry'>{until}</span>.{problem}</p>"


def _disk_warning(disk: dict | None) -> str:
    warnings = disk_warnings(disk)
    if not disk or not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    refusal = html.escape(disk["last_refusal"]) if disk["last_refusal"] else "none yet"
    return (f"<div id='disk-warning' class='down'>Disk: <ul>{items}</ul></div>"
            f"<p>Last cold fetch refused for space: <span id='last-refusal'>{refusal}</span></p>")


def _disk_html(disk: dict | None) -> str:
    if not disk:
        return ""
    rows = "".join(f"<tr><th>{html.escape(fs['what'])}</th><td><code>{html.escape(fs['path'])}</code></td>"
                   f"<td class='{'down' if fs['low'] else 'up'}'>{human_bytes(fs['free_bytes'])}</td>"
                   f"<td>{human_bytes(fs['total_bytes'])}</td></tr>" for fs in disk["filesystems"])
    return f"""<h2>Disk (reserve mirror.min_free: {human_bytes(disk['min_free_bytes'])})</h2>
<table id="disk"><tr><th>for</th><th>path</th><th>free</th><th>size</th></tr>{rows}</table>
<p>Cold fetches refused for space: <span id="refused-fetches">{disk['refused_fetches']}</span></p>"""


def _slots_text(slots: dict) -> str:
    """A route's blob transfers: how many run, of how many at once, and how many wait in line."""
    text = f"{slots['active']} of {slots['limit']}"
    if slots["waiting"]:
        text += f", {slots['waiting']} waiting"
    if slots["queue_timeouts"]:
        text += f", {slots['queue_timeouts']} refused after waiting"
    return text


def _storage_html(storage: dict | None) -> str:
    if storage is None:
        return ""
    e = html.escape
    def when(t: float | None) -> str:
        return "none" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
    if storage["used_bytes"] is None:
        used = "not measured yet"
    else:  # between passes: the last reading plus the verified bytes stored since
        since = storage["stored_since_pass"]
        note = f", {human_bytes(since)} stored since (an estimate)" if since else ""
        used = f"{human_bytes(storage['used_bytes'])}<small>read {when(storage['measured_at'])}{note}</small>"
    cap = "no cap" if storage["max_bytes"] is None else human_bytes(storage["max_bytes"])
    skipped = storage["age_evictions_skipped"]
    by_age = f"<span class='down'>skipped: {e(skipped)}</span>" if skipped else "yes"
    bucket = storage.get("bucket")
    where = f"bucket <code>{e(bucket['name'])}</code> at {e(bucket['endpoint'])}" if bucket else \
        f"<code>{e(storage['where'])}</code>"
    requests = f"<tr><th>{'requests' if bucket else 'file operations'} in the last pass</th>" \
        f"<td id=\"pass-requests\">{storage['last_pass_requests']}</td></tr>"
    aborted = f"""<tr><th>incomplete multipart uploads aborted</th>
<td id="uploads-aborted">{bucket['uploads_aborted']}</td></tr>""" if bucket else ""
    return f"""<h2>Storage and expiry</h2>
<table id="storage"><tr><th>storage</th><td id="storage-where">{where}</td></tr>
<tr><th>in storage</th><td id="storage-used">{used}</td></tr>
<tr><th>cap (mirror.max_bytes)</th><td id="storage-cap">{cap}</td></tr>
<tr><th>images in storage</th><td id="storage-images">{storage['images']}</td></tr>
<tr><th>images evicted</th><td id="images-evicted">{storage['images_evicted']}</td></tr>
<tr><th>bytes evicted</th><td id="bytes-evicted">{human_bytes(storage['bytes_evicted'])}</td></tr>
<tr><th>oldest last pull</th><td id="oldest-last-pull">{when(storage['oldest_last_pull'])}</td></tr>
<tr><th>last pass removed by age</th><td id="age-evictions">{by_age}</td></tr>
<tr><th>passes that skipped age (clock steps)</th><td id="passes-age-skipped">{storage['passes_age_skipped']}</td></tr>
<tr><th>clock steps seen while running</th><td id="clock-steps">{storage['clock_steps']}</td></tr>
<tr><th>leftover uploads removed</th><td id="uploads-removed">{storage['uploads_removed']}
<small>{human_bytes(storage['upload_bytes_removed'])}</small></td></tr>
<tr><th>empty data files removed</th><td id="empty-files-removed">{storage['empty_files_removed']}</td></tr>
{requests}{aborted}</table>"""


def _replicas_html(scale: dict | None) -> str:
    if not scale:
        return ""
    e, inv = html.escape, scale.get("invalidations") or {}
    heard = ("<span class='up'>yes</span>" if inv.get("subscribed") else
             f"<span class='down'>no</span><small>{e(inv.get('last_error', ''))}</small>") if inv else "n/a"
    return f"""<h2>Replicas sharing the storage</h2>
<table id="replicas"><tr><th>redis</th><td>{e(scale['redis'])}</td></tr>
<tr><th>this replica</th><td>{e(scale['this_replica'])}</td></tr>
<tr><th>redis errors (coalescing)</th><td>{scale['redis_errors']}<small>{e(scale['last_redis_error'])}</small></td></tr>
<tr><th>hears the others' forgets</th><td id="invalidations-subscribed">{heard}</td></tr>
<tr><th>forgets received from the others</th><td id="invalidations-received">{inv.get('received', 0)}
<small>{inv.get('cache_entries_dropped', 0)} cache entries dropped</small></td></tr>
<tr><th>forgets told to the others</th><td id="invalidations-published">{inv.get('published', 0)}
<small>{inv.get('publish_failures', 0)} not told (redis unreachable)</small></td></tr>
<tr><th>messages ignored (not an invalidation)</th><td id="invalidations-ignored">{inv.get('ignored', 0)}</td></tr>
</table>"""


class _SnapshotCollector:
    def __init__(self, snap: dict):
        self.snap = snap

    def collect(self):
        snap, up = self.snap, self.snap["upstream"]
        requests = CounterMetricFamily("mirror_requests", "Answers to the registry by class and outcome.",
                                       labels=["class", "outcome"])
        served = CounterMetricFamily("mirror_served_bytes", "Body bytes sent to the registry.",
                                     labels=["class", "outcome"])
        for kind, entry in snap["served"].items():
            for outcome, v in entry.items():
                requests.add_metric([kind, outcome], v["requests"])
                served.add_metric([kind, outcome], v["bytes"])
        upstream_requests = CounterMetricFamily("mirror_upstream_requests", "Exchanges with the upstream.",
                                                labels=["class", "status"])
        for key, n in up["requests"].items():
            kind, _, status = key.partition(":")
            upstream_requests.add_metric([kind, status], n)
        fetched = CounterMetricFamily("mirror_upstream_bytes", "Body bytes received from the upstream.",
                                      labels=["class"])
        for kind, n in up["bytes"].items():
            fetched.add_metric([kind], n)
        yield from (requests, served, upstream_requests, fetched)
        yield CounterMetricFamily("mirror_token_refreshes", "Tokens fetched from the upstream's realm.",
                                  value=up["token_refreshes"])
        integrity = snap["integrity"]
        yield CounterMetricFamily("mirror_bodies_cut_short",
                                  "Small upstream bodies over their cap or shorter than their Content-Length.",
                                  value=integrity["bodies_cut_short"])
        yield CounterMetricFamily("mirror_cache_dropped_inconsistent",
                                  "Cached answers dropped because verified bytes contradicted them.",
                                  value=integrity["cache_dropped_inconsistent"])
        missing = CounterMetricFamily("mirror_upstream_missing_digests", "Manifests by digest the upstream answered "
                                      "404 for (clients see the stock registry's 500), by route.", labels=["route"])
        for route_label, n in snap.get("missing_digests", {}).items():
            missing.add_metric([route_label], n)
        yield missing
        if storage := snap.get("storage"):
            yield from _storage_metrics(storage)
        yield from pull_metrics(snap.get("registry_pulls", {}))
        if webhooks := snap.get("webhooks"):
            yield from warm_metrics(webhooks)
        if access := snap.get("access"):
            yield from access_metrics(access)
        if disk := snap.get("disk"):
            yield from _disk_metrics(disk)
        if checks := snap.get("stored_blobs"):
            yield from stored_blob_metrics(checks)
        if invalidations := snap.get("scale", {}).get("invalidations"):
            yield from _invalidation_metrics(invalidations)
        if (tls := snap.get("tls")) and tls["not_after"] is not None:
            yield GaugeMetricFamily("mirror_tls_certificate_expiry_timestamp_seconds",
                                    "When mirror.tls_cert expires (Unix time).", value=tls["not_after"])
        if "started" in snap:
            yield GaugeMetricFamily("mirror_started", "1 once the mirror's services run (its routes, blob endpoint, "
                                    "expiry); 0 while it starts, or if it never does.", value=int(snap["started"]))
        if snap.get("routes"):  # before the routes exist, no state to say
            yield GaugeMetricFamily("mirror_upstream_up", "1 when the upstream is not assumed down.",
                                    value=0 if up["state"] == "down" else 1)
        route_up = GaugeMetricFamily("mirror_route_up", "1 when the route's upstream is not assumed down.",
                                     labels=["route", "prefix"])
        active = GaugeMetricFamily("mirror_blob_transfers", "Blob transfers from the route's upstream holding a "
                                   "slot.", labels=["route"])
        waiting = GaugeMetricFamily("mirror_blob_transfers_waiting", "Blob transfers waiting for a slot "
                                    "(upstream.max_blob_transfers).", labels=["route"])
        timeouts = CounterMetricFamily("mirror_blob_queue_timeouts", "Blob transfers refused after waiting "
                                       "upstream.blob_queue_timeout for a slot.", labels=["route"])
        for r in snap.get("routes", []):
            route_up.add_metric([r["route"], r["prefix"]], 0 if r["state"] == "down" else 1)
            slots = r["blob_transfers"]
            active.add_metric([r["route"]], slots["active"])
            waiting.add_metric([r["route"]], slots["waiting"])
            timeouts.add_metric([r["route"]], slots["queue_timeouts"])
        yield from (route_up, active, waiting, timeouts)
        # one convention for every metric: mirror_ prefix, _total, _bytes, _seconds, a `route` label, never an
        # image name or digest (label values stay few)
        latency = GaugeMetricFamily("mirror_upstream_latency_seconds", "Upstream answer latency over the last "
                                    "answers.", labels=["quantile"])
        for q, quantile in (("p50", "0.5"), ("p99", "0.99")):
            if up["latency_ms"][q] is not None:
                latency.add_metric([quantile], up["latency_ms"][q] / 1000)
        yield latency
        if histograms := snap.get("histograms"):
            yield from _histograms(histograms)
        yield GaugeMetricFamily("mirror_transfers_in_flight", "Blob transfers from the upstream in flight.",
                                value=len(snap["transfers"]))


def _disk_metrics(disk: dict):
    free = GaugeMetricFamily("mirror_filesystem_free_bytes", "Free bytes where the mirror writes.", labels=["use"])
    size = GaugeMetricFamily("mirror_filesystem_size_bytes", "Size of the filesystems the mirror writes to.",
                             labels=["use"])
    for fs in disk["filesystems"]:
        free.add_metric([fs["what"]], fs["free_bytes"])
        size.add_metric([fs["what"]], fs["total_bytes"])
    yield from (free, size)
    yield GaugeMetricFamily("mirror_filesystem_reserve_bytes", "mirror.min_free.", value=disk["min_free_bytes"])
    yield CounterMetricFamily("mirror_fetches_refused_for_space", "Cold fetches refused under mirror.min_free.",
                              value=disk["refused_fetches"])
    dropped = CounterMetricFamily("mirror_log_lines_dropped", "Log lines that could not be written.",
                                  labels=["file"])
    for name, v in disk["log_files"].items():
        dropped.add_metric([name], v["dropped_lines"])
    yield dropped
    if dump := disk.get("dump"):
        yield CounterMetricFamily("mirror_dump_flows_dropped", "Flows the --dump file could not take.",
                                  value=dump["dropped"])


def _invalidation_metrics(inv: dict):
    yield GaugeMetricFamily("mirror_replica_invalidations_subscribed", "1 while this replica hears the other "
                            "replicas' forgets (scale.redis).", value=1 if inv["subscribed"] else 0)
    yield CounterMetricFamily("mirror_replica_invalidations_received", "Forgets of other replicas dropped from this "
                              "replica's caches.", value=inv["received"])
    yield CounterMetricFamily("mirror_replica_invalidation_cache_entries_dropped", "Cache entries those forgets "
                              "dropped here.", value=inv["cache_entries_dropped"])
    yield CounterMetricFamily("mirror_replica_invalidations_ignored", "Messages on the replicas' channel that were "
                              "no invalidation.", value=inv["ignored"])
    yield CounterMetricFamily("mirror_replica_invalidations_published", "This replica's forgets told to the others.",
                              value=inv["published"])
    yield CounterMetricFamily("mirror_replica_invalidation_publish_failures", "This replica's forgets the others "
                              "could not be told of (redis unreachable).", value=inv["publish_failures"])


def prometheus_text(snap: dict) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snap))
    return generate_latest(registry)


def _histograms(histograms: dict):
    answers = HistogramMetricFamily("mirror_upstream_answer_seconds", "Time to the upstream's answer (manifests, "
                                    "tags, blob HEADs, tokens), by route and class.", labels=["route", "class"])
    for h in histograms["answer_seconds"]:
        answers.add_metric(h["labels"], h["buckets"], h["sum"])
    transfers = HistogramMetricFamily("mirror_blob_transfer_seconds", "Time of a whole blob transfer from the "
                                      "upstream, by route.", labels=["route"])
    for h in histograms["transfer_seconds"]:
        transfers.add_metric(h["labels"], h["buckets"], h["sum"])
    yield from (answers, transfers)


def latency_text(latency_ms: dict) -> str:
    if latency_ms["p50"] is None:
        return "latency: no upstream answer yet"
    return f"latency p50 {latency_ms['p50']} ms, p99 {latency_ms['p99']} ms"


def last_error_text(up: dict) -> str:
    """The last error with its time, and when the upstream answered again after it."""
    if not up["last_error"]:
        return "none"
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(up["last_error_at"]))
    resolved = up.get("last_error_resolved_at") or 0
    since = f"; resolved at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(resolved))}" if resolved else ""
    return f"{up['last_error']} (at {at}{since})"


def summary_text(snap: dict) -> str:
    up, b = snap["upstream"], snap["bytes"]
    lines = [f"upstream {up['url']}: {up['state'].upper()}  {latency_text(up['latency_ms'])}  "
             f"token refreshes {up['token_refreshes']}",
             f"last error: {last_error_text(up)}",
             *(f"  route {r['route']} ({r['prefix'] or ','.join(r['ns'])}) -> {r['url']}: {r['state'].upper()}"
               for r in snap.get("routes", [])[:-1]),
             f"served to the registry {human_bytes(b['served_to_registry'])}, fetched from the upstream "
             f"{human_bytes(b['fetched_from_upstream'])}, served to clients "
             f"{human_bytes(b.get('served_to_clients'))}, WAN saved {human_bytes(b['saved'])}"]
    if webhooks := snap.get("webhooks"):
        w = webhooks["warms"]
        lines.append(f"warms: {w['queued']} queued, {w['running']} running, {w['done']} done, {w['failed']} failed, "
                     f"{human_bytes(w['bytes'])}")
    if access := snap.get("access"):
        decisions = ", ".join(f"{o} {n}" for o, n in sorted(access["decisions"].items())) or "none yet"
        lines.append(f"access decisions: {decisions}")
    for kind, entry in snap["served"].items():
        parts = ", ".join(f"{o} {v['requests']}" for o, v in sorted(entry.items()))
        lines.append(f"  {kind:20} {parts}")
    if any(snap["integrity"].values()):
        lines.append(f"integrity: {snap['integrity']['bodies_cut_short']} upstream bodies cut short, "
                     f"{snap['integrity']['cache_dropped_inconsistent']} cached answers dropped as inconsistent")
    if missing := sum(snap.get("missing_digests", {}).values()):
        lines.append(f"manifests by digest the upstream does not have: {missing} (clients saw 500)")
    lines += [f"disk: {w}" for w in disk_warnings(snap.get("disk"))]
    if summary := stored_blobs_summary(snap.get("stored_blobs")):
        lines.append(summary)
    if (tls := snap.get("tls")) and tls["problem"]:
        lines.append(f"certificate: {tls['problem']}")
    for t in snap["transfers"]:
        lines.append(f"  in flight: {t['digest'][:19]}… {human_bytes(t['received'])} of {human_bytes(t['size'])}")
    return "\n".join(lines)


def _storage_metrics(storage: dict):
    if bucket := storage.get("bucket"):
        yield CounterMetricFamily("mirror_bucket_uploads_aborted", "Incomplete multipart uploads a day old aborted "
                                  "in the bucket of mirror.s3.", value=bucket["uploads_aborted"])
    yield GaugeMetricFamily("mirror_expiry_pass_requests", "Operations the last expiry pass made on the storage "
                            "(on a bucket: S3 requests).", value=storage["last_pass_requests"])
    if storage["used_bytes"] is not None:
        yield GaugeMetricFamily("mirror_storage_bytes", "Bytes in the registry's storage: read by the last "
                                "pass, plus verified bytes stored since (an estimate between passes).",
                                value=storage["used_bytes"])
        yield GaugeMetricFamily("mirror_storage_images", "Images in the registry's storage, as read by the "
                                "last pass.", value=storage["images"])
        yield GaugeMetricFamily("mirror_storage_read_timestamp_seconds", "When a pass last read the "
                                "registry's storage (Unix time).", value=storage["measured_at"])
        yield GaugeMetricFamily("mirror_storage_stored_since_read_bytes", "Verified bytes stored since "
                                "the pass that last read the storage began (in mirror_storage_bytes).",
                                value=storage["stored_since_pass"])
    if storage["max_bytes"] is not None:
        yield GaugeMetricFamily("mirror_storage_max_bytes", "mirror.max_bytes.", value=storage["max_bytes"])
    yield CounterMetricFamily("mirror_images_evicted", "Images removed by the expiry.",
                              value=storage["images_evicted"])
    yield CounterMetricFamily("mirror_bytes_evicted", "Blob bytes freed by the expiry.",
                              value=storage["bytes_evicted"])
    yield GaugeMetricFamily("mirror_expiry_age_skipped", "1 when the last expiry pass removed nothing by "
                            "age because the clock seems to have stepped.",
                            value=1 if storage["age_evictions_skipped"] else 0)
    yield CounterMetricFamily("mirror_expiry_age_skipped_passes", "Expiry passes that removed nothing by "
                              "age because the clock seemed to have stepped.",
                              value=storage["passes_age_skipped"])
    yield CounterMetricFamily("mirror_clock_steps", "Steps of the wall clock seen against the monotonic "
                              "clock while running, taken out of the last pulls.",
                              value=storage["clock_steps"])
    yield CounterMetricFamily("mirror_leftover_uploads_removed", "Partial uploads no transfer wrote any "
                              "more, removed by the expiry.", value=storage["uploads_removed"])
    yield CounterMetricFamily("mirror_leftover_upload_removed_bytes", "Bytes those uploads held.",
                              value=storage["upload_bytes_removed"])
    yield CounterMetricFamily("mirror_empty_blob_files_removed", "Blob data files a full disk left empty, "
                              "removed so that the next pull stores them again.",
                              value=storage["empty_files_removed"])
