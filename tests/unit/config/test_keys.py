"""The sections' dataclasses: the defaults an operator gets, what a route derives from its keys (the upstream's
prefix and the names it asks for), and the checks of values no bound can say."""
from dataclasses import fields

import pytest

from registry_mirror.config.keys import (
    SECTIONS,
    CacheConfig,
    MirrorConfig,
    RewriterConfig,
    ScaleConfig,
    UpstreamConfig,
    WebhooksConfig,
)
from registry_mirror.config.kinds import Address
from registry_mirror.config.schema import declared

ARTIFACTORY = UpstreamConfig(url="https://artifactory.example.com/", repository="docker-local")


def test_the_defaults_are_the_documented_ones_converted():
    mirror, rewriter, scale = MirrorConfig(), RewriterConfig(), ScaleConfig()
    assert (mirror.listen, rewriter.listen, rewriter.web_listen, scale.listen) == (
        Address("0.0.0.0", 5000), Address("127.0.0.1", 8081), Address("127.0.0.1", 8082), Address("0.0.0.0", 0))
    assert (mirror.max_age, mirror.verify_interval, mirror.min_free) == (7 * 86400.0, 3600.0, 1024 ** 3)
    assert (mirror.tls, mirror.max_bytes, rewriter.blob_redirect, rewriter.log_format) == (True, None, True, "text")
    assert CacheConfig().manifest_bytes == 64 * 1024 ** 2 and CacheConfig().tag_ttl == 30.0
    assert (ARTIFACTORY.retries, ARTIFACTORY.library, ARTIFACTORY.tls_verify) == (3, "keep", True)


@pytest.mark.parametrize("path_prefix,repository,prefix", [
    ("/artifactory/api/docker/{repository}", "docker-local", "/artifactory/api/docker/docker-local"),
    ("/repository/{repository}/", "docker-hosted", "/repository/docker-hosted"),  # Nexus-style
    ("", "", ""),  # a registry at the root
])
def test_the_upstream_serves_v2_under_its_prefix_on_its_origin(path_prefix, repository, prefix):
    upstream = UpstreamConfig(url="https://registry.example.com/", repository=repository, path_prefix=path_prefix)
    assert upstream.origin == "https://registry.example.com"
    assert f"{upstream.origin}{upstream.prefix}/v2/" == f"https://registry.example.com{prefix}/v2/"


@pytest.mark.parametrize("settings,asked,name", [
    ({}, "app", "app"),
    ({"library": "add"}, "nginx", "library/nginx"),  # Docker Hub-style upstreams
    ({"library": "add"}, "team/app", "team/app"),
    ({"library": "strip"}, "library/nginx", "nginx"),
    ({"library": "strip"}, "team/library/app", "team/library/app"),
    ({"match_prefix": "team-a", "strip_prefix": True}, "team-a/app", "app"),
    ({"match_prefix": "team-a", "strip_prefix": True}, "team-ab/app", "team-ab/app"),  # whole path components
    ({"match_prefix": "team-a"}, "team-a/app", "team-a/app"),
    ({"match_prefix": "hub", "strip_prefix": True, "library": "add"}, "hub/nginx", "library/nginx"),
])
def test_the_name_the_upstream_is_asked_for(settings, asked, name):
    route = UpstreamConfig(url="https://registry.example.com", **settings)
    assert route.upstream_name(asked) == name


def test_clients_trust_the_issuing_ca_or_the_self_signed_certificate_itself():
    assert MirrorConfig(tls_cert="/srv/certs/mirror.crt").trusted_ca == "/srv/certs/mirror.crt"
    assert MirrorConfig(tls_cert="/srv/certs/mirror.crt", tls_ca="/srv/certs/ca.crt").trusted_ca == "/srv/certs/ca.crt"


@pytest.mark.parametrize("section,name,value,complaint", [
    (MirrorConfig, "max_age", 59.0, "is under a minute; an image would be gone before its deploy ends (7d is the "
                                    "default)"),
    (MirrorConfig, "max_age", 60.0, None),
    (MirrorConfig, "verify_interval", 30.0, "is under a minute"),
    (MirrorConfig, "scrub_interval", 1800.0, "is under an hour; a scrub reads the whole storage"),
    (MirrorConfig, "scrub_interval", 3600.0, None),
    (UpstreamConfig, "library", "copy", "is not one of keep, add, strip"),
    (ScaleConfig, "lock_seconds", 1.0, "is out of range; expected 5 to 3600 seconds"),
    (CacheConfig, "stale_budget", 0.0, "is out of range; expected 0.05 to 600 seconds"),
])
def test_a_value_no_type_refuses_is_checked_with_a_reason(section, name, value, complaint):
    assert declared(section)[name][1].complaint(value) == complaint


def test_scale_out_and_webhooks_are_on_only_with_their_address():
    assert not ScaleConfig().enabled and not WebhooksConfig().enabled
    with pytest.raises(ValueError, match="scale.redis is unset: a single replica shares nothing"):
        _ = ScaleConfig().shared_redis
    redis = Address("10.0.0.5", 6379)
    assert ScaleConfig(redis=redis).enabled and ScaleConfig(redis=redis).shared_redis == redis
    assert WebhooksConfig(listen=Address("0.0.0.0", 8084)).enabled


def test_every_section_declares_each_key_once_and_secrets_stay_out_of_reprs():
    assert list(SECTIONS) == ["upstream", "mirror", "rewriter", "cache", "scale", "webhooks", "access", "metrics"]
    for section, cls in SECTIONS.items():
        names = list(declared(cls, routes=True))
        assert len(names) == len(set(names)), section
    routes_only = [name for name, (_, k) in declared(UpstreamConfig, routes=True).items() if k.routes_only]
    assert routes_only == ["prefix", "ns", "strip_prefix"] and "prefix" not in declared(UpstreamConfig)
    secret_fields = {f.name for cls in SECTIONS.values() for f in fields(cls)
                     if "key" in f.metadata and f.metadata["key"].kind.secret}
    assert secret_fields == {"password", "token", "web_password", "redis_password", "secret"}
    assert all(not f.repr for cls in SECTIONS.values() for f in fields(cls) if f.name in secret_fields)
