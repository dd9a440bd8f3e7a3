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


def test_mutual_tls_puts_the_clients_pair_where_each_client_looks_for_it():
    both = clients.Access(client_cert=True)
    text = clients.render(clients.all_clients(MIRROR, ARTIFACTORY, "/srv/certs/trust", access=both),
                          "/srv/certs/trust/ca.crt", ("/srv/node.crt", "/srv/node.key"))
    for folder in (f"/etc/docker/certs.d/{MIRROR}", f"/etc/containers/certs.d/{MIRROR}",
                   "/etc/containerd/certs.d/artifactory.example.com"):
        assert f"$ install -D -m 0644 /srv/node.crt {folder}/client.cert" in text
        assert f"$ install -D -m 0600 /srv/node.key {folder}/client.key" in text
    hosts = clients.containerd(MIRROR, ARTIFACTORY, fallback=False, access=both).files[0].text
    assert hosts.count('client = [["client.cert", "client.key"]]') == 2  # the server and the host table
    assert f"skopeo copy --src-cert-dir /etc/containers/certs.d/{MIRROR} docker://" in text
    assert "<this-client.crt>" in clients.render([clients.docker(MIRROR, ARTIFACTORY, access=both)], "/ca.crt")


def test_per_user_access_logs_in_and_pulls_by_the_mirrors_name():
    login = clients.Access(login=True)
    found = {c.title: c for c in clients.all_clients(MIRROR, ARTIFACTORY, "/srv/certs/trust", access=login)}
    assert found["docker"].commands[0] == f"docker login {MIRROR}"
    by_name = found["containerd (by the mirror's name)"]
    assert by_name.files[0].path == f"/etc/containerd/certs.d/{MIRROR}/hosts.toml"
    assert f"--user <artifactory-user> {MIRROR}/team/app:1.0" in by_name.commands[0]
    kubernetes = found["Kubernetes nodes (containerd's CRI plugin)"]
    assert any(f"--docker-server={MIRROR}" in note for note in kubernetes.notes)
    assert "--src-creds <artifactory-user>" in found["skopeo"].commands[0]
    assert "containerd (by the mirror's name)" not in {c.title for c in clients.all_clients(MIRROR, ARTIFACTORY, "/t")}
