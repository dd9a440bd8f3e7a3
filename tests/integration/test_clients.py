"""containerd, podman and docker pull through the mirror with exactly what `artifactory-mirror clients` prints.

Each test applies the printed files and copies (moved under the test's folder), pulls the upstream host's
references as users write them, and asserts on the mirror's own counters and the upstream's request log that
the pull went through the mirror: a client that fell back to the upstream shows there as a request for /v2/ at
the upstream's root, which only a direct client sends.
"""
from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlsplit

import pytest

from devtools import seed
from devtools.client_drivers import ClientError, Containerd, Dockerd, Podman, apply_printed
from devtools.netpath import HOST_SIDE, MtuPath
from devtools.ports import free_port
from registry_mirror.tls import certs

from .conftest import MIRROR_COMMAND, credentials_of, stored_digests


def tar_image(name: str, tag: str, seed_base: int, architecture: str = "amd64") -> seed.Image:
    """Two real gzip'd tar layers: clients unpack what they pull."""
    layers = [seed.tar_layer(2 * seed.MIB, seed_base), seed.tar_layer(64 * 1024, seed_base + 1)]
    return seed.build_image(name, tag, layers, architecture)


def blobs_of(*images: seed.Image) -> set[str]:
    return {blob.digest for image in images for blob in (*image.layers, image.config)}


