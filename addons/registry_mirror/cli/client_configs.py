"""Ready-to-paste client configuration for this mirror (pure: addresses and the CA's path in, text out).

`artifactory-mirror clients` prints each file as `==> path <==` and its text, the way `tail` shows several
files, and each copy of the CA certificate as an `install` command; the integration tests apply exactly that.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

CA_NAME = "artifactory-mirror-ca.crt"


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


def containerd(mirror: str, upstream: UpstreamRegistry, fallback: bool) -> Client:
    folder = f"/etc/containerd/certs.d/{upstream.host}"
    host_table = f'[host."https://{mirror}"]\n  capabilities = ["pull", "resolve"]\n  ca = "{CA_NAME}"\n'
    if fallback:
        hosts = f'server = "{upstream.scheme}://{upstream.host}"\n\n{host_table}'
        trade = ("with the fallback: when the mirror fails or answers 404, containerd pulls from Artifactory itself, "
                 "silently across the WAN, and an unknown image shows Artifactory's 401")
    else:  # the mirror is the server too: nothing reaches Artifactory from the node
        hosts = f'server = "https://{mirror}"\nca = "{CA_NAME}"\n\n{host_table}'
        trade = "without the fallback: every pull is the mirror's, and a mirror outage stops pulls (no failover)"
    return Client(
        f"containerd ({'with' if fallback else 'without'} the fallback to {upstream.host})",
        (trade, "the ca path is relative to the hosts.toml that names it; containerd sends no credentials to a "
                "mirror"),
        (File(f"{folder}/hosts.toml", hosts),), (f"{folder}/{CA_NAME}",),
        tuple(f"ctr images pull --hosts-dir /etc/containerd/certs.d {ref}" for ref in upstream.examples(upstream.host)))


def kubernetes() -> Client:
    return Client(
        "Kubernetes nodes (containerd's CRI plugin)",
        ("containerd reads the hosts.toml files above once config_path is set in /etc/containerd/config.toml "
         "(restart containerd after the change; later hosts.toml edits apply without one)",
         "nodes get the CA file with the hosts.toml (config management or a DaemonSet writing "
         "/etc/containerd/certs.d); a certificate from a CA the nodes already trust needs no ca line",
         "pull secrets: containerd sends no credentials to a mirror, so the mirror pulls with its own Artifactory "
         "credential and any pod on the node can pull what that credential can read; imagePullSecrets apply to "
         "the fallback only",
         "containerd 2.x names the section plugins.\"io.containerd.cri.v1.images\".registry"),
        (File("/etc/containerd/config.toml (excerpt)",
              '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'),))


def podman(mirror: str, upstream: UpstreamRegistry, fallback: bool) -> Client:
    insecure = "insecure = true\n" if upstream.scheme == "http" else ""
    if fallback:
        conf = (f'[[registry]]\nprefix = "{upstream.host}"\nlocation = "{upstream.host}"\n{insecure}\n'
                f'[[registry.mirror]]\nlocation = "{mirror}"\n')
        trade = ("with the fallback: when the mirror fails or answers 404, podman pulls from Artifactory itself, "
                 "silently across the WAN, and an unknown image shows Artifactory's 401")
    else:  # references to the upstream are rewritten to the mirror: it is the only location
        conf = f'[[registry]]\nprefix = "{upstream.host}"\nlocation = "{mirror}"\n'
        trade = "without the fallback: every pull is the mirror's, and a mirror outage stops pulls (no failover)"
    return Client(
        f"podman and CRI-O ({'with' if fallback else 'without'} the fallback to {upstream.host})",
        (trade, "containers/image takes the mirror's CA from /etc/containers/certs.d/<mirror>/ca.crt; that folder "
                "must hold no .key (a .key makes it demand a client certificate)"),
        (File(f"/etc/containers/registries.conf.d/artifactory-mirror-{upstream.host}"
              f"-{'fallback' if fallback else 'only'}.conf", conf),), (f"/etc/containers/certs.d/{mirror}/ca.crt",),
        tuple(f"podman pull {ref}" for ref in upstream.examples(upstream.host)))


def docker(mirror: str, upstream: UpstreamRegistry, others: list[str] | tuple = ()) -> Client:
    by_name = [f"routes to other registries ({', '.join(others)}) are reached by the mirror's name too, by every "
               f"client: docker pull {mirror}/{others[0]}<image>"] if others else []
    return Client(
        "docker",
        ("docker mirrors Docker Hub only: pull by the mirror's name (one DNS name per data center keeps "
         "references the same everywhere)",
         "docker trusts any certificate on 127.0.0.0/8; from other addresses it needs the CA (the install line)",
         *by_name),
        (), (f"/etc/docker/certs.d/{mirror}/ca.crt",),
        tuple(f"docker pull {ref}" for ref in upstream.examples(mirror)))


def skopeo(mirror: str, trust_folder: str) -> Client:
    return Client("skopeo", (f"{trust_folder} holds the CA certificate only",),
                  commands=(f"skopeo copy --src-cert-dir {trust_folder} docker://{mirror}/team/app:1.0 "
                            "dir:/tmp/app",))


def all_clients(mirror: str, upstream: UpstreamRegistry, trust_folder: str, others: Sequence[str] = ()) -> list[Client]:
    """Every client's configuration; containerd and podman with and without the fallback (choose one each).
    `others`: the prefixes of routes to other registries, which clients reach by the mirror's name."""
    return [docker(mirror, upstream, list(others)),
            *(containerd(mirror, upstream, fallback) for fallback in (True, False)), kubernetes(),
            *(podman(mirror, upstream, fallback) for fallback in (True, False)), skopeo(mirror, trust_folder)]


def render(clients: list[Client], ca_file: str) -> str:
    out = []
    for client in clients:
        out.append(f"#### {client.title}")
        out += [f"# {note}" for note in client.notes]
        for f in client.files:
            out += [f"==> {f.path} <==", f.text.rstrip("\n"), ""]
        out += [f"$ install -D -m 0644 {ca_file} {dest}" for dest in client.ca_copies]
        out += [f"$ {command}" for command in client.commands]
        out.append("")
    return "\n".join(out)
