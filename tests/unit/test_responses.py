"""Answers the mirror builds itself: registry-style errors, the ping, upstream answers passed on, and the tag
list's next-page link rewritten onto the mirror's own path."""
import json

import pytest
from multidict import CIMultiDict

from registry_mirror.responses import (
    CACHE_HEADER,
    error_body,
    error_response,
    next_page_link,
    passed_headers,
    ping_response,
    small_response,
    upstream_status_error,
)


def test_an_error_body_is_the_distribution_error_format():
    assert json.loads(error_body("MANIFEST_UNKNOWN", "no such tag")) == {
        "errors": [{"code": "MANIFEST_UNKNOWN", "message": "no such tag", "detail": None}]}


def test_an_error_response_is_a_refusal_in_the_registrys_format():
    resp = error_response(404, "BLOB_UNKNOWN", "no such blob")
    assert resp.status_code == 404
    assert json.loads(resp.content)["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert resp.headers[CACHE_HEADER] == "REFUSED"
    assert resp.headers["Content-Length"] == str(len(resp.content))


def test_the_ping_is_a_basic_challenge_answered_locally():
    """A 401 with a Basic challenge, so that the stock registry records a challenge and stops re-pinging; it has no
    Basic handler, so it never sends a credential."""
    resp = ping_response()
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith('Basic realm="')
    assert resp.headers[CACHE_HEADER] == "LOCAL"
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert json.loads(resp.content) == {"errors": []}


def test_only_the_headers_the_registry_needs_are_passed_on():
    upstream = CIMultiDict({"content-type": "application/vnd.oci.image.manifest.v1+json", "Content-Length": "10",
                            "Docker-Content-Digest": "sha256:" + "a" * 64, "Set-Cookie": "session=secret",
                            "X-Artifactory-Id": "abc", "X-JFrog-Version": "7", "Retry-After": "30"})
    assert passed_headers(upstream) == {
        "Content-Type": "application/vnd.oci.image.manifest.v1+json", "Content-Length": "10",
        "Docker-Content-Digest": "sha256:" + "a" * 64, "Retry-After": "30"}  # under their canonical names
    assert passed_headers(CIMultiDict()) == {}


@pytest.mark.parametrize("status,expected", [
    (401, (401, "UNAUTHORIZED")),
    (403, (403, "DENIED")),
    (500, (502, "UNAVAILABLE")),
    (503, (502, "UNAVAILABLE")),
    (404, None),  # an answer the registry understands: passed on as is
    (429, None),  # passed on with its Retry-After, so that clients back off as asked
    (200, None),
])
def test_upstream_statuses_the_mirror_must_not_pass_on_as_they_are(status, expected):
    error = upstream_status_error(status, "manifest team/app:1.0")
    assert (error[:2] if error else None) == expected
    if error:
        assert "manifest team/app:1.0" in error[2]


def test_a_refused_credential_tells_the_operator_which_settings_to_check():
    _, _, message = upstream_status_error(401, "blob team/app@sha256:1")
    assert "upstream.username" in message and "token" in message


def test_a_head_keeps_the_length_of_the_body_it_does_not_carry():
    resp = small_response(200, {"Content-Length": "1234", "Docker-Content-Digest": "sha256:" + "b" * 64},
                          b"x" * 1234, is_head=True)
    assert resp.content == b""
    assert resp.headers["Content-Length"] == "1234"
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_a_get_carries_its_body_with_that_bodys_length():
    body = b'{"schemaVersion": 2}'
    resp = small_response(200, {"Content-Length": "999", "Content-Type": "application/json"}, body, is_head=False)
    assert resp.content == body and resp.headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize("link,expected", [
    ('</artifactory/api/docker/r/v2/library/app/tags/list?n=50&last=1.0%2Bx>; rel="next"',
     '</v2/app/tags/list?n=50&last=1.0%2Bx>; rel="next"'),  # the page parameters, still encoded
    ('</v2/app/tags/list?token=secret>; rel="next"', None),  # no page parameter: no link at all
    ('</v2/app/tags/list?n=2>; rel="last"', None),
    ("", None),
])
def test_the_next_page_link_points_at_the_mirrors_own_path(link, expected):
    assert next_page_link(link, "app") == expected
