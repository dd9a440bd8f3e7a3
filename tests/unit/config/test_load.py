from dataclasses import MISSING
from pathlib import Path

import pytest
import yaml

from registry_mirror.config.keys import SECTIONS
from registry_mirror.config.load import (
    UNREAD,
    CacheConfig,
    ConfigError,
    MirrorConfig,
    RewriterConfig,
    ScaleConfig,
    Secret,
    load,
    parse,
)
from registry_mirror.config.schema import declared
from registry_mirror.tls import certs

BASE = {"upstream": {"url": "https://art.example.com", "repository": "docker-local",
                     "username": "u", "password": "p"}}


def with_upstream(**changes):
    up = {**BASE["upstream"], **changes}
    return {"upstream": {k: v for k, v in up.items() if v is not None}}


def test_defaults_and_contract_keys():
    cfg = parse({**BASE, "mirror": {"listen": "0.0.0.0:5000", "storage": "./data/registry"},
                 "rewriter": {"listen": "127.0.0.1:8081"}}, base_dir=Path("/srv/mirror"))
    assert cfg.upstream.prefix == "/artifactory/api/docker/docker-local"
    assert cfg.upstream.origin == "https://art.example.com"
    assert str(cfg.mirror.listen) == "0.0.0.0:5000"
    assert cfg.mirror.storage == "/srv/mirror/data/registry"
    assert str(cfg.rewriter.listen) == "127.0.0.1:8081"
    assert isinstance(cfg.upstream.password, Secret)
    assert repr(cfg.upstream.password) == "Secret('<redacted>')"


def test_env_expansion_and_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-file\r\n# rotated by vault-agent\n")  # the first line only
    f = tmp_path / "mirror.yaml"
    f.write_text("upstream:\n  url: ${ART_URL}\n  repository: docker-${REPO}\n  username: ${ART_USER}\n"
                 f"  password_file: {secret.name}\n")
    cfg = load(f, environ={"ART_URL": "http://127.0.0.1:9", "REPO": "remote", "ART_USER": "ci"})
    assert (cfg.upstream.url, cfg.upstream.repository, cfg.upstream.username) == (
        "http://127.0.0.1:9", "docker-remote", "ci")
    assert cfg.upstream.password == "from-file"


def test_root_prefix_for_other_registries():
    cfg = parse(with_upstream(path_prefix="", repository=None))
    assert cfg.upstream.prefix == ""
    cfg = parse(with_upstream(path_prefix="/repository/{repository}", repository="docker-hosted"))
    assert cfg.upstream.prefix == "/repository/docker-hosted"


def test_static_token_and_anonymous():
    assert parse(with_upstream(username=None, password=None, token="t0k")).upstream.token == "t0k"
    assert parse(with_upstream(username=None, password=None, anonymous=True)).upstream.anonymous


