"""The stats views of per-user access: the token endpoint's snapshot as an HTML table and as Prometheus metrics,
with no user name in either."""
from registry_mirror.stats.decisions import access_html, access_metrics
from tests.unit.stats.test_warms import metrics

SNAPSHOT = {"listen": "0.0.0.0:5001", "decisions": {"allowed": 3, "refused": 1, "cached-allowed": 7},
            "answers": {200: 10, 403: 1}, "cached": 4, "questions": 4, "signer_not_after": 2_000_000_000.0}


def test_the_table_shows_decisions_answers_and_the_signers_expiry():
    text = access_html(SNAPSHOT)
    assert 'id="access-decisions">allowed: 3, cached-allowed: 7, refused: 1<' in text
    assert "200: 10, 403: 1" in text and "2033-05-18 03:33 UTC" in text and "on\n0.0.0.0:5001" in text
    assert access_html(None) == ""


def test_the_metrics_count_decisions_by_outcome_and_answers_by_status():
    lines = metrics(access_metrics(SNAPSHOT))
    assert 'mirror_access_decisions_total{outcome="cached-allowed"} 7.0' in lines
    assert 'mirror_access_answers_total{status="403"} 1.0' in lines
    assert "mirror_access_questions_total 4.0" in lines
    assert "mirror_access_signer_expiry_timestamp_seconds 2e+09" in lines
