"""`artifactory-mirror`'s commands that run without starting the mirror: the arguments, a configuration error's
one line and exit status, `check`, `status`, `clients`, `warm` without images, and `forget` through a running
addon (a stand-in on 127.0.0.1)."""
import asyncio
import json
import time
import uuid
from importlib.metadata import version

import pytest
from aiohttp import web

from devtools.ports import free_port
from registry_mirror.cli import commands
from registry_mirror.config.load import ENV_PATH, parse
from registry_mirror.proxy.notifications import SECRET_HEADER
from registry_mirror.stats.views import FORGET_PATH, JSON_PATH, summary_text
from registry_mirror.storage.bucket_store import BucketStore
from registry_mirror.storage.layout import secret_file
from registry_mirror.tls import certs
from tests.unit.stats.test_counters import filled, route
from tests.unit.support.local_http import serve
from tests.unit.support.storage import Storage
from tests.unit.tls.test_certs import DAY, make_pair

UPSTREAM = "upstream:\n  url: https://art.example.com\n  repository: docker-local\n  anonymous: true\n"
SHA = "sha256:" + "a" * 64


def write_config(tmp_path, text: str = "") -> str:
    """mirror.yaml in tmp_path: the upstream, its storage in tmp_path unless `text` has a mirror section of its
    own, and `text` (more sections)."""
    config = tmp_path / "mirror.yaml"
    config.write_text(f"{UPSTREAM}{text}" if "mirror:" in text else
                      f"{UPSTREAM}mirror:\n  storage: {tmp_path / 'storage'}\n{text}")
    return str(config)


