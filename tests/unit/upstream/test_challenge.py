import pytest

from registry_mirror.upstream.challenge import Challenge, parse_challenges, realm_refusal


@pytest.mark.parametrize("header,expected", [
    ('Bearer realm="https://a.example/token",service="a.example",scope="repository:x/y:pull"',
     [Challenge("bearer", {"realm": "https://a.example/token", "service": "a.example",
                           "scope": "repository:x/y:pull"})]),
    ('Basic realm="Artifactory Realm"', [Challenge("basic", {"realm": "Artifactory Realm"})]),
    ('Bearer realm="https://a/token", scope="repository:a:pull,push"',
     [Challenge("bearer", {"realm": "https://a/token", "scope": "repository:a:pull,push"})]),
    ('Basic realm="x", Bearer realm="https://t/token",service=s',
     [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "https://t/token", "service": "s"})]),
    ('Bearer realm="say \\"hi\\""', [Challenge("bearer", {"realm": 'say "hi"'})]),
    ('BEARER REALM="https://a/t"', [Challenge("bearer", {"realm": "https://a/t"})]),
    ("Negotiate abc123==", [Challenge("negotiate", {})]),
    ("", []),
    ("=broken", []),
    ('Bearer realm="unterminated', [Challenge("bearer", {})]),
])
def test_parse_challenges(header, expected):
    assert parse_challenges(header) == expected


UP = "https://art.example.com"


@pytest.mark.parametrize("realm,allowed,ok", [
    ("https://art.example.com/artifactory/api/docker/x/v2/token", (), True),
    ("https://art.example.com:443/token", (), True),
    ("http://art.example.com/token", (), False),  # scheme downgrade is another origin
    ("https://evil.example/token", (), False),
    ("https://art.example.com.evil.example/token", (), False),
    ("https://auth.example.com/token", ("auth.example.com",), True),
    ("https://auth.example.com:8443/token", ("auth.example.com:8443",), True),
    ("https://auth.example.com:8443/token", ("auth.example.com:9443",), False),
    ("http://auth.example.com/token", ("auth.example.com",), False),  # never plain http from an https upstream
    ("https://user:pw@art.example.com/token", (), False),
    ("ftp://art.example.com/token", (), False),
    ("not a url", (), False),
    ("", (), False),
])
def test_realm_refusal(realm, allowed, ok):
    assert (realm_refusal(realm, UP, allowed) is None) == ok
