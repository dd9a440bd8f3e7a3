"""The addon's hooks inside mitmproxy's test context: called directly, or a request through the entry script's
addons in their order (the reserved pages first), as mitmproxy calls them."""
import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow, tutils

from registry_mirror.proxy import addon as addon_mod
from registry_mirror.proxy.addon import RegistryMirror
from registry_mirror.proxy.notifications import SECRET_HEADER
from registry_mirror.script.mirror import mirror_addons
from tests.unit.support.waits import BOUND


@pytest.fixture
def config_file(tmp_path):
    f = tmp_path / "mirror.yaml"
    # port 9 (discard) on loopback: nothing the refused requests could reach anyway
    f.write_text("upstream:\n  url: http://127.0.0.1:9\n  repository: docker-local\n  anonymous: true\n")
    return f


def flow_for(method, path, headers=()):
    return tflow.tflow(req=tutils.treq(method=method.encode(), path=path.encode(), host="127.0.0.1", port=8081,
                                       headers=list(headers) or [(b"host", b"127.0.0.1:8081")]))


class WatchedEvent(asyncio.Event):
    """An event that tells when a request starts waiting on it."""
    def __init__(self):
        super().__init__()
        self.waited = asyncio.Event()

    async def wait(self):
        self.waited.set()
        return await super().wait()


async def run_request(config_file, method, path, headers=(), started=False):
    """A request through the entry script's addons (the mirror started first, if `started`)."""
    addons = mirror_addons()
    mirror = next(a for a in addons if isinstance(a, RegistryMirror))

    with taddons.context(*addons) as tctx:
        tctx.configure(mirror, mirror_config=str(config_file))
        if started:
            await mirror.running()
        try:
            f = flow_for(method, path, headers)
            await tctx.master.addons.handle_lifecycle(HttpRequestHook(f))
            return f
        finally:
            await mirror.done()


@pytest.mark.parametrize("method,path,status,code", [
    ("PUT", "/v2/app/manifests/1.0", 405, "UNSUPPORTED"),
    ("POST", "/v2/app/blobs/uploads/", 405, "UNSUPPORTED"),
    ("DELETE", "/v2/app/manifests/1.0", 405, "UNSUPPORTED"),
    ("GET", "/v2/../secret/manifests/1.0", 400, "NAME_INVALID"),
    ("GET", "/v2/a%2F..%2Fb/manifests/1.0", 400, "NAME_INVALID"),
    ("GET", "/v2/app/blobs/md5:xyz", 400, "DIGEST_INVALID"),
    ("GET", "/admin", 404, "NOT_FOUND"),
])
async def test_refusals_are_answered_locally(config_file, method, path, status, code):
    f = await run_request(config_file, method, path)
    assert f.response.status_code == status
    assert json.loads(f.response.content)["errors"][0]["code"] == code
    assert f.response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert f.request.host == "127.0.0.1" and f.request.port == 8081  # never re-targeted upstream


async def test_ping_answered_locally_with_a_challenge(config_file):
    f = await run_request(config_file, "GET", "/v2/")
    assert f.response.status_code == 401
    assert f.response.headers["WWW-Authenticate"].startswith("Basic ")
    assert f.response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


async def test_head_answer_has_no_body(config_file):
    f = await run_request(config_file, "HEAD", "/v2/Bad/manifests/x")
    assert f.response.status_code == 400
    assert f.response.raw_content == b""
    assert int(f.response.headers["Content-Length"]) > 0


def test_required_options_are_enforced(config_file):
    addon = RegistryMirror()
    with taddons.context(addon) as tctx:
        tctx.options.add_option("connection_strategy", str, "eager", "core option")
        tctx.options.add_option("stream_large_bodies", str | None, None, "core option")
        tctx.configure(addon, mirror_config=str(config_file))
        assert tctx.options.connection_strategy == "lazy"
        assert tctx.options.stream_large_bodies == "1m"


def test_bad_config_is_an_options_error(tmp_path, config_file, monkeypatch):
    monkeypatch.setenv("MIRROR_CONFIG", str(config_file))  # what the rollback returns to
    bad = tmp_path / "mirror.yaml"
    bad.write_text("upstream:\n  url: ftp://x\n  repository: r\n  anonymous: true\n")
    addon = RegistryMirror()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="upstream.url"):
            tctx.configure(addon, mirror_config=str(bad))