@pytest.mark.parametrize("data,fragment", [
    ("just a string", "top level must be a mapping"),
    ({"upstream": {**BASE["upstream"]}, "mirrors": {}}, "unknown key 'mirrors'"),
    (with_upstream(passwd="x"), "unknown key upstream.passwd: valid keys are url, repository"),
    (with_upstream(url=None), "upstream.url: missing"),
    (with_upstream(url="artifactory.example.com"), "upstream.url: 'artifactory.example.com' is not scheme://host[:port]"),
    (with_upstream(url="https://a.example/artifactory"), "put the repository path in upstream.repository"),
    (with_upstream(url="https://u:hunter2@a.example"), "<redacted>"),
    (with_upstream(url="https://a.example:99999"), "upstream.url"),
    (with_upstream(url=5000), "upstream.url: expected scheme://host[:port] with scheme http or https, e.g. "
                              "https://artifactory.example.com, got int 5000"),
    (with_upstream(repository=None), "upstream.repository: missing"),
    (with_upstream(repository="bad/key"), "upstream.repository: 'bad/key'"),
    (with_upstream(password=None), "upstream.password: missing for upstream.username"),
    (with_upstream(username=None), "upstream.username: missing"),
    (with_upstream(username=None, password=None), "upstream: no credential"),
    (with_upstream(token="t"), "not both"),
    (with_upstream(password=None, password_file="/nonexistent/secret"), "upstream.password_file: cannot read"),
    (with_upstream(ca_file="/nonexistent/ca.pem"), "upstream.ca_file: cannot load"),
    (with_upstream(tls_verify="yes"), "upstream.tls_verify: expected true or false"),
    (with_upstream(connect_timeout=0), "upstream.connect_timeout: 0 is out of range; expected more than 0, "
                                     "at most 3600 seconds"),
    (with_upstream(connect_timeout=True), "upstream.connect_timeout: expected a number of seconds, got a boolean"),
    (with_upstream(allowed_realm_hosts=["https://x/"]), "upstream.allowed_realm_hosts"),
    (with_upstream(path_prefix="artifactory"), "upstream.path_prefix: 'artifactory' must start with /"),
    (with_upstream(path_prefix="/a/../b"), "may not contain"),
    ({**BASE, "mirror": {"listen": "5000"}}, "mirror.listen: '5000' is not host:port"),
    ({**BASE, "rewriter": {"listen": "127.0.0.1:http"}}, "rewriter.listen"),
    ({**BASE, "mirror": "yes"}, "mirror: must be a mapping"),
    ({**BASE, "mirror": {"s3": "registry-mirror"}}, "mirror.s3: must be a mapping of keys (bucket, endpoint"),
    ({**BASE, "mirror": {"s3": {"endpoint": "http://127.0.0.1:8333"}}}, "mirror.s3.bucket: missing"),
    ({**BASE, "mirror": {"s3": {"bucket": "reg", "endpoint": "s3.dc1.test"}}},
     "mirror.s3.endpoint: 's3.dc1.test' is not scheme://host[:port]"),
    ({**BASE, "mirror": {"s3": {"bucket": "reg", "access_key": "AK"}}}, "set access_key and secret_key together"),
    ({**BASE, "mirror": {"s3": {"bucket": "bb", "secret": "x"}}}, "unknown key mirror.s3.secret: valid keys are"),
    ({**BASE, "mirror": {"s3": {"bucket": "registry/dc1"}}}, "mirror.s3.bucket: 'registry/dc1' is not an S3 bucket"),
    ({**BASE, "mirror": {"s3": {"bucket": "My_Bucket"}}}, "mirror.s3.bucket: 'My_Bucket' is not an S3 bucket"),
    ({**BASE, "mirror": {"s3": {"bucket": "reg", "region": ""}}}, "mirror.s3.region: '' is not a region"),
    ({**BASE, "mirror": {"s3": {"bucket": "reg", "prefix": "a//b"}}}, "mirror.s3.prefix: 'a//b' is not a folder"),
    ({**BASE, "mirror": {"s3": {"bucket": "reg", "prefix": "../x"}}}, "mirror.s3.prefix: '../x' is not a folder"),
    ({**BASE, "mirror": {"s3": {"bucket": "reg", "endpoint": "https://s3.test/registry"}}},
     "the bucket goes in mirror.s3.bucket"),
    (with_upstream(url="${UNSET_VARIABLE_FOR_TEST}"), "environment variable UNSET_VARIABLE_FOR_TEST is not set"),
])
def test_errors_name_the_key(data, fragment):
    with pytest.raises(ConfigError) as e:
        parse(data)
    assert fragment in str(e.value)


def test_secret_never_in_type_error():
    with pytest.raises(ConfigError) as e:
        parse(with_upstream(password=["hunter2"]))
    assert "hunter2" not in str(e.value) and "upstream.password" in str(e.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstream: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)
    empty = tmp_path / "empty-secret"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        parse(with_upstream(password=None, password_file=str(empty)))


