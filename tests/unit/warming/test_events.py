"""Artifactory's webhook events: the secret in both modes, checked in constant time, and the payload's shape."""
import hashlib
import hmac
import json

import pytest

from registry_mirror.warming import events as webhook_events
from registry_mirror.warming.events import EventError, TagEvent, authentic, parse, signature

SECRET = "tell-no-one-0123"
SHA = hashlib.sha256(b"a manifest").hexdigest()


def event(domain="docker", event_type="pushed", **data) -> bytes:
    """A predefined Docker webhook's body, as JFrog documents it ("Docker Tag was Pushed")."""
    fields = {"repo_key": "docker-local", "event_type": event_type, "path": "team/app/1.0/list.manifest.json",
              "name": "list.manifest.json", "sha256": SHA, "size": 1206, "image_name": "team/app", "tag": "1.0",
              "platforms": [{"architecture": "amd64", "os": "linux"}], **data}
    return json.dumps({"domain": domain, "event_type": event_type, "data": fields, "subscription_key": "warm",
                       "jpd_origin": "https://art.example.com", "source": "jfrog/admin"}).encode()


def test_signature_is_the_hex_hmac_sha256_of_the_body():
    # RFC 4231-style known answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
    assert signature("key", b"The quick brown fox jumps over the lazy dog") == \
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"


@pytest.mark.parametrize("given, ok", [
    (SECRET, True),  # the secret itself: "use secret for signing" off
    (signature(SECRET, event()), True),  # its signature of this body
    (signature(SECRET, event()).upper(), True),
    ("", False),
    (SECRET + "x", False),
    (SECRET[:-1], False),
    (signature(SECRET, event(tag="2.0")), False),  # another body's signature: a replay onto a changed body
    (signature("another-secret", event()), False),
    (hashlib.sha256(event()).hexdigest(), False),  # unkeyed
])
def test_authentic_in_both_modes(given, ok):
    assert authentic(given, SECRET, event()) is ok


def test_both_comparisons_are_constant_time(monkeypatch):
    calls, compare = [], hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return compare(a, b)
    monkeypatch.setattr(webhook_events.hmac, "compare_digest", recording)
    assert not authentic("wrong", SECRET, event())
    assert len(calls) == 2  # the plain secret and the signature, both always compared
    assert authentic(SECRET, SECRET, event()) and len(calls) == 4


def test_a_pushed_event():
    assert parse(event()) == TagEvent("pushed", "docker-local", "team/app", "1.0", f"sha256:{SHA}")
    assert parse(event(event_type="promoted")).event_type == "promoted"
    assert parse(event(event_type="deleted")).event_type == "deleted"  # forgotten, not warmed


@pytest.mark.parametrize("body", [
    event(domain="artifact", event_type="deployed"),
    json.dumps({"domain": "build", "event_type": "uploaded"}).encode(),
    json.dumps({"event_type": "pushed"}).encode(),  # no domain
])
def test_other_events_are_ignored(body):
    assert parse(body) is None


@pytest.mark.parametrize("body, fragment", [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"domain": "docker", "event_type": "pushed"}).encode(), "data: missing"),
    (json.dumps({"domain": "docker", "event_type": "pushed", "data": []}).encode(), "data: missing"),
    (event(repo_key="../etc"), "data.repo_key"),
    (event(repo_key=7), "data.repo_key"),
    (event(image_name="Team/App"), "data.image_name"),
    (event(image_name="team/../app"), "data.image_name"),
    (event(tag="-bad"), "data.tag"),
    (event(tag=None), "data.tag"),
    (event(sha256="sha256:" + SHA), "data.sha256"),
    (event(sha256=SHA.upper()), "data.sha256"),
    (event(sha256=SHA[:-1]), "data.sha256"),
])
def test_bad_bodies_say_which_field(body, fragment):
    with pytest.raises(EventError, match=fragment):
        parse(body)
