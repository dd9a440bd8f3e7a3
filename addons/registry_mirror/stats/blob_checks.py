"""The stats views of the stored blobs' checks (blobs/stored_verifier.py's snapshot): files verified, mismatches found
and moved aside, the last one, the checks waiting."""
from __future__ import annotations

import html
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from registry_mirror.units import human_bytes


def stored_blobs_html(checks: dict | None) -> str:
    if checks is None:
        return ""
    last = checks["last_mismatch"]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last["at"])) if last else ""
    how = {"served": "as it was sent", "pulled": "after a pull"}.get(last["by"], "by the scrub") if last else ""
    moved = ("moved to " + html.escape(last["moved_to"]) if last["moved_to"]
             else "not moved (gone, replaced, or it could not be moved)") if last else ""
    last_text = "none" if last is None else (
        f"<code>{html.escape(last['digest'])}</code> at {when}, found {how}: {html.escape(last['found'])}; {moved}")
    return f"""<h2>Stored blobs checked against their digests (as sent, and after the registry's pulls)</h2>
<table id="stored-blobs"><tr><th>verified</th><th>bytes</th><th>mismatches</th><th>moved aside</th>
<th>checks waiting</th><th>skipped (queue full)</th></tr>
<tr><td id="stored-verified">{checks['verified']}</td><td>{human_bytes(checks['verified_bytes'])}</td>
<td id="stored-mismatches">{checks['mismatches']}</td><td id="stored-quarantined">{checks['quarantined']}</td>
<td>{checks['queued']}</td><td>{checks['skipped']}</td></tr></table>
<p>Last mismatch: {last_text}</p>{_scrub_html(checks.get("scrub"))}"""


def _scrub_html(scrub: dict | None) -> str:
    if not scrub:
        return ""
    took = "" if scrub["last_pass_seconds"] is None else f", the last in {scrub['last_pass_seconds']:.0f} s"
    return (f"<p>Scrub (every stored blob, once per mirror.scrub_interval): <span id='scrub-passes'>"
            f"{scrub['passes']}</span> passes{took}, {scrub['checked']} files hashed.</p>")


def stored_blob_metrics(checks: dict):
    yield CounterMetricFamily("mirror_stored_blobs_verified", "Stored blob files whose bytes matched their digest.",
                              value=checks["verified"])
    yield CounterMetricFamily("mirror_stored_blobs_verified_bytes", "Bytes of the stored blob files verified.",
                              value=checks["verified_bytes"])
    yield CounterMetricFamily("mirror_stored_blob_mismatches", "Checks of stored blob files that found other "
                              "bytes than their digest names, or none readable.", value=checks["mismatches"])
    yield CounterMetricFamily("mirror_stored_blobs_quarantined", "Corrupt stored blob files moved aside.",
                              value=checks["quarantined"])
    yield CounterMetricFamily("mirror_stored_blob_checks_skipped", "Pulls whose check was not queued: the queue "
                              "was full.", value=checks["skipped"])
    yield GaugeMetricFamily("mirror_stored_blob_checks_queued", "Stored blob files waiting for a check.",
                            value=checks["queued"])
    if scrub := checks.get("scrub"):
        yield CounterMetricFamily("mirror_scrub_passes", "Passes of the background scrub over the storage.",
                                  value=scrub["passes"])
        yield CounterMetricFamily("mirror_scrub_checked", "Stored blob files the scrub hashed.",
                                  value=scrub["checked"])
    if last := checks["last_mismatch"]:
        yield GaugeMetricFamily("mirror_stored_blob_last_mismatch_timestamp_seconds", "When the last corrupt "
                                "stored blob was found (Unix time).", value=last["at"])


def stored_blobs_summary(checks: dict | None) -> str:
    """One line for `artifactory-mirror status`, or "" when nothing was found corrupt."""
    if not checks or not checks["mismatches"]:
        return ""
    return (f"stored blobs: {checks['mismatches']} corrupt found, {checks['quarantined']} moved aside, last "
            f"{checks['last_mismatch']['digest']}; {checks['verified']} verified")