def test_scale_section():
    base = {"upstream": {"url": "https://art", "repository": "r", "anonymous": True}}
    assert not parse(base).scale.enabled
    cfg = parse({**base, "scale": {"redis": "10.0.0.5:6379", "advertise": "10.0.0.11"}})
    assert cfg.scale.enabled and str(cfg.scale.redis) == "10.0.0.5:6379" and cfg.scale.advertise == "10.0.0.11"
    assert str(cfg.scale.listen) == "0.0.0.0:0" and cfg.rewriter.listen.host == "127.0.0.1"
    loopback = parse({**base, "scale": {"redis": "127.0.0.1:6379", "listen": "127.0.0.1"}}).scale
    assert loopback.advertise == "127.0.0.1"  # where the blob endpoint listens
    fixed = parse({**base, "scale": {"redis": "r:6379", "listen": "10.0.0.11:8083"}}).scale
    assert (fixed.listen.port, fixed.advertise) == (8083, "10.0.0.11")
    for scale, message in [
        ({"advertise": "10.0.0.11"}, r"scale\.redis: missing"),
        ({"redis": "10.0.0.5:6379"}, r"scale\.advertise: missing"),
        ({"redis": "10.0.0.5:6379", "listen": "127.0.0.1", "advertise": "10.0.0.11"}, r"listens on 127\.0\.0\.1 only"),
        ({"redis": "redis://x"}, r"scale\.redis: 'redis://x' is not host:port"),
        ({"redis": "10.0.0.5:6379", "advertise": "a", "lock_seconds": 1}, r"scale\.lock_seconds: 1 is out of range"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse({**base, "scale": scale})


@pytest.mark.parametrize("value,expected", [(None, 3600.0), (0, 0.0), (90, 90.0), (86400, 86400.0), (1.5, 1.5)])
def test_cache_blob_head_ttl(value, expected):
    cache = {} if value is None else {"blob_head_ttl": value}
    assert parse({**BASE, "cache": cache}).cache.blob_head_ttl == expected


@pytest.mark.parametrize("value,fragment", [
    (86401, "cache.blob_head_ttl: 86401 is out of range; expected 0 to 86400"),
    (-1, "cache.blob_head_ttl: -1 is out of range; expected 0 to 86400"),
    ("1h", "cache.blob_head_ttl: expected a number of seconds, got str '1h'"),
    (True, "cache.blob_head_ttl: expected a number of seconds, got a boolean"),
])
def test_cache_blob_head_ttl_errors_name_the_key(value, fragment):
    with pytest.raises(ConfigError) as e:
        parse({**BASE, "cache": {"blob_head_ttl": value}})
    assert fragment in str(e.value)


@pytest.mark.parametrize("mirror,max_age,max_bytes", [
    ({}, 7 * 86400.0, None),
    ({"max_age": "12h", "max_bytes": "500GiB"}, 43200.0, 500 * 1024 ** 3),
    ({"max_age": 3600, "max_bytes": 10 ** 9}, 3600.0, 10 ** 9),
])
def test_expiry_keys(mirror, max_age, max_bytes):
    cfg = parse({**BASE, "mirror": mirror})
    assert (cfg.mirror.max_age, cfg.mirror.max_bytes) == (max_age, max_bytes)


@pytest.mark.parametrize("mirror,fragment", [
    ({"max_age": "7 days"}, "mirror.max_age: '7 days' is not a duration; write seconds"),
    ({"max_age": "30s"}, "mirror.max_age: '30s' is under a minute"),
    ({"max_bytes": "500G"}, "mirror.max_bytes: '500G' is not a size; write bytes"),
])
def test_expiry_key_errors_name_the_key(mirror, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse({**BASE, "mirror": mirror})


def test_a_section_left_out_is_its_dataclass_defaults(tmp_path):
    base = tmp_path.resolve()
    cfg = parse(BASE, base_dir=base)
    assert (cfg.rewriter, cfg.scale, cfg.routes) == (RewriterConfig(), ScaleConfig(), ())
    assert cfg.mirror == MirrorConfig(storage=f"{base}/data/registry", tls_cert=f"{base}/certs/mirror.crt",
                                      tls_key=f"{base}/certs/mirror.key")
    assert cfg.cache == CacheConfig(tag_state_file=f"{base}/data/registry.tags.json", prefetch=False)


@pytest.mark.parametrize("mirror, cache, prefetch", [
    ({}, {}, False),  # a folder: registry 2.8 writes a layer's link in place there
    ({"s3": {"bucket": "registry"}}, {}, True),  # a bucket's writes are whole
    ({"s3": {"bucket": "registry"}}, {"prefetch": False}, False),
    ({}, {"prefetch": True}, True),
])
def test_prefetch_is_on_by_default_only_on_a_bucket(tmp_path, mirror, cache, prefetch):
    assert parse({**BASE, "mirror": mirror, "cache": cache}, base_dir=tmp_path).cache.prefetch is prefetch


def test_every_key_is_documented_and_its_default_valid():
    for section, cls in SECTIONS.items():
        for name, (_, declaration) in declared(cls, routes=True).items():
            assert declaration.doc.endswith(".") and "\n" not in declaration.doc, f"{section}.{name}"
            if declaration.default not in (MISSING, None):
                value = declaration.kind.convert(f"{section}.{name}", declaration.default)
                assert declaration.complaint(value) is None, f"{section}.{name}"


def test_webhooks_section(tmp_path):
    assert not parse(BASE).webhooks.enabled and parse(BASE).webhooks.platforms == ()
    secret = tmp_path / "webhook-secret"
    secret.write_text("from-a-file\n")
    cfg = parse({**BASE, "webhooks": {"listen": "0.0.0.0:8084", "secret_file": str(secret),
                                      "platforms": ["linux/amd64", "linux/arm64/v8"]}})
    hooks = cfg.webhooks
    assert hooks.enabled and str(hooks.listen) == "0.0.0.0:8084" and hooks.secret == "from-a-file"
    assert hooks.platforms == ("linux/amd64", "linux/arm64/v8") and "from-a-file" not in repr(cfg)


@pytest.mark.parametrize("webhooks, rewriter, message", [
    ({"secret": "s"}, {}, r"webhooks\.listen: missing; the webhooks keys \(secret\) need the address"),
    ({"listen": "0.0.0.0:8084"}, {}, r"webhooks\.secret: missing for webhooks\.listen; set secret or secret_file"),
    ({"listen": "8084", "secret": "s"}, {}, r"webhooks\.listen: '8084' is not host:port"),
    ({"listen": "127.0.0.1:8081", "secret": "s"}, {}, r"webhooks\.listen: 127\.0\.0\.1:8081 is rewriter\.listen"),
    ({"listen": "10.0.0.1:9000", "secret": "s"}, {"listen": "0.0.0.0:9000"}, r"is rewriter\.listen"),
    ({"listen": "0.0.0.0:5000", "secret": "s"}, {}, r"webhooks\.listen: 0\.0\.0\.0:5000 is mirror\.listen "
                                                    r"\(0\.0\.0\.0:5000\); the webhook listener needs a port"),
    ({"listen": "127.0.0.1:8082", "secret": "s"}, {}, r"is rewriter\.web_listen"),
    ({"listen": "0.0.0.0:8084", "secret": "s", "platforms": ["amd64"]}, {},
     r"webhooks\.platforms: 'amd64' is not a platform; expected os/architecture\[/variant\]"),
    ({"listen": "0.0.0.0:8084", "secret": "s", "platforms": "linux/amd64"}, {},
     r"webhooks\.platforms: expected a list"),
    ({"listen": "0.0.0.0:8084", "secret": ""}, {}, r"webhooks\.secret: empty"),
    ({"listen": "0.0.0.0:8084", "secret": "s", "secret_file": "/x"}, {}, r"set secret or secret_file, not both"),
    ({"listen": "0.0.0.0:8084", "token": "s"}, {}, r"unknown key webhooks\.token: valid keys are listen, secret"),
])
def test_webhooks_errors_name_the_key(webhooks, rewriter, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse({**BASE, "webhooks": webhooks, **({"rewriter": rewriter} if rewriter else {})})
    assert "'s'" not in str(e.value)  # never the secret


def test_the_storage_in_a_bucket_with_its_defaults(tmp_path):
    (tmp_path / "s3-secret").write_text("sk-from-file\n")
    cfg = parse({**BASE, "mirror": {"s3": {"bucket": "registry-mirror", "access_key": "${S3_ACCESS_KEY}",
                                           "secret_key_file": str(tmp_path / "s3-secret")}}},
                environ={"S3_ACCESS_KEY": "AKTEST"})
    s3 = cfg.mirror.s3
    assert (s3.bucket, s3.endpoint, s3.region, s3.prefix, s3.redirect) == ("registry-mirror", None, "us-east-1", "",
                                                                           False)
    assert s3.credentials == ("AKTEST", "sk-from-file") and "sk-from-file" not in repr(s3)
    assert parse(BASE).mirror.s3 is None
    assert parse({**BASE, "mirror": {"s3": {"bucket": "reg", "prefix": "/mirrors/dc1/"}}}).mirror.s3.prefix == \
        "mirrors/dc1"


def test_access_is_open_by_default_and_its_signer_sits_beside_the_mirrors_certificate(tmp_path):
    assert not parse(BASE).access.enabled
    cfg = parse({**BASE, "mirror": {"tls_cert": "c/mirror.crt"},
                 "access": {"users": "artifactory", "anonymous": ["public/", "tools/base"], "decision_ttl": "1m"}},
                base_dir=tmp_path)
    access = cfg.access
    assert access.enabled and access.anonymous == ("public", "tools/base") and access.decision_ttl == 60
    assert access.signing_cert == str(tmp_path / "c/token-signer.crt")
    assert access.signing_key == str(tmp_path / "c/token-signer.key")
    assert (access.token_ttl, access.stale_decisions, str(access.listen)) == (300, 3600, "0.0.0.0:5001")
    assert access.signing_generated  # the mirror's own pair: it rotates it
    own = parse({**BASE, "access": {"users": "artifactory", "signing_cert": "/s/t.crt", "signing_key": "/s/t.key"}})
    assert own.access.signing_cert == "/s/t.crt" and not own.access.signing_generated


@pytest.mark.parametrize("data, message", [
    ({"access": {"users": "ldap"}}, r"access\.users: 'ldap' is not one of none, artifactory"),
    ({"access": {"users": "artifactory"}, "mirror": {"tls": False}},
     r"access\.users: artifactory needs mirror\.tls: true"),
    ({"access": {"users": "artifactory", "listen": "0.0.0.0:5000"}},
     r"access\.listen: 0\.0\.0\.0:5000 is mirror\.listen"),
    ({"access": {"users": "artifactory", "signing_cert": "s.crt"}}, r"set signing_cert and signing_key together"),
    ({"access": {"users": "artifactory", "token_ttl": 5}}, r"access\.token_ttl: .*is under 10 seconds"),
    ({"access": {"users": "artifactory", "anonymous": ["/"]}}, r"access\.anonymous: '/' is not the start of an image"),
    ({"mirror": {"tls": False, "client_ca": "ca.pem"}}, r"mirror\.client_ca: needs mirror\.tls: true"),
    ({"upstream": {"url": "https://regional:5000", "path_prefix": "", "anonymous": True},
      "access": {"users": "artifactory"}}, r"access\.users: artifactory needs an upstream that checks users"),
])
def test_access_and_mutual_tls_errors_name_the_key(tmp_path, data, message):
    certs.ensure_own_pair(str(tmp_path / "ca.pem"), str(tmp_path / "ca.key"), "clients' CA", "pair")
    with pytest.raises(ConfigError, match=message):
        parse({**BASE, **data}, base_dir=tmp_path)


def test_an_upstream_client_certificate_comes_with_its_key_and_loads(tmp_path):
    certs.ensure_own_pair(str(tmp_path / "dc1.crt"), str(tmp_path / "dc1.key"), "dc1", "pair")
    cfg = parse(with_upstream(client_cert="dc1.crt", client_key="dc1.key"), base_dir=tmp_path)
    assert cfg.upstream.client_cert == str(tmp_path / "dc1.crt")
    with pytest.raises(ConfigError, match=r"upstream\.client_cert: set client_cert and client_key together"):
        parse(with_upstream(client_cert="dc1.crt"), base_dir=tmp_path)
    (tmp_path / "other.key").write_text("not a key")
    with pytest.raises(ConfigError, match=r"upstream\.client_cert: cannot load .*dc1\.crt with .*other\.key"):
        parse(with_upstream(client_cert="dc1.crt", client_key="other.key"), base_dir=tmp_path)


def test_a_command_that_uses_no_secret_loads_without_any(tmp_path):
    text = yaml.safe_dump({
        "upstream": {"url": "https://art.example.com", "repository": "r", "username": "ci",
                     "password": "${ARTIFACTORY_PASSWORD}"},
        "routes": [{"prefix": "hub", "url": "https://hub.example.com", "path_prefix": "",
                    "token_file": str(tmp_path / "missing")}],
        "mirror": {"s3": {"bucket": "mirror", "access_key": "AK", "secret_key_file": "/run/secrets/none"}},
        "rewriter": {"web_password": "${WEB_PASSWORD}"},
        "webhooks": {"listen": "0.0.0.0:8084", "secret_file": "/run/secrets/none"}})
    (tmp_path / "mirror.yaml").write_text(text)
    with pytest.raises(ConfigError, match="environment variable [A-Z_]* is not set"):
        load(tmp_path / "mirror.yaml", environ={})
    cfg = load(tmp_path / "mirror.yaml", environ={}, read_secrets=False)
    assert cfg.upstream.password == UNREAD and cfg.routes[0].token == UNREAD
    assert cfg.mirror.s3.secret_key == UNREAD and cfg.webhooks.secret == UNREAD
    assert cfg.upstream.origin == "https://art.example.com"  # what the command does use, as written


@pytest.mark.parametrize("data, message", [
    ({"metrics": {"tls": True}}, r"metrics\.tls: set metrics\.listen too"),
    ({"metrics": {"listen": "127.0.0.1:8081"}}, r"metrics\.listen: 127\.0\.0\.1:8081 is rewriter\.listen"),
    ({"metrics": {"listen": "0.0.0.0:5001"}, "access": {"users": "artifactory"}},
     r"metrics\.listen: 0\.0\.0\.0:5001 is access\.listen"),
    ({"metrics": {"listen": "0.0.0.0:9464", "tls": True}, "mirror": {"tls": False}},
     r"metrics\.tls: true needs mirror\.tls: true"),
])
def test_the_metrics_listener_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse({**BASE, **data})


def test_the_metrics_listener_is_off_by_default():
    assert not parse(BASE).metrics.enabled
    assert parse({**BASE, "metrics": {"listen": "0.0.0.0:9464"}}).metrics.listen.port == 9464