def printed_clients(mirror, *more: str) -> str:
    result = subprocess.run([MIRROR_COMMAND, "clients", "--config", mirror.cfg.source, *more], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def direct_requests(upstream) -> list[dict]:
    """Requests that reached the upstream without the mirror: a client's own, at /v2/ under the root."""
    return [r for r in upstream.stats()["requests"] if r["path"].startswith("/v2")]


@pytest.fixture
def images(upstream):
    """team/app:1.0, and team/multi:2.0, an index of linux/amd64 and linux/arm64 with layers of their own."""
    app = tar_image("team/app", "1.0", 500)
    amd64, arm64 = tar_image("team/multi", "2.0", 510), tar_image("team/multi", "2.0", 520, "arm64")
    seed.push(upstream.registry_url, app)
    seed.push_index(upstream.registry_url, "team/multi", "2.0",
                                      {"linux/amd64": amd64, "linux/arm64": arm64})
    return {"app": app, "amd64": amd64, "arm64": arm64}


@pytest.fixture
def containerd(tmp_path):
    daemon = Containerd(tmp_path / "containerd")
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def upstream_host(upstream) -> str:
    return urlsplit(upstream.url).netloc


def test_containerd_pulls_tag_digest_and_one_platform_through_the_mirror(upstream, images, mirror_factory,
                                                                        containerd, tmp_path):
    mirror = mirror_factory(credentials_of(upstream))
    host = upstream_host(upstream)
    apply_printed(printed_clients(mirror), f"containerd (without the fallback to {host})", tmp_path / "root")
    hosts_dir = tmp_path / "root/etc/containerd/certs.d"

    containerd.pull(f"{host}/team/app:1.0", hosts_dir)
    containerd.pull(f"{host}/team/app@{images['app'].manifest_digest}", hosts_dir)
    containerd.pull(f"{host}/team/multi:2.0", hosts_dir, platform="linux/arm64")
    mirror.settle(upstream, images["app"], images["arm64"])

    counters = mirror.counters()
    assert counters.get("manifest-by-tag:miss", 0) >= 2  # team/app:1.0 and team/multi:2.0, fetched once each
    assert direct_requests(upstream) == []
    # the arm64 platform's layers crossed, the amd64 one's did not: containerd chose through the mirror
    assert blobs_of(images["app"], images["arm64"]) <= stored_digests(mirror.storage)
    assert not set(blob.digest for blob in images["amd64"].layers) & stored_digests(mirror.storage)


def test_containerd_pulls_artifactory_repository_path_names(upstream, images, mirror_factory, containerd, tmp_path):
    mirror = mirror_factory({**credentials_of(upstream), "repository_path_names": True})
    host = upstream_host(upstream)
    printed = printed_clients(mirror)
    assert f"ctr images pull --hosts-dir /etc/containerd/certs.d {host}/docker-local/team/app:1.0" in printed
    apply_printed(printed, f"containerd (without the fallback to {host})", tmp_path / "root")
    containerd.pull(f"{host}/docker-local/team/app:1.0", tmp_path / "root/etc/containerd/certs.d")
    mirror.settle(upstream, images["app"])
    # the route of docker-local/ names asked the upstream's docker-local repository for team/app
    assert mirror.counters().get("manifest-by-tag:miss") == 1 and direct_requests(upstream) == []
    assert {r["path"] for r in upstream.stats()["requests"] if "/manifests/" in r["path"]} == {
        "/artifactory/api/docker/docker-local/v2/team/app/manifests/1.0"}


def test_containerd_with_the_fallback_pulls_through_the_mirror(upstream, images, mirror_factory, containerd,
                                                              tmp_path):
    mirror = mirror_factory(credentials_of(upstream))
    host = upstream_host(upstream)
    apply_printed(printed_clients(mirror), f"containerd (with the fallback to {host})", tmp_path / "root")
    containerd.pull(f"{host}/team/app:1.0", tmp_path / "root/etc/containerd/certs.d")
    mirror.settle(upstream, images["app"])
    assert mirror.counters().get("manifest-by-tag:miss") == 1
    assert direct_requests(upstream) == []


@pytest.mark.parametrize("fallback", [False, True], ids=["mirror-only", "with-fallback"])
def test_podman_pulls_through_the_mirror(upstream, images, mirror_factory, tmp_path, fallback):
    mirror = mirror_factory(credentials_of(upstream))
    host = upstream_host(upstream)
    title = f"podman and CRI-O ({'with' if fallback else 'without'} the fallback to {host})"
    placed = apply_printed(printed_clients(mirror), title, tmp_path / "root")
    (conf,) = [where for path, where in placed.items() if path.endswith(".conf")]
    cert_dir = tmp_path / f"root/etc/containers/certs.d/{mirror.address}"
    podman = Podman(tmp_path / "podman").start()
    try:
        podman.pull(f"{host}/team/app:1.0", conf, cert_dir)
        podman.pull(f"{host}/team/multi:2.0", conf, cert_dir, platform="linux/arm64")
    finally:
        podman.stop()
    mirror.settle(upstream, images["app"], images["arm64"])
    assert mirror.counters().get("manifest-by-tag:miss", 0) >= 2
    assert direct_requests(upstream) == []
    assert blobs_of(images["app"], images["arm64"]) <= stored_digests(mirror.storage)


@pytest.fixture
def docker_path():
    path = MtuPath(netns="amtdocker").up()
    try:
        yield path
    finally:
        path.down()


def test_docker_pulls_by_the_mirrors_name_trusting_its_ca(upstream, images, mirror_factory, docker_path, tmp_path):
    # docker skips TLS checks on 127.0.0.0/8: the mirror listens on the veth address the daemon's namespace reaches
    mirror = mirror_factory(credentials_of(upstream), mirror_keys={"listen": f"{HOST_SIDE}:{free_port(HOST_SIDE)}"})
    dockerd = Dockerd(tmp_path / "docker", docker_path.netns)
    try:
        dockerd.start()
        with pytest.raises(ClientError, match="certificate"):  # before the CA is in place, docker refuses it
            dockerd.pull(f"{mirror.address}/team/app:1.0")
        apply_printed(printed_clients(mirror), "docker", tmp_path / "root", reroot={"/etc/docker": dockerd.etc_docker})
        dockerd.pull(f"{mirror.address}/team/app:1.0")
        dockerd.pull(f"{mirror.address}/team/multi:2.0", platform="linux/arm64")
    finally:
        dockerd.stop()
    mirror.settle(upstream, images["app"], images["arm64"])
    assert mirror.counters().get("manifest-by-tag:miss", 0) >= 2
    assert blobs_of(images["app"], images["arm64"]) <= stored_digests(mirror.storage)


@pytest.mark.parametrize("case", ["unknown image", "upstream down", "credential refused"])
def test_what_clients_show_when_a_pull_fails_and_where_the_reason_is(upstream, images, mirror_factory, containerd,
                                                                    docker_path, tmp_path, case):
    """Registry 2.8 turns any upstream failure on a tag into "manifest unknown": the clients show not found, and
    the reason is on the mirror's stats page (and in its log). No client falls back: the mirror-only variants."""
    keys = credentials_of(upstream)
    mirror = mirror_factory({**keys, "password": "not-the-password"} if case == "credential refused" else keys,
                            mirror_keys={"listen": f"{HOST_SIDE}:{free_port(HOST_SIDE)}"})
    host = upstream_host(upstream)
    printed = printed_clients(mirror)
    apply_printed(printed, f"containerd (without the fallback to {host})", tmp_path / "root")
    placed = apply_printed(printed, f"podman and CRI-O (without the fallback to {host})", tmp_path / "root")
    (conf,) = [where for path, where in placed.items() if path.endswith(".conf")]
    name = "team/nope" if case == "unknown image" else "team/app"
    if case == "upstream down":
        upstream.stop()
    podman, dockerd = Podman(tmp_path / "podman").start(), Dockerd(tmp_path / "docker", docker_path.netns)
    try:
        dockerd.start()
        apply_printed(printed, "docker", tmp_path / "root", reroot={"/etc/docker": dockerd.etc_docker})
        with pytest.raises(ClientError, match=f"{host}/{name}:1.0: not found"):
            containerd.pull(f"{host}/{name}:1.0", tmp_path / "root/etc/containerd/certs.d")
        with pytest.raises(ClientError, match=f"reading manifest 1.0 in {mirror.address}/{name}: manifest unknown"):
            podman.pull(f"{host}/{name}:1.0", conf, tmp_path / f"root/etc/containers/certs.d/{mirror.address}")
        with pytest.raises(ClientError, match=f"manifest for {mirror.address}/{name}:1.0 not found: manifest unknown"):
            dockerd.pull(f"{mirror.address}/{name}:1.0")
    finally:
        podman.stop()
        dockerd.stop()
    last_error = mirror.stats()["upstream"]["last_error"]
    if case == "unknown image":
        assert last_error == ""  # the upstream answered 404: nothing is wrong with it
    elif case == "upstream down":
        assert "Cannot connect to host" in last_error
    else:
        assert "token endpoint answered 401" in last_error and "check upstream.username" in last_error


# --- per-user access (access.users: artifactory): each client logs in with its Artifactory user

USERS = {"dev": ("dev-Pa55word", ("tools",))}  # dev reads tools/ only


@pytest.fixture
def per_user(upstream_factory, mirror_factory, docker_path):
    """An upstream where dev reads tools/ only, and a mirror (with its token endpoint) on the veth address every
    client here reaches, docker's namespace included."""
    upstream = upstream_factory(users=USERS)
    tools, team = tar_image("tools/lint", "1.0", 600), tar_image("team/app", "1.0", 610)
    for image in (tools, team):
        seed.push(upstream.registry_url, image)
    port = free_port(HOST_SIDE)
    mirror = mirror_factory(credentials_of(upstream), mirror_keys={"listen": f"{HOST_SIDE}:{free_port(HOST_SIDE)}"},
                            access={"users": "artifactory", "listen": f"{HOST_SIDE}:{port}",
                                    "url": f"https://{HOST_SIDE}:{port}"})
    return upstream, mirror


def dev_creds(password: str | None = None) -> str:
    return f"dev:{password or USERS['dev'][0]}"


def test_docker_logs_in_to_the_mirror_and_pulls_only_what_its_user_reads(per_user, docker_path, tmp_path):
    upstream, mirror = per_user
    dockerd = Dockerd(tmp_path / "docker", docker_path.netns)
    try:
        dockerd.start()
        apply_printed(printed_clients(mirror), "docker", tmp_path / "root", reroot={"/etc/docker": dockerd.etc_docker})
        with pytest.raises(ClientError, match="401|unauthorized|Unauthorized"):
            dockerd.login(mirror.address, "dev", "wrong-password")
        dockerd.login(mirror.address, "dev", USERS["dev"][0])
        dockerd.pull(f"{mirror.address}/tools/lint:1.0")
        with pytest.raises(ClientError) as refused:
            dockerd.pull(f"{mirror.address}/team/app:1.0")
    finally:
        dockerd.stop()
    print(f"docker shows a refusal as: {refused.value}")
    assert mirror.stats()["access"]["decisions"].get("refused", 0) >= 2  # the wrong password, team/app


def test_podman_pulls_by_the_mirrors_name_and_through_its_mirror_config_after_a_login(per_user, tmp_path):
    upstream, mirror = per_user
    host = upstream_host(upstream)
    placed = apply_printed(printed_clients(mirror), f"podman and CRI-O (without the fallback to {host})",
                           tmp_path / "root")
    (conf,) = [where for path, where in placed.items() if path.endswith(".conf")]
    cert_dir = tmp_path / f"root/etc/containers/certs.d/{mirror.address}"
    podman = Podman(tmp_path / "podman").start()
    try:
        podman.pull(f"{mirror.address}/tools/lint:1.0", conf, cert_dir, creds=dev_creds())
        with pytest.raises(ClientError, match="403|denied|Forbidden"):
            podman.pull(f"{mirror.address}/team/app:1.0", conf, cert_dir, creds=dev_creds())
        with pytest.raises(ClientError, match="401|unauthorized"):
            podman.pull(f"{mirror.address}/tools/lint:1.0", conf, cert_dir)
        podman.remove_all()
        # the upstream host's name, rewritten to the mirror by registries.conf: --creds is the upstream host's
        with pytest.raises(ClientError, match="needs a login"):
            podman.pull(f"{host}/tools/lint:1.0", conf, cert_dir, creds=dev_creds())
        # ...while a login to the mirror is found for the mirror's location
        podman.login(mirror.address, dev_creds(), cert_dir)
        podman.pull(f"{host}/tools/lint:1.0", conf, cert_dir)
    finally:
        podman.stop()
    assert direct_requests(upstream) == []


def test_containerd_pulls_by_the_mirrors_name_with_its_users_credential(per_user, containerd, tmp_path):
    upstream, mirror = per_user
    apply_printed(printed_clients(mirror), "containerd (by the mirror's name)", tmp_path / "root")
    hosts_dir = tmp_path / "root/etc/containerd/certs.d"
    containerd.pull(f"{mirror.address}/tools/lint:1.0", hosts_dir, user=dev_creds())
    with pytest.raises(ClientError, match="403|denied|Forbidden"):
        containerd.pull(f"{mirror.address}/team/app:1.0", hosts_dir, user=dev_creds())
    with pytest.raises(ClientError, match="401|unauthorized"):
        containerd.pull(f"{mirror.address}/tools/lint:1.0", hosts_dir, user=dev_creds("wrong-password"))
    # ctr gives --user to every host it dials, a mirror of the upstream's name too (the CRI does not: it keys
    # a pod's pull secret by the image's own host)
    host = upstream_host(upstream)
    apply_printed(printed_clients(mirror), f"containerd (without the fallback to {host})", tmp_path / "root")
    containerd.remove_all()
    containerd.pull(f"{host}/tools/lint:1.0", hosts_dir, user=dev_creds())
    assert direct_requests(upstream) == []


def test_containerd_and_podman_present_the_certificate_clients_prints_under_mutual_tls(upstream, images,
                                                                                      mirror_factory, containerd,
                                                                                      tmp_path):
    node_cert, node_key = str(tmp_path / "node.crt"), str(tmp_path / "node.key")
    certs.ensure_own_pair(node_cert, node_key, "node-1", "the node's pair")  # its own CA, for the test
    mirror = mirror_factory(credentials_of(upstream), mirror_keys={"client_ca": node_cert})
    host = upstream_host(upstream)
    printed = printed_clients(mirror, "--client-cert", node_cert, "--client-key", node_key)
    apply_printed(printed, f"containerd (without the fallback to {host})", tmp_path / "root")
    containerd.pull(f"{host}/team/app:1.0", tmp_path / "root/etc/containerd/certs.d")
    placed = apply_printed(printed, f"podman and CRI-O (without the fallback to {host})", tmp_path / "root")
    (conf,) = [where for path, where in placed.items() if path.endswith(".conf")]
    podman = Podman(tmp_path / "podman").start()
    try:
        podman.pull(f"{host}/team/app:1.0", conf, tmp_path / f"root/etc/containers/certs.d/{mirror.address}")
        without = tmp_path / "ca-only"
        without.mkdir()
        shutil.copy(mirror.trust / "ca.crt", without / "ca.crt")
        podman.remove_all()
        with pytest.raises(ClientError, match="certificate|tls"):
            podman.pull(f"{host}/team/app:1.0", conf, without)
    finally:
        podman.stop()
    assert direct_requests(upstream) == []
