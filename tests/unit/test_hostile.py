"""Hostile input (hypothesis): paths, headers, challenges, token JSON and configuration never crash the
mirror, never forward an invalid name, and never address a host but the configured upstream."""
from urllib.parse import urljoin, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from registry_mirror.config.load import ConfigError, parse
from registry_mirror.manifests.service import accept_key
from registry_mirror.oci.registry_requests import NAME_RE, Refusal, RegistryRequest, classify, upstream_path
from registry_mirror.upstream.auth import AuthError, parse_token_response
from registry_mirror.upstream.challenge import parse_challenges, realm_refusal

ORIGIN = "https://art.example.com"
PREFIX = "/artifactory/api/docker/docker-local"
PATH_ALPHABET = st.sampled_from(list("abc/.:%_-@?#&=\\ AZ09") + ["..", "%2f", "%2e", "//", "/v2/", "manifests",
                                                                    "blobs", "uploads", "sha256:", "a" * 64])
paths = st.lists(PATH_ALPHABET, max_size=30).map(lambda parts: "/v2/" + "".join(parts)) | st.text(max_size=200)
methods = st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "get", "CONNECT"])


@settings(max_examples=2000, deadline=None)
@given(methods, paths)
def test_any_path_is_classified_or_refused_and_stays_on_the_upstream(method, path):
    result = classify(method, path)
    assert isinstance(result, (RegistryRequest, Refusal))
    if isinstance(result, Refusal):
        assert 400 <= result.status < 500 and result.code and result.message
        return
    assert method in ("GET", "HEAD")
    if result.name:
        assert NAME_RE.fullmatch(result.name) and ".." not in result.name
    rewritten = upstream_path(PREFIX, result)
    assert rewritten.startswith(PREFIX + "/v2/")
    assert "%" not in rewritten.partition("?")[0] and "\\" not in rewritten.partition("?")[0]
    target = urlsplit(urljoin(ORIGIN, rewritten))
    assert (target.scheme, target.netloc) == ("https", "art.example.com")
    assert "/../" not in target.path and not target.path.endswith("/..")


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300))
def test_any_challenge_parses_without_crashing(header):
    for challenge in parse_challenges(header):
        assert challenge.scheme == challenge.scheme.lower()


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=200) | st.builds(lambda h, p: f"https://{h}/{p}", st.text(max_size=40), st.text(max_size=20)))
def test_a_realm_is_trusted_only_on_the_upstreams_origin(realm):
    refusal = realm_refusal(realm, ORIGIN, ())
    if refusal is None:
        parts = urlsplit(realm)
        assert parts.scheme == "https" and parts.hostname == "art.example.com" and (parts.port or 443) == 443


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["token", "access_token", "expires_in", "issued_at", "x"]), children, max_size=4),
    max_leaves=10).map(lambda v: __import__("json").dumps(v).encode()))
def test_any_token_response_gives_a_token_or_a_clear_error(body):
    try:
        token = parse_token_response(body)
    except AuthError as e:
        assert str(e)
    else:
        assert token.value and token.lifetime >= 0 and "\n" not in token.value


config_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(allow_nan=True) | st.text(max_size=30)
    | st.sampled_from(["https://a.example", "http://127.0.0.1:5000", "0.0.0.0:5000", "${HOME}", "${NOPE_X}"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(
        ["url", "repository", "username", "password", "token", "anonymous", "listen", "storage", "tls",
         "path_prefix", "ca_file", "tag_ttl", "retries", "allowed_realm_hosts", "web_password", "x"]),
        children, max_size=6),
    max_leaves=20)


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(st.sampled_from(["upstream", "mirror", "rewriter", "cache", "other"]), config_values,
                       max_size=4) | config_values)
def test_any_configuration_loads_or_names_its_error(data):
    try:
        cfg = parse(data, environ={"HOME": "/root"})
    except ConfigError as e:
        assert str(e)
    else:
        assert urlsplit(cfg.upstream.url).scheme in ("http", "https")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=5))
def test_any_accept_header_gives_a_cache_key(values):
    assert isinstance(accept_key(values), frozenset)
