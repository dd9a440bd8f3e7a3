"""Ready-to-paste client configuration for this mirror (pure: addresses and the CA's path in, text out).

`artifactory-mirror clients` prints each file as `==> path <==` and its text, the way `tail` shows several
files, and each copy of the CA certificate as an `install` command; the integration tests apply exactly that.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

CA_NAME = "artifactory-mirror-ca.crt"
CLIENT_CERT, CLIENT_KEY = "client.cert", "client.key"  # the names docker, podman and skopeo look for


@dataclass(frozen=True)
class File:
    path: str
    text: str


@dataclass(frozen=True)
class Client:
    title: str
    notes: tuple[str, ...]  # what it needs and the trade-off, one line each
    files: tuple[File, ...] = ()
    ca_copies: tuple[str, ...] = ()  # where the mirror's CA certificate goes
    commands: tuple[str, ...] = ()  # an example pull
    pair_folders: tuple[str, ...] = ()  # where the client's certificate and key go (mutual TLS)


@dataclass(frozen=True)
class Access:
    """What a client needs besides the CA: a certificate of its own (`mirror.client_ca`), a login with its
    Artifactory user (`access.users`)."""
    client_cert: bool = False
    login: bool = False


OPEN = Access()
BY_NAME = ("per-user access: a client sends its credential only to the host it pulls from by name, so pull by the "
           "mirror's name")


@dataclass(frozen=True)
class UpstreamRegistry:
    """An upstream host as clients name it in references (`artifactory.example.com`), with its scheme."""
    host: str
    scheme: str
    repository: str  # a repository key, for the examples
    repository_paths: bool = False  # `<repository>/<image>` names are served too

    @classmethod
    def from_url(cls, url: str, repository: str, repository_paths: bool = False) -> "UpstreamRegistry":
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"{url} names no host")
        default_port = {"https": 443, "http": 80}.get(parts.scheme)
        host = parts.hostname if parts.port in (None, default_port) else f"{parts.hostname}:{parts.port}"
        return cls(host, parts.scheme, repository, repository_paths)

    def examples(self, registry: str) -> tuple[str, ...]:
        """References a user pulls, at `registry`: a name, and a repository-path name where those are served."""
        return (f"{registry}/team/app:1.0",
                *([f"{registry}/{self.repository}/team/app:1.0"] if self.repository_paths else []))


def _containerd_tls(access: Access, indent: str = "") -> str:
    """The lines of a hosts.toml table that trust the mirror (and present the client's pair)."""
    client = f'{indent}client = [["{CLIENT_CERT}", "{CLIENT_KEY}"]]\n' if access.client_cert else ""
    return f'{indent}ca = "{CA_NAME}"\n{client}'


def containerd(mirror: str, upstream: UpstreamRegistry, fallback: bool, access: Access = OPEN) -> Client:
    folder = f"/etc/containerd/certs.d/{upstream.host}"
    host_table = f'[host."https://{mirror}"]\n  capabilities = ["pull", "resolve"]\n{_containerd_tls(access, "  ")}'
    if fallback:
        hosts = f'server = "{upstream.scheme}://{upstream.host}"\n\n{host_table}'
        trade = ("with the fallback: when the mirror fails or answers 404, containerd pulls from Artifactory itself, "
                 "silently across the WAN, and an unknown image shows Artifactory's 401")
    else:  # the mirror is the server too: nothing reaches Artifactory from the node
        hosts = f'server = "https://{mirror}"\n{_containerd_tls(access)}\n{host_table}'
        trade = "without the fallback: every pull is the mirror's, and a mirror outage stops pulls (no failover)"
    notes = (trade, "the ca and client paths are relative to the hosts.toml that names them; containerd sends no "
                    "credentials to a mirror", *([f"{BY_NAME}: see containerd (by the mirror's name)"]
                                                 if access.login else []))
    return Client(
        f"containerd ({'with' if fallback else 'without'} the fallback to {upstream.host})", notes,
        (File(f"{folder}/hosts.toml", hosts),), (f"{folder}/{CA_NAME}",),
        tuple(f"ctr images pull --hosts-dir /etc/containerd/certs.d {ref}" for ref in upstream.examples(upstream.host)),
        (folder,) if access.client_cert else ())


def containerd_by_name(mirror: str, upstream: UpstreamRegistry, access: Access) -> Client:
    """Per-user access: containerd pulls `<mirror>/<image>` and sends the user's credential to the mirror."""
    folder = f"/etc/containerd/certs.d/{mirror}"
    return Client(
        "containerd (by the mirror's name)",
        (BY_NAME, "ctr takes the credential with --user; the CRI takes it from the pod's imagePullSecrets "
                  "(Kubernetes, below)"),
        (File(f"{folder}/hosts.toml", f'server = "https://{mirror}"\n{_containerd_tls(access)}'),),
        (f"{folder}/{CA_NAME}",),
        tuple(f"ctr images pull --hosts-dir /etc/containerd/certs.d --user <artifactory-user> {ref}"
              for ref in upstream.examples(mirror)),
        (folder,) if access.client_cert else ())


def kubernetes(mirror: str = "", access: Access = OPEN) -> Client:
    if access.login:
        secrets = (f"pull secrets: each team's pods pull {mirror}/<image> with an imagePullSecret for the mirror: "
                   f"kubectl create secret docker-registry artifactory-mirror --docker-server={mirror} "
                   f"--docker-username=<artifactory-user> --docker-password=<password or identity token>, named in "
                   f"the pod's imagePullSecrets; the mirror asks Artifactory what that user may read",)
    else:
        secrets = ("pull secrets: containerd sends no credentials to a mirror, so the mirror pulls with its own "
                   "Artifactory credential and any pod on the node can pull what that credential can read; "
                   "imagePullSecrets apply to the fallback only",)
    certificate = ("mutual TLS: every pod on a node pulls with the node's certificate; the certificate says which "
                   "machine asks, never which team",) if access.client_cert else ()
    return Client(
        "Kubernetes nodes (containerd's CRI plugin)",
        ("containerd reads the hosts.toml files above once config_path is set in /etc/containerd/config.toml "
         "(restart containerd after the change; later hosts.toml edits apply without one)",
         "nodes get the CA file with the hosts.toml (config management or a DaemonSet writing "
         "/etc/containerd/certs.d); a certificate from a CA the nodes already trust needs no ca line",
         *secrets, *certificate,
         "containerd 2.x names the section plugins.\"io.containerd.cri.v1.images\".registry"),
        (File("/etc/containerd/config.toml (excerpt)",
              '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'),))


def podman(mirror: str, upstream: UpstreamRegistry, fallback: bool, access: Access = OPEN) -> Client:
    insecure = "insecure = true\n" if upstream.scheme == "http" else ""
    if fallback:
        conf = (f'[[registry]]\nprefix = "{upstream.host}"\nlocation = "{upstream.host}"\n{insecure}\n'
                f'[[registry.mirror]]\nlocation = "{mirror}"\n')
        trade = ("with the fallback: when the mirror fails or answers 404, podman pulls from Artifactory itself, "
                 "silently across the WAN, and an unknown image shows Artifactory's 401")
    else:  # references to the upstream are rewritten to the mirror: it is the only location
        conf = f'[[registry]]\nprefix = "{upstream.host}"\nlocation = "{mirror}"\n'
        trade = "without the fallback: every pull is the mirror's, and a mirror outage stops pulls (no failover)"
    folder = f"/etc/containers/certs.d/{mirror}"
    certificate = (f"containers/image presents {folder}/{CLIENT_CERT} with its {CLIENT_KEY}" if access.client_cert
                   else "that folder must hold no .key (a .key makes it demand a client certificate)")
    login = (f"per-user access: podman login {mirror} with your Artifactory user, then pull by the mirror's name "
             f"(podman pull {mirror}/team/app:1.0), or pass --creds to the pull",) if access.login else ()
    return Client(
        f"podman and CRI-O ({'with' if fallback else 'without'} the fallback to {upstream.host})",
        (trade, f"containers/image takes the mirror's CA from {folder}/ca.crt; {certificate}", *login),
        (File(f"/etc/containers/registries.conf.d/artifactory-mirror-{upstream.host}"
              f"-{'fallback' if fallback else 'only'}.conf", conf),), (f"{folder}/ca.crt",),
        tuple(f"podman pull {ref}" for ref in upstream.examples(upstream.host)),
        (folder,) if access.client_cert else ())


def docker(mirror: str, upstream: UpstreamRegistry, others: list[str] | tuple = (), access: Access = OPEN) -> Client:
    by_name = [f"routes to other registries ({', '.join(others)}) are reached by the mirror's name too, by every "
               f"client: docker pull {mirror}/{others[0]}<image>"] if others else []
    folder = f"/etc/docker/certs.d/{mirror}"
    return Client(
        "docker",
        ("docker mirrors Docker Hub only: pull by the mirror's name (one DNS name per data center keeps "
         "references the same everywhere)",
         "docker trusts any certificate on 127.0.0.0/8; from other addresses it needs the CA (the install line)",
         *by_name, *([f"docker presents {folder}/{CLIENT_CERT} with its {CLIENT_KEY}"] if access.client_cert else []),
         *(["per-user access: docker login with your Artifactory user and password or identity token"]
           if access.login else [])),
        (), (f"{folder}/ca.crt",),
        (*([f"docker login {mirror}"] if access.login else []),
         *(f"docker pull {ref}" for ref in upstream.examples(mirror))),
        (folder,) if access.client_cert else ())


def skopeo(mirror: str, trust_folder: str, access: Access = OPEN) -> Client:
    creds = " --src-creds <artifactory-user>" if access.login else ""
    if access.client_cert:  # a folder of its own: the mirror's trust folder holds the CA only
        folder = f"/etc/containers/certs.d/{mirror}"
        return Client("skopeo", (f"{folder} holds the CA certificate, and {CLIENT_CERT} with {CLIENT_KEY}",),
                      ca_copies=(f"{folder}/ca.crt",), pair_folders=(folder,),
                      commands=(f"skopeo copy --src-cert-dir {folder}{creds} docker://{mirror}/team/app:1.0 "
                                "dir:/tmp/app",))
    return Client("skopeo", (f"{trust_folder} holds the CA certificate only",),
                  commands=(f"skopeo copy --src-cert-dir {trust_folder}{creds} docker://{mirror}/team/app:1.0 "
                            "dir:/tmp/app",))


def all_clients(mirror: str, upstream: UpstreamRegistry, trust_folder: str, others: Sequence[str] = (),
                access: Access = OPEN) -> list[Client]:
    """Every client's configuration; containerd and podman with and without the fallback (choose one each).
    `others`: the prefixes of routes to other registries, which clients reach by the mirror's name."""
    return [docker(mirror, upstream, list(others), access),
            *(containerd(mirror, upstream, fallback, access) for fallback in (True, False)),
            *([containerd_by_name(mirror, upstream, access)] if access.login else []), kubernetes(mirror, access),
            *(podman(mirror, upstream, fallback, access) for fallback in (True, False)),
            skopeo(mirror, trust_folder, access)]


def render(clients: list[Client], ca_file: str, client_pair: tuple[str, str] | None = None) -> str:
    """`client_pair`: the client's certificate and key to copy where a client looks for them (placeholders
    without)."""
    cert, key = client_pair or ("<this-client.crt>", "<this-client.key>")
    out = []
    for client in clients:
        out.append(f"#### {client.title}")
        out += [f"# {note}" for note in client.notes]
        for f in client.files:
            out += [f"==> {f.path} <==", f.text.rstrip("\n"), ""]
        out += [f"$ install -D -m 0644 {ca_file} {dest}" for dest in client.ca_copies]
        for folder in client.pair_folders:
            out += [f"$ install -D -m 0644 {cert} {folder}/{CLIENT_CERT}",
                    f"$ install -D -m 0600 {key} {folder}/{CLIENT_KEY}"]
        out += [f"$ {command}" for command in client.commands]
        out.append("")
    return "\n".join(out)
