"""The stock registry's configuration generated from mirror.yaml: pull-through to the addon, no credentials, its
notifications back to the addon, and TLS and draining as configured."""
import pytest
import yaml

from registry_mirror.cli.registry_config import proxy_registry_config
from registry_mirror.config.load import parse
from registry_mirror.proxy.notifications import NOTIFY_PATH, SECRET_HEADER
from registry_mirror.storage.layout import secret_file
from registry_mirror.tls import certs

REMOTE = "http://127.0.0.1:8081"


def config(tmp_path, **mirror):
    return parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local",
                               "username": "ci", "password": "fake-upstream-password"},
                  "mirror": {"storage": str(tmp_path / "storage"), "listen": "0.0.0.0:5000", **mirror}},
                 base_dir=tmp_path)


def test_the_registry_proxies_to_the_addon_and_holds_no_credential(tmp_path):
    generated = proxy_registry_config(config(tmp_path), REMOTE, http_secret="fake-http-secret")
    assert generated["proxy"] == {"remoteurl": REMOTE}  # no username or password: the addon adds them
    assert "fake-upstream-password" not in yaml.safe_dump(generated)
    assert generated["storage"]["filesystem"] == {"rootdirectory": str(tmp_path / "storage")}
    assert generated["http"]["addr"] == "0.0.0.0:5000" and generated["http"]["secret"] == "fake-http-secret"


def test_the_registry_never_deletes_and_keeps_no_blob_descriptor_cache(tmp_path):
    storage = proxy_registry_config(config(tmp_path), REMOTE)["storage"]
    assert storage["delete"] == {"enabled": False}  # expiry/passes.py removes images instead
    assert "cache" not in storage
    assert storage["maintenance"]["uploadpurging"]["enabled"] is True


def test_its_notifications_go_to_the_addon_with_the_storages_shared_secret(tmp_path):
    cfg = config(tmp_path)
    secret_file(cfg.mirror.storage).parent.mkdir(parents=True, exist_ok=True)
    secret_file(cfg.mirror.storage).write_text("fake-notify-secret\n")
    endpoint, = proxy_registry_config(cfg, REMOTE + "/")["notifications"]["endpoints"]
    assert endpoint["url"] == REMOTE + NOTIFY_PATH
    assert endpoint["headers"] == {SECRET_HEADER: ["fake-notify-secret"]}


def test_tls_serves_the_mirrors_pair_over_http1_and_off_serves_plain_http(tmp_path):
    http = proxy_registry_config(config(tmp_path), REMOTE)["http"]
    assert http["tls"] == {"certificate": str(tmp_path / "certs/mirror.crt"), "key": str(tmp_path / "certs/mirror.key")}
    assert http["http2"] == {"disabled": True}
    plain = proxy_registry_config(config(tmp_path, tls=False), REMOTE)["http"]
    assert "tls" not in plain and "http2" not in plain


def test_the_drain_timeout_is_the_registrys_and_zero_leaves_it_out(tmp_path):
    assert proxy_registry_config(config(tmp_path), REMOTE)["http"]["draintimeout"] == "60s"
    assert proxy_registry_config(config(tmp_path, drain_timeout=2.5), REMOTE)["http"]["draintimeout"] == "2.5s"
    assert "draintimeout" not in proxy_registry_config(config(tmp_path, drain_timeout=0), REMOTE)["http"]


def test_each_start_gets_a_fresh_http_secret_unless_one_is_given(tmp_path):
    cfg = config(tmp_path)
    first, second = (proxy_registry_config(cfg, REMOTE)["http"]["secret"] for _ in range(2))
    assert first != second and len(first) == 32


def test_on_a_bucket_without_keys_the_driver_takes_the_aws_chain_and_may_redirect(tmp_path):
    cfg = config(tmp_path, s3={"bucket": "registry-mirror", "region": "eu-west-1", "redirect": True})
    storage = proxy_registry_config(cfg, "http://127.0.0.1:8081")["storage"]
    assert storage["s3"] == {"bucket": "registry-mirror", "region": "eu-west-1", "v4auth": True}
    assert storage["redirect"] == {"disable": False} and "filesystem" not in storage
    assert storage["delete"] == {"enabled": False}  # the mirror's expiry, never the proxy's own
    assert storage["maintenance"]["uploadpurging"]["enabled"] is False  # its walk of a bucket can panic


def test_mutual_tls_trusts_the_clients_ca_and_the_mirrors_own_client_certificate(tmp_path):
    certs.ensure_own_pair(str(tmp_path / "nodes-ca.crt"), str(tmp_path / "nodes-ca.key"), "nodes", "pair")
    tls = proxy_registry_config(config(tmp_path, client_ca=str(tmp_path / "nodes-ca.crt")), REMOTE)["http"]["tls"]
    assert tls["clientcas"] == [str(tmp_path / "nodes-ca.crt"), str(tmp_path / "certs/mirror-client.crt")]
    assert "clientcas" not in proxy_registry_config(config(tmp_path), REMOTE)["http"]["tls"]


def test_per_user_access_sends_clients_to_the_token_realm_and_trusts_the_signer(tmp_path):
    cfg = parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local", "username": "ci",
                              "password": "fake-upstream-password"},
                 "access": {"users": "artifactory"}}, base_dir=tmp_path)
    auth = proxy_registry_config(cfg, REMOTE, realm="https://m.dc1.test:5001/token")["auth"]["token"]
    assert auth["realm"] == "https://m.dc1.test:5001/token" and auth["service"] == auth["issuer"]
    assert auth["rootcertbundle"] == str(tmp_path / "certs/token-signer.crt")
    bundle = proxy_registry_config(cfg, REMOTE, realm="https://m:5001/token", signer_bundle="/c/s.crt.bundle")
    assert bundle["auth"]["token"]["rootcertbundle"] == "/c/s.crt.bundle"
    assert "auth" not in proxy_registry_config(config(tmp_path), REMOTE)
    with pytest.raises(ValueError, match="token realm"):
        proxy_registry_config(cfg, REMOTE)
