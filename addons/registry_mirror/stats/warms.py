"""The stats views of what the registry's notifications and the webhooks' warms add: the pulls the registry
served (from its storage too), by who pulled, and the warms queued, running, done and failed."""
from __future__ import annotations

import html

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from registry_mirror.units import human_bytes


def pulls_html(pulls: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(who)}</th><th>{html.escape(kind)}</th><td>{e['requests']}</td>"
                   f"<td>{e['heads']}</td><td>{human_bytes(e['bytes'])}</td></tr>"
                   for who, kinds in sorted(pulls.items()) for kind, e in sorted(kinds.items()))
    return f"""<h2>Pulls the registry served (its notifications: from its storage or through the addon)</h2>
<table id="registry-pulls"><tr><th>by</th><th>class</th><th>requests</th><th>of them HEAD</th><th>bytes</th></tr>
{rows or "<tr><td colspan='5'>none yet</td></tr>"}</table>"""


def warming_html(webhooks: dict | None) -> str:
    if webhooks is None:
        return ""
    w = webhooks["warms"]
    last = "none yet" if w["last_seconds"] is None else f"{w['last_seconds']:.1f} s"
    answers = ", ".join(f"{status}: {n}" for status, n in webhooks["answers"].items()) or "none yet"
    return f"""<h2>Warms from Artifactory's webhooks (on {html.escape(webhooks['listen'])})</h2>
<table id="warms"><tr><th>queued</th><th>running</th><th>done</th><th>failed</th><th>retries</th><th>coalesced</th>
<th>bytes</th><th>time in all</th><th>last warm</th></tr>
<tr><td id="warms-queued">{w['queued']}</td><td id="warms-running">{w['running']}</td>
<td id="warms-done">{w['done']}</td><td id="warms-failed">{w['failed']}</td><td>{w['retries']}</td>
<td>{w['coalesced']}</td><td>{human_bytes(w['bytes'])}</td><td>{w['seconds']:.1f} s</td><td>{last}</td></tr></table>
<p>Events answered, by status: {html.escape(answers)} &middot; last error:
{html.escape(w['last_error']) or 'none'}</p>"""


def pull_metrics(pulls: dict):
    requests = CounterMetricFamily("mirror_registry_pulls", "Pulls the registry served (its notifications), by "
                                   "who pulled (clients, warming) and class.", labels=["by", "class"])
    nbytes = CounterMetricFamily("mirror_registry_pull_bytes", "Bytes of the registry's GET pulls, from its "
                                 "storage or through the addon.", labels=["by", "class"])
    for who, kinds in pulls.items():
        for kind, entry in kinds.items():
            requests.add_metric([who, kind], entry["requests"])
            nbytes.add_metric([who, kind], entry["bytes"])
    yield from (requests, nbytes)


def warm_metrics(webhooks: dict):
    w = webhooks["warms"]
    now = GaugeMetricFamily("mirror_warms", "Warms from webhooks queued or running now.", labels=["state"])
    for state in ("queued", "running"):
        now.add_metric([state], w[state])
    ended = CounterMetricFamily("mirror_warms_ended", "Warms from webhooks that ended.", labels=["outcome"])
    for outcome in ("done", "failed"):
        ended.add_metric([outcome], w[outcome])
    answers = CounterMetricFamily("mirror_webhook_answers", "Webhook events answered, by status.",
                                  labels=["status"])
    for status, n in webhooks["answers"].items():
        answers.add_metric([status], n)
    yield from (now, ended, answers)
    yield CounterMetricFamily("mirror_warm_bytes", "Bytes read through the mirror by finished warms.",
                              value=w["bytes"])
    yield CounterMetricFamily("mirror_warm_seconds", "Time of the finished warms, from event to end.",
                              value=w["seconds"])
    yield CounterMetricFamily("mirror_warms_coalesced", "Events whose warm was already queued or running.",
                              value=w["coalesced"])