async def test_a_request_before_start_up_finishes_waits_for_it(config_file, tmp_path):
    # mitmproxy listens before it calls the addons' `running`; a registry request in that gap must not fail
    config_file.write_text(config_file.read_text() + f"cache:\n  spool_dir: {tmp_path / 'spool'}\n")
    addon = RegistryMirror()
    addon.started = WatchedEvent()

    with taddons.context(addon) as tctx:
        tctx.configure(addon, mirror_config=str(config_file))
        f = flow_for("GET", "/v2/team/app/blobs/sha256:" + "a" * 64)
        pending = asyncio.create_task(addon.request(f))
        await asyncio.wait_for(addon.started.waited.wait(), BOUND)
        assert not pending.done() and f.response is None  # waiting for the start-up
        await addon.running()
        await asyncio.wait_for(pending, BOUND)
        await addon.done()
    assert f.response.status_code == 307  # to the blob endpoint, which exists now
    assert f.response.headers["X-Mirror-Cache"] == "BLOB-ENDPOINT"


async def test_an_unconfigured_addon_answers_503_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(addon_mod, "STARTUP_WAIT", 3600.0)  # a wait for a start-up would outlast the bound
    addon = RegistryMirror()
    addon.started = WatchedEvent()

    with taddons.context(addon):
        f = flow_for("GET", "/v2/team/app/manifests/1.0")
        await asyncio.wait_for(addon.request(f), BOUND)
    assert not addon.started.waited.is_set()  # nothing to wait for: no configuration, no start-up coming
    assert f.response.status_code == 503
    assert "has not started" in json.loads(f.response.content)["errors"][0]["message"]


async def test_the_configuration_cannot_be_swapped_under_a_running_mirror(config_file, tmp_path):
    # e.g. from mitmweb's options editor: the routes, caches and the stock registry were built from the first
    config_file.write_text(config_file.read_text() + f"cache:\n  spool_dir: {tmp_path / 'spool'}\n")
    other = tmp_path / "other.yaml"
    other.write_text("upstream:\n  url: http://127.0.0.1:9\n  repository: elsewhere\n  anonymous: true\n")
    addon = RegistryMirror()

    with taddons.context(addon) as tctx:
        tctx.configure(addon, mirror_config=str(config_file))
        await addon.running()
        try:
            with pytest.raises(exceptions.OptionsError, match="restart it"):
                tctx.configure(addon, mirror_config=str(other))
        finally:
            await addon.done()
    assert addon.config.upstream.prefix.endswith("/docker-local")


@pytest.fixture
def startable(config_file, tmp_path):
    config_file.write_text(config_file.read_text() + f"cache:\n  spool_dir: {tmp_path / 'spool'}\n")
    return config_file


@pytest.mark.parametrize("started", [False, True])
async def test_ready_says_whether_the_mirror_has_started(startable, started):
    f = await run_request(startable, "GET", "/_mirror/ready", started=started)
    assert (f.response.status_code, json.loads(f.response.content)) == ((200, {"ready": True}) if started
                                                                         else (503, {"ready": False}))


@pytest.mark.parametrize("path,content_type,marker", [
    ("/_mirror/stats", "text/html; charset=utf-8", b"<title>artifactory-mirror stats</title>"),
    ("/_mirror/stats.json", "application/json", b'"upstream"'),
    ("/metrics", "text/plain; version=0.0.4", b"mirror_upstream_up"),
])
async def test_the_stats_pages_are_answered_before_the_registry_handler(startable, path, content_type, marker):
    f = await run_request(startable, "GET", path, started=True)
    assert f.response.status_code == 200 and f.response.headers["Content-Type"] == content_type
    assert marker in f.response.content and "X-Mirror-Cache" not in f.response.headers
    assert b'"storage"' in f.response.content or path != "/_mirror/stats.json"  # the expiry runs


async def test_a_browsers_favicon_is_no_registry_request(config_file):
    assert (await run_request(config_file, "GET", "/favicon.ico")).response.status_code == 204


async def test_a_notification_without_the_secret_is_refused_and_its_header_dropped(startable):
    f = await run_request(startable, "POST", "/_mirror/notifications",
                          headers=[(b"host", b"127.0.0.1:8081"), (SECRET_HEADER.encode(), b"guess")], started=True)
    assert f.response.status_code == 401 and json.loads(f.response.content)["accepted"] is False
    assert SECRET_HEADER not in f.request.headers
