"""The stock registry + mitmdump with the addon + the Artifactory-compatible upstream + skopeo."""
from __future__ import annotations

import base64
import http.server
import subprocess
import threading

import pytest
from mitmproxy import io as mitm_io

from devtools import seed
from devtools.ports import free_port
from devtools.skopeo import PullError, pull

from .conftest import assert_pulled_identical, blob_gets, credentials_of, raw_request, small_image, wait_for


@pytest.mark.mtu1500
@pytest.mark.parametrize("blob_redirect", [True, False], ids=["blobs-redirected", "blobs-through-mitmproxy"])
def test_cold_then_warm_pull_is_byte_identical_and_warm_needs_no_blob(upstream, mirror_factory, layer_cache, tmp_path,
                                                                      blob_redirect, bucket):
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), rewriter={"blob_redirect": blob_redirect}, bucket=bucket)
    ref = f"{mirror.address}/{image.name}:{image.tag}"

    pull(ref, tmp_path / "cold", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "cold", image)
    mirror.settle(upstream, image)  # the upstream records a request once its answer has ended
    cold = upstream.stats()
    assert {r["method"] for r in cold["requests"]} <= {"GET", "HEAD"}
    assert all(r["path"].startswith("/artifactory/api/docker/docker-local/v2/") for r in cold["requests"])
    assert {r["path"].rsplit("/", 1)[1] for r in blob_gets(cold)} == {b.digest for b in (*image.layers, image.config)}
    upstream.control("reset")
    pull(ref, tmp_path / "warm", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "warm", image)
    assert blob_gets(upstream.stats()) == []  # layers came from the mirror's store

    by_digest = f"{mirror.address}/{image.name}@{image.manifest_digest}"
    pull(by_digest, tmp_path / "by-digest", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "by-digest", image)

    # the ping is answered locally with a challenge, so the registry pings at start and once more to
    # establish it, instead of before every operation
    mirror.mirror.stop()
    with open(mirror.mirror.dump, "rb") as f:
        flows = list(mitm_io.FlowReader(f).stream())
    pings = [fl for fl in flows if fl.request.path == "/v2/"]
    assert 1 <= len(pings) <= 2 and all(fl.response.headers["X-Mirror-Cache"] == "LOCAL" for fl in pings)
    if bucket is not None:  # the store's secret reaches the registry's environment only, never a log or a flow
        for where, data in {"logs": mirror.logs().encode(), "flows": open(mirror.mirror.dump, "rb").read()}.items():
            assert bucket.secret_key.encode() not in data, f"the bucket's secret key leaked into the {where}"
    assert upstream.stats()["requests"] == [] or all(
        not r["path"].endswith("/v2/") for r in upstream.stats()["requests"])


@pytest.mark.mtu1500
@pytest.mark.parametrize("auth", ["basic", "bearer", "token"])
def test_each_upstream_auth_kind(upstream_factory, mirror_factory, layer_cache, tmp_path, auth):
    upstream = upstream_factory(auth=auth)
    image = small_image(layer_cache, name=f"auth/{auth}")
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream))
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "out", image)
    stats = upstream.stats()
    if auth == "token":
        assert stats["tokens_issued"] == 1  # one scope, one token, reused for every request
    else:
        assert stats["tokens_issued"] == 0
        assert [r for r in stats["requests"] if r["status"] == 401] == []  # credentials sent up front


@pytest.mark.mtu1500
def test_token_expiring_in_the_middle_of_a_pull_is_refreshed(upstream_factory, mirror_factory, layer_cache, tmp_path):
    # each token dies after 3 requests: the manifest HEAD, GET and one blob; every later request meets a 401
    upstream = upstream_factory(auth="token", token_uses=3)
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream))
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "out", image)
    stats = upstream.stats()
    assert stats["tokens_issued"] >= 3
    rejected = [r for r in stats["requests"] if r["status"] == 401 and "/v2/token" not in r["path"]]
    assert len(rejected) >= 2  # the first challenge, then expiries mid-pull, each followed by a refresh


def test_revoked_token_is_dropped_and_refreshed(upstream, mirror_factory, layer_cache, tmp_path):
    first, second = small_image(layer_cache, tag="1.0"), small_image(layer_cache, tag="2.0", seed_base=20)
    seed.push(upstream.registry_url, first)
    seed.push(upstream.registry_url, second)
    mirror = mirror_factory(credentials_of(upstream))
    pull(f"{mirror.address}/{first.name}:1.0", tmp_path / "a", cert_dir=mirror.trust)
    upstream.control("revoke")
    pull(f"{mirror.address}/{second.name}:2.0", tmp_path / "b", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "b", second)
    assert upstream.stats()["tokens_issued"] == 2


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str]] = []

    def do_GET(self):
        RecordingHandler.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        body = b'{"token": "foreign", "expires_in": 300}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_foreign_realm_is_refused_and_receives_nothing(upstream_factory, mirror_factory, layer_cache, tmp_path):
    RecordingHandler.seen = []
    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        realm = f"http://127.0.0.1:{listener.server_address[1]}/token"
        upstream = upstream_factory(auth="token", realm=realm)
        image = small_image(layer_cache)
        seed.push(upstream.registry_url, image)
        mirror = mirror_factory(credentials_of(upstream))
        with pytest.raises(PullError):
            pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
        assert RecordingHandler.seen == []
        assert "refusing the upstream's token realm" in mirror.logs()
        assert "upstream.allowed_realm_hosts" in mirror.logs()
    finally:
        listener.shutdown()
        listener.server_close()