def test_config_is_taken_before_or_after_the_command_or_from_the_environment(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    assert commands.main(["--config", config, "check"]) == 0
    assert commands.main(["check", "--config", config]) == 0
    monkeypatch.setenv(ENV_PATH, config)
    assert commands.main(["check"]) == 0
    assert capsys.readouterr().out.count(f"{config}: OK; upstream") == 3


def test_a_command_is_required_and_the_version_is_the_packages(capsys):
    with pytest.raises(SystemExit) as e:
        commands.main([])
    assert e.value.code == 2 and "the following arguments are required: COMMAND" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        commands.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"artifactory-mirror {version('artifactory-mirror')}\n"


def test_a_configuration_error_is_one_line_naming_the_file_and_exit_status_2(tmp_path, capsys):
    config = write_config(tmp_path, "rewriter:\n  listen: 8081\n")
    with pytest.raises(SystemExit) as e:
        commands.main(["--config", config, "check"])
    assert e.value.code == 2
    assert capsys.readouterr().err == (f"artifactory-mirror: configuration error in {config}: rewriter.listen: "
                                       f"expected host:port, got int 8081\n")


def test_check_shows_where_each_route_sends_a_name_and_the_webhook_address(tmp_path, capsys):
    config = write_config(tmp_path, "mirror:\n  tls: false\n  listen: 0.0.0.0:5000\n"
                                    "routes:\n  - prefix: team-a\n    strip_prefix: true\n"
                                    "  - ns: [docker.io]\n    url: https://hub.example.com\n    anonymous: true\n"
                                    "    path_prefix: ''\n    library: add\n"
                                    "webhooks:\n  listen: 0.0.0.0:8084\n  secret: fake-webhook-secret\n")
    assert commands.main(["--config", config, "check"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{config}: OK; upstream https://art.example.com/artifactory/api/docker/docker-local/v2/, mirror on "
        "http://0.0.0.0:5000, addon on 127.0.0.1:8081",
        "  webhooks: http://0.0.0.0:8084/_mirror/webhooks/artifactory",
        "  routes[0]: names under team-a/: /v2/team-a/<name> -> "
        "https://art.example.com/artifactory/api/docker/docker-local/v2/<name>",
        "  routes[1]: ns docker.io: /v2/<name> -> https://hub.example.com/v2/library/<name>"]


def test_check_refuses_an_expired_token_signer_and_names_the_token_endpoint(tmp_path, capsys):
    config = tmp_path / "mirror.yaml"
    config.write_text("upstream:\n  url: https://art.example.com\n  repository: docker-local\n  username: ci\n"
                      f"  password: fake-password\nmirror:\n  storage: {tmp_path / 'storage'}\n"
                      "access:\n  users: artifactory\n")
    config = str(config)
    assert commands.main(["--config", config, "check"]) == 0  # no pair yet: `up` generates one
    assert "  access: each pull checked against the client's Artifactory user; tokens from " \
           "https://0.0.0.0:5001/token" in capsys.readouterr().out
    (tmp_path / "certs").mkdir()
    cert, _ = make_pair(tmp_path / "certs", time.time() - DAY, cert_name="token-signer.crt",
                        key_name="token-signer.key")
    assert commands.main(["--config", config, "check"]) == 2
    assert f"error: the token signing certificate {cert} expired on" in capsys.readouterr().err


def test_a_route_is_described_by_its_prefix_and_its_ns():
    cfg = parse({"upstream": {"url": "https://art.example.com", "repository": "docker-local", "anonymous": True},
                 "routes": [{"prefix": "hub", "ns": ["docker.io", "ghcr.io"]}]})
    assert commands.describe_match(cfg.routes[0]) == "names under hub/ and ns docker.io, ghcr.io"


def test_status_without_a_running_mirror_says_what_to_start(tmp_path, capsys):
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, f"rewriter:\n  listen: 127.0.0.1:{port}\n")
    assert commands.main(["--config", config, "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"artifactory-mirror: no stats at http://127.0.0.1:{port}{JSON_PATH} (")
    assert err.endswith("is `artifactory-mirror up` running with this configuration?\n")


def test_status_and_clients_run_without_the_upstreams_secret(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ARTIFACTORY_PASSWORD", raising=False)
    certs.ensure_self_signed(str(tmp_path / "certs/mirror.crt"), str(tmp_path / "certs/mirror.key"))
    config = tmp_path / "mirror.yaml"
    config.write_text("upstream:\n  url: https://art.example.com\n  repository: docker-local\n  username: ci\n"
                      "  password: ${ARTIFACTORY_PASSWORD}\n"
                      f"mirror:\n  storage: {tmp_path / 'storage'}\n  listen: 127.0.0.1:5000\n"
                      f"rewriter:\n  listen: 127.0.0.1:{free_port()}\n")
    with pytest.raises(SystemExit) as refused:  # check reads every secret
        commands.main(["--config", str(config), "check"])
    assert refused.value.code == 2 and "ARTIFACTORY_PASSWORD is not set" in capsys.readouterr().err
    assert commands.main(["--config", str(config), "status"]) == 1  # no mirror running: not a configuration error
    assert "no stats at" in capsys.readouterr().err
    assert commands.main(["--config", str(config), "clients"]) == 0
    assert "#### docker" in capsys.readouterr().out


async def mirror_stand_in(answer):
    """The running addon on 127.0.0.1: `answer(request)` for every request; (runner, port)."""
    async def handler(request: web.Request) -> web.Response:
        status, body = await answer(request)
        return web.json_response(body, status=status)
    return await serve(handler)


async def test_status_prints_the_summary_of_the_running_mirrors_stats(tmp_path, capsys):
    stats, health = filled()
    snap = stats.snapshot([route(health, "https://art.example.com/x")])
    asked = []

    async def answer(request):
        asked.append(request.path)
        return 200, snap
    runner, port = await mirror_stand_in(answer)
    try:
        config = write_config(tmp_path, f"rewriter:\n  listen: 0.0.0.0:{port}\n")  # reached on 127.0.0.1
        assert await asyncio.to_thread(commands.main, ["--config", config, "status"]) == 0
    finally:
        await runner.cleanup()
    assert asked == [JSON_PATH] and capsys.readouterr().out == summary_text(snap) + "\n"


async def test_forget_goes_to_the_running_mirror_with_the_storages_secret(tmp_path, capsys):
    storage = tmp_path / "storage"
    secret_file(str(storage)).write_text("fake-notify-secret\n")
    asked = []

    async def answer(request):
        asked.append((request.method, request.path, request.headers.get(SECRET_HEADER), await request.json()))
        return 200, {"images": [f"team/app@{SHA}"], "blobs": 3, "bytes": 3_800_000,
                     "replicas": "told 1 other replica to drop it from their caches"}
    runner, port = await mirror_stand_in(answer)
    try:
        config = write_config(tmp_path, f"rewriter:\n  listen: 127.0.0.1:{port}\n")
        assert await asyncio.to_thread(commands.main, ["--config", config, "forget", "team/app:1.0"]) == 0
        assert await asyncio.to_thread(commands.main, ["--config", config, "forget", "--dry-run", "team/app"]) == 0
    finally:
        await runner.cleanup()
    assert asked == [("POST", FORGET_PATH, "fake-notify-secret", {"image": "team/app:1.0", "dry_run": False}),
                     ("POST", FORGET_PATH, "fake-notify-secret", {"image": "team/app", "dry_run": True})]
    assert capsys.readouterr().out.splitlines() == [
        f"forgot team/app@{SHA}",
        "1 images, 3 blobs (3.8 MB) removed from the running mirror (storage and caches); told 1 other replica to "
        "drop it from their caches",
        f"would forget team/app@{SHA}",
        "1 images, 3 blobs (3.8 MB) would go from the running mirror (storage and caches); told 1 other replica to "
        "drop it from their caches"]


async def test_forget_says_why_the_running_mirror_refused(tmp_path, capsys):
    async def answer(request):
        return 503, {"accepted": False, "reason": "the mirror has not started"}
    runner, port = await mirror_stand_in(answer)
    try:
        config = write_config(tmp_path, f"rewriter:\n  listen: 127.0.0.1:{port}\n")
        assert await asyncio.to_thread(commands.main, ["--config", config, "forget", "team/app:1.0"]) == 1
    finally:
        await runner.cleanup()
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("artifactory-mirror: the mirror refused: ")
    assert "the mirror has not started" in err


def test_warm_without_images_says_what_to_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        commands.main(["--config", write_config(tmp_path), "warm"])
    assert e.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith("artifactory-mirror warm: error: name at least one image, "
                                                     "or -f FILE")


@pytest.mark.parametrize("mirror,message", [
    ("  tls: false\n", "artifactory-mirror: mirror.tls is off; clients need a TLS mirror (or each its own insecure "
                       "setting)\n"),
    ("  tls_cert: {tmp}/certs/mirror.crt\n", "artifactory-mirror: mirror.tls_cert {tmp}/certs/mirror.crt does not "
                                             "exist yet: start the mirror once (`up` generates a self-signed pair) "
                                             "or put your certificate and key there\n"),
])
def test_clients_refuse_a_mirror_they_could_not_trust(tmp_path, capsys, mirror, message):
    config = write_config(tmp_path, f"mirror:\n  storage: {tmp_path / 'storage'}\n{mirror.format(tmp=tmp_path)}")
    assert commands.main(["--config", config, "clients"]) == 2
    assert capsys.readouterr() == ("", message.format(tmp=tmp_path))


def test_clients_print_each_clients_configuration_with_the_mirrors_ca(tmp_path, capsys):
    cert = tmp_path / "certs" / "mirror.crt"
    certs.ensure_self_signed(str(cert), str(tmp_path / "certs" / "mirror.key"), extra_names=("mirror.dc1.example.com",))
    config = write_config(tmp_path, f"mirror:\n  storage: {tmp_path / 'storage'}\n  tls_cert: {cert}\n"
                                    f"  tls_key: {tmp_path / 'certs' / 'mirror.key'}\n")
    assert commands.main(["--config", config, "clients", "--address", "mirror.dc1.example.com:5000"]) == 0
    out = capsys.readouterr().out
    trust = tmp_path / "certs" / "trust" / "ca.crt"
    assert trust.read_bytes() == cert.read_bytes()  # the trust folder the install lines copy from
    assert (f"$ install -D -m 0644 {trust} /etc/docker/certs.d/mirror.dc1.example.com:5000/ca.crt") in out
    assert "==> /etc/containerd/certs.d/art.example.com/hosts.toml <==" in out
    assert commands.main(["--config", config, "clients"]) == 0  # listening on every address: this machine's name
    assert f"/etc/docker/certs.d/{commands.machine_name()}:5000/ca.crt" in capsys.readouterr().out


@pytest.mark.bucket
def test_the_commands_on_the_storage_act_on_the_bucket(tmp_path, capsys, object_store, s3):
    """evictions and forget read (and change) the registry's storage in mirror.s3's bucket, its last pulls beside."""
    prefix = f"tests/{uuid.uuid4().hex}"
    storage = Storage(BucketStore(s3.client, s3.bucket, prefix))
    old, new = storage.image("team/old", [storage.blob()], tag="1.0"), storage.image("team/new", [storage.blob()])
    pulls = BucketStore(s3.client, s3.bucket, f"{prefix}/artifactory-mirror/pulls")
    rows = [["team/old", old, 1.0], ["team/new", new, time.time()]]  # 1970, and now
    pulls.write("host-8081.json", json.dumps({"pulls": rows}).encode())
    keys = {**object_store.mirror_keys(), "prefix": prefix}
    s3_keys = "".join(f"    {key}: {value}\n" for key, value in keys.items())
    config = write_config(tmp_path, f"mirror:\n  storage: {tmp_path / 'storage'}\n  max_age: 7d\n  s3:\n{s3_keys}"
                                    f"rewriter:\n  listen: 127.0.0.1:{free_port()}\n")
    before = storage.tree()
    assert commands.main(["--config", config, "evictions"]) == 0
    out = capsys.readouterr().out
    assert f"team/old@{old}  last pulled 1970-01-01 00:00 UTC  (age)" in out and "team/new" not in out
    assert commands.main(["--config", config, "forget", "--dry-run", "team/new"]) == 0
    out = capsys.readouterr().out
    assert f"would forget team/new@{new}" in out and f"bucket {s3.bucket}/{prefix}/" in out
    assert storage.tree() == before


def test_clients_refuse_an_address_the_certificate_does_not_carry_and_say_how_to_get_one(tmp_path, capsys):
    cert, key = tmp_path / "certs" / "mirror.crt", tmp_path / "certs" / "mirror.key"
    certs.ensure_self_signed(str(cert), str(key), extra_names=("mirror.dc1.test",))
    config = write_config(tmp_path, f"mirror:\n  storage: {tmp_path / 'storage'}\n  tls_cert: {cert}\n"
                                    f"  tls_key: {key}\n")
    assert commands.main(["--config", config, "clients", "--address", "mirror-other.dc1.test:5000"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "is not valid for mirror-other.dc1.test (it names " in captured.err
    assert "mirror.dc1.test" in captured.err and f"delete {cert} and {key}" in captured.err
    assert commands.main(["--config", config, "clients", "--address", "[::1]:5000"]) == 2  # not in it either
    assert commands.main(["--config", config, "clients", "--address", "127.0.0.1:5000"]) == 0


def test_a_certificate_name_matches_as_clients_match_it():
    names = ["*.dc1.example.com", "mirror.test", "10.0.0.5"]
    assert certs.names_host(names, "mirror.dc1.example.com") and certs.names_host(names, "MIRROR.test")
    assert not certs.names_host(names, "a.b.dc1.example.com") and not certs.names_host(names, "dc1.example.com")
    assert certs.names_host(names, "10.0.0.5") and not certs.names_host(names, "10.0.0.6")
    assert commands.address_host("[::1]:5000") == "::1" and commands.address_host("m.test:5000") == "m.test"
    assert commands.address_host("::1") == "::1"
