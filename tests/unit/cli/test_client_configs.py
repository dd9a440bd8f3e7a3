"""`artifactory-mirror clients`: what each client is told, and the trust folder it points at."""
from registry_mirror.cli import client_configs as clients
from registry_mirror.tls import certs

MIRROR = "mirror.dc1.example.com:5000"
ARTIFACTORY = clients.UpstreamRegistry.from_url("https://artifactory.example.com", "docker-local")


def test_containerd_without_the_fallback_has_the_mirror_as_its_server_too():
    with_fallback = clients.containerd(MIRROR, ARTIFACTORY, fallback=True).files[0]
    without = clients.containerd(MIRROR, ARTIFACTORY, fallback=False).files[0]
    assert with_fallback.path == without.path == "/etc/containerd/certs.d/artifactory.example.com/hosts.toml"
    assert 'server = "https://artifactory.example.com"' in with_fallback.text
    assert 'server = "https://mirror.dc1.example.com:5000"' in without.text
    for text in (with_fallback.text, without.text):  # containerd 1.6 rejects a hosts.toml without a [host] table
        assert f'[host."https://{MIRROR}"]\n  capabilities = ["pull", "resolve"]\n' in text


def test_podman_without_the_fallback_rewrites_the_location_and_has_no_mirror_entry():
    conf = clients.podman(MIRROR, ARTIFACTORY, fallback=False).files[0].text
    assert conf == f'[[registry]]\nprefix = "artifactory.example.com"\nlocation = "{MIRROR}"\n'
    plain = clients.UpstreamRegistry.from_url("http://127.0.0.1:8080", "r")
    assert "insecure = true" in clients.podman(MIRROR, plain, fallback=True).files[0].text


def test_render_prints_files_and_ca_copies_from_the_trust_folder():
    text = clients.render([clients.docker(MIRROR, ARTIFACTORY)], "/srv/certs/trust/ca.crt")
    assert f"$ install -D -m 0644 /srv/certs/trust/ca.crt /etc/docker/certs.d/{MIRROR}/ca.crt" in text
    assert text.startswith("#### docker\n")


def test_the_trust_folder_holds_only_the_ca_certificate(tmp_path):
    cert, key = tmp_path / "certs/mirror.crt", tmp_path / "certs/mirror.key"
    certs.ensure_self_signed(str(cert), str(key))
    folder = certs.write_trust_folder(str(cert), str(cert))
    assert folder == tmp_path / "certs/trust"
    assert [p.name for p in folder.iterdir()] == ["ca.crt"] and (folder / "ca.crt").read_bytes() == cert.read_bytes()
    assert certs.write_trust_folder(str(cert), str(cert)) == folder  # again: nothing to change


def test_containerd_and_podman_mirror_upstreams_host_and_other_registries_are_pulled_by_name():
    found = clients.all_clients(MIRROR, ARTIFACTORY, "/srv/certs/trust", ["hub/"])
    hosts = {f.path for c in found for f in c.files if f.path.endswith("hosts.toml")}
    assert hosts == {"/etc/containerd/certs.d/artifactory.example.com/hosts.toml"}
    assert any(f"docker pull {MIRROR}/hub/<image>" in note for note in found[0].notes)


def test_a_default_port_is_not_part_of_the_host_clients_name():
    assert clients.UpstreamRegistry.from_url("https://art.example.com:443", "r").host == "art.example.com"
    assert clients.UpstreamRegistry.from_url("https://art.example.com:8443", "r").host == "art.example.com:8443"