def test_push_and_other_writes_are_refused_and_never_forwarded(upstream, mirror_factory, layer_cache, tmp_path):
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream))
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    push = subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-cert-dir", str(mirror.trust),
                           f"dir:{tmp_path / 'out'}", f"docker://{mirror.address}/{image.name}:pushed"],
                          capture_output=True, text=True, timeout=120)
    assert push.returncode != 0
    for method, path in [("PUT", f"/v2/{image.name}/manifests/pushed"), ("POST", f"/v2/{image.name}/blobs/uploads/"),
                         ("DELETE", f"/v2/{image.name}/manifests/{image.manifest_digest}"),
                         ("PATCH", f"/v2/{image.name}/blobs/uploads/x")]:
        status, body = raw_request(mirror.rewriter + path, method)
        assert status == 405 and body["errors"][0]["code"] == "UNSUPPORTED"
    # (the stock registry may still be finishing its background fetches of the pulled blobs: GETs)
    assert {r["method"] for r in upstream.stats()["requests"]} <= {"GET", "HEAD"}


@pytest.mark.parametrize("path,code", [
    ("/v2/Team/App/manifests/1.0", "NAME_INVALID"),
    ("/v2/team/../../etc/manifests/1.0", "NAME_INVALID"),
    ("/v2/team%2F..%2Fadmin/manifests/1.0", "NAME_INVALID"),
    ("/v2/team/app/manifests/-bad", "MANIFEST_INVALID"),
    ("/v2/team/app/blobs/sha256:1234", "DIGEST_INVALID"),
])
def test_invalid_names_are_refused_before_the_upstream(upstream, mirror_factory, path, code):
    mirror = mirror_factory(credentials_of(upstream), dump=False)
    status, body = raw_request(mirror.rewriter + path)
    assert status == 400 and body["errors"][0]["code"] == code
    assert upstream.stats()["requests"] == []


def test_registry_starts_while_the_upstream_is_down(upstream_factory, mirror_factory, layer_cache, tmp_path):
    port = free_port()
    mirror = mirror_factory({"url": f"http://127.0.0.1:{port}", "username": "deployer",
                             "password": "s3cret-Pa55word"})
    # the registry pings its remote as it starts and panics if that fails: the addon answered it
    wait_for(lambda: mirror.counters().get("ping:local", 0) >= 1, "the stock registry's start-up ping")
    assert mirror.mirror.registry.poll() is None and mirror.mirror.mitm.poll() is None
    with pytest.raises(PullError) as e:
        pull(f"{mirror.address}/team/app:1.0", tmp_path / "out", cert_dir=mirror.trust, timeout=120)
    assert "did not finish within" not in str(e.value)
    # why, on the stats page (the log words it by whether the probe had marked the upstream down by then)
    assert "Cannot connect to host" in mirror.stats()["upstream"]["last_error"]
    # the upstream comes up on that address: the same mirror serves without a restart
    upstream = upstream_factory(front_port=port)
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    assert_pulled_identical(tmp_path / "out", image)
    assert mirror.mirror.registry.poll() is None


@pytest.mark.parametrize("auth", ["token", "basic", "bearer"])
def test_no_secret_in_logs_or_flow_dumps(upstream_factory, mirror_factory, layer_cache, tmp_path, auth):
    upstream = upstream_factory(auth=auth)
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream))
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust)
    mirror.mirror.stop()  # flushes the flow dump
    dump = mirror.mirror.dump
    secrets = [upstream.password, upstream.static_token,
               base64.b64encode(f"{upstream.username}:{upstream.password}".encode()).decode(),
               *upstream.stats()["issued_tokens"]]
    blobs = {"logs": mirror.logs().encode(), "flows": open(dump, "rb").read()}
    for where, data in blobs.items():
        for secret in secrets:
            assert secret.encode() not in data, f"a credential leaked into the {where}"
    with open(dump, "rb") as f:
        flows = list(mitm_io.FlowReader(f).stream())
    upstream_flows = [fl for fl in flows if "/artifactory/api/docker/" in fl.request.path]
    assert upstream_flows, "flows show the upstream URL they were sent to"
    markers = {fl.request.headers.get("Authorization") for fl in upstream_flows}
    assert markers <= {"Basic <redacted by artifactory-mirror>", "Bearer <redacted by artifactory-mirror>"}


def test_hung_upstream_fails_within_the_timeout(mirror_factory, tmp_path):
    import socket
    with socket.socket() as hung:  # accepts TCP (backlog), never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        port = hung.getsockname()[1]
        mirror = mirror_factory({"url": f"http://127.0.0.1:{port}", "anonymous": True, "request_timeout": 2,
                                 "connect_timeout": 1}, dump=False)
        with pytest.raises(PullError) as e:  # the stock registry alone would wait for ever
            pull(f"{mirror.address}/team/app:1.0", tmp_path / "out", cert_dir=mirror.trust, timeout=120)
        assert "did not finish within" not in str(e.value)
        assert "timed out" in mirror.logs()
        assert mirror.mirror.registry.poll() is None and mirror.mirror.mitm.poll() is None
