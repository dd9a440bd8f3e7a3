"""The stats views of who may pull (`access.users`): the token endpoint's decisions by outcome, its answers by
status, what Artifactory was asked, and when the token signer expires. Never a user name or a secret."""
from __future__ import annotations

import html
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


def access_html(access: dict | None) -> str:
    if access is None:
        return ""
    decisions = ", ".join(f"{o}: {n}" for o, n in sorted(access["decisions"].items())) or "none yet"
    answers = ", ".join(f"{s}: {n}" for s, n in sorted(access["answers"].items())) or "none yet"
    expiry = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(access["signer_not_after"]))
    return f"""<h2>Who may pull: each user's Artifactory permissions (token endpoint on
{html.escape(access['listen'])})</h2>
<table id="access"><tr><th>decisions, by outcome</th><td id="access-decisions">{html.escape(decisions)}</td></tr>
<tr><th>token requests answered, by status</th><td>{html.escape(answers)}</td></tr>
<tr><th>questions to Artifactory</th><td>{access['questions']}</td></tr>
<tr><th>decisions cached</th><td>{access['cached']}</td></tr>
<tr><th>token signer valid until</th><td>{expiry}</td></tr></table>"""


def access_metrics(access: dict):
    decisions = CounterMetricFamily("mirror_access_decisions", "Pull decisions of the token endpoint, by outcome "
                                    "(allowed, refused, cached-*, stale-allowed, unreachable, anonymous, "
                                    "rate-limited).", labels=["outcome"])
    for outcome, n in access["decisions"].items():
        decisions.add_metric([outcome], n)
    answers = CounterMetricFamily("mirror_access_answers", "Token requests answered, by status.",
                                  labels=["status"])
    for status, n in access["answers"].items():
        answers.add_metric([str(status)], n)
    yield from (decisions, answers)
    yield CounterMetricFamily("mirror_access_questions", "Questions asked of Artifactory with a user's credential.",
                              value=access["questions"])
    yield GaugeMetricFamily("mirror_access_signer_expiry_timestamp_seconds", "When the token signing certificate "
                            "expires (the registry then refuses every token).", value=access["signer_not_after"])
