"""The real clients a data center runs, each started for one test with everything it writes under a test folder.

containerd: its own daemon (root, state, socket) and `ctr --hosts-dir`; podman: its own storage and
registries.conf; docker: dockerd in a network namespace (docker skips TLS checks for 127.0.0.0/8, so the
mirror is reached at a veth address), in a private mount namespace whose /etc/docker is the test's folder.
Each daemon is stopped by its PID, even when the test fails.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from registry_mirror.cli import processes

PULL_TIMEOUT = 300
START_TIMEOUT = 60


class ClientError(RuntimeError):
    pass


def _needs(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise ClientError(f"{tool} is not installed; ./run.sh test installs it (Debian: containerd, podman, docker.io)")
    return found


def _run(args: list[str], what: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=PULL_TIMEOUT, env=env)
    if result.returncode != 0:
        raise ClientError(f"{what} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-1500:]}")
    return result


def _wait_for_socket(path: Path, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ClientError(f"{what} did not start (status {proc.poll()}); its log ends:\n{tail}")
        time.sleep(0.1)


@dataclass
class Containerd:
    """containerd with a private root, state and socket; pulls go through `ctr --hosts-dir`."""
    workdir: Path
    proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    def start(self) -> "Containerd":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.toml"
        config.write_text(f'version = 2\nroot = "{self.workdir / "root"}"\nstate = "{self.workdir / "state"}"\n'
                          f'[grpc]\n  address = "{self.socket}"\n'
                          '[plugins."io.containerd.grpc.v1.cri"]\n  disable = true\n')
        log = self.workdir / "containerd.log"
        self.proc = processes.start([_needs("containerd"), "--config", str(config)], log)
        _wait_for_socket(self.socket, self.proc, "containerd", log)
        return self

    def pull(self, reference: str, hosts_dir: Path, platform: str | None = None, user: str | None = None) -> str:
        """`user`: USER:PASSWORD, sent to whichever host ctr pulls from."""
        args = [_needs("ctr"), "--address", str(self.socket), "-n", "test", "images", "pull",
                "--hosts-dir", str(hosts_dir), *(["--platform", platform] if platform else []),
                *(["--user", user] if user else []), reference]
        return _run(args, f"ctr images pull {reference}").stdout

    def remove_all(self) -> None:
        """Forget every image and its content, so the next pull is a client's first."""
        listed = _run([_needs("ctr"), "--address", str(self.socket), "-n", "test", "images", "list", "-q"],
                      "ctr images list").stdout.split()
        if listed:
            _run([_needs("ctr"), "--address", str(self.socket), "-n", "test", "images", "remove", "--sync", *listed],
                 "ctr images remove")

    def stop(self) -> None:
        processes.stop(self.proc)


@dataclass
class Podman:
    """podman with private storage (vfs) and the test's registries.conf; no daemon. Its run root lives in a short
    folder under /tmp: podman refuses one longer than 50 characters."""
    workdir: Path
    runroot: Path | None = None

    def start(self) -> "Podman":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runroot = Path(tempfile.mkdtemp(prefix="podman-"))
        (self.workdir / "auth.json").write_text('{"auths": {}}\n')  # its own, never the user's
        return self

    def _podman(self, *args: str) -> list[str]:
        return [_needs("podman"), "--root", str(self.workdir / "root"), "--runroot", str(self.runroot),
                "--storage-driver", "vfs", *args]

    def pull(self, reference: str, registries_conf: Path, cert_dir: Path, platform: str | None = None,
             creds: str | None = None) -> str:
        args = self._podman("pull", "--cert-dir", str(cert_dir), *(["--platform", platform] if platform else []),
                            *(["--creds", creds] if creds else []), reference)
        return _run(args, f"podman pull {reference}", env=self._env(registries_conf)).stdout

    def login(self, registry: str, creds: str, cert_dir: Path) -> str:
        """`podman login`, the credential kept in this podman's own auth file."""
        user, _, password = creds.partition(":")
        args = self._podman("login", "--cert-dir", str(cert_dir), "--username", user, "--password", password,
                            registry)
        return _run(args, f"podman login {registry}", env=self._env()).stdout

    def _env(self, registries_conf: Path | None = None) -> dict[str, str]:
        env = {**os.environ, "REGISTRY_AUTH_FILE": str(self.workdir / "auth.json")}
        if registries_conf:
            env["CONTAINERS_REGISTRIES_CONF"] = str(registries_conf)
        return env

    def remove_all(self) -> None:
        _run(self._podman("rmi", "--all", "--force"), "podman rmi --all")

    def stop(self) -> None:
        if self.runroot:
            shutil.rmtree(self.runroot, ignore_errors=True)


@dataclass
class Dockerd:
    """dockerd (overlay2) inside `netns`, started with nsenter (it fails under `ip netns exec`), in a private mount
    namespace where /etc/docker is `etc_docker`: its certs.d is the test's, and it writes nothing to the host's."""
    workdir: Path
    netns: str
    etc_docker: Path = field(init=False)
    run_dir: Path | None = None  # sockets, in a short folder under /tmp: a unix socket path has 108 bytes at most
    proc: subprocess.Popen | None = None

    def __post_init__(self):
        self.etc_docker = self.workdir / "etc-docker"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    def start(self) -> "Dockerd":
        if not Path("/etc/docker").is_dir():
            raise ClientError("/etc/docker is missing: the docker.io package creates it; the test mounts over it")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        (self.etc_docker / "certs.d").mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix="dockerd-"))
        daemon = [_needs("dockerd"), "--config-file", str(self.workdir / "daemon.json"),
                  "--data-root", str(self.workdir / "data"), "--exec-root", str(self.run_dir / "exec"),
                  "--pidfile", str(self.run_dir / "docker.pid"), "-H", f"unix://{self.socket}",
                  "--bridge=none", "--iptables=false", "--ip6tables=false", "--storage-driver", "overlay2"]
        (self.workdir / "daemon.json").write_text("{}\n")
        script = f'mount --bind "{self.etc_docker}" /etc/docker && exec "$@"'
        log = self.workdir / "dockerd.log"
        self.proc = processes.start([_needs("nsenter"), f"--net=/run/netns/{self.netns}", _needs("unshare"),
                                     "--mount", "--propagation", "private", "sh", "-c", script, "sh", *daemon], log)
        _wait_for_socket(self.socket, self.proc, "dockerd", log)
        return self

    def trust(self, registry: str, ca_file: str) -> Path:
        """/etc/docker/certs.d/<registry>/ca.crt, as docs/clients.md says, in this daemon's /etc/docker."""
        folder = self.etc_docker / "certs.d" / registry
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca_file, folder / "ca.crt")
        return folder

    def pull(self, reference: str, platform: str | None = None) -> str:
        args = [_needs("docker"), "-H", f"unix://{self.socket}", "pull",
                *(["--platform", platform] if platform else []), reference]
        return _run(args, f"docker pull {reference}", env=self._cli_env()).stdout

    def login(self, registry: str, user: str, password: str) -> str:
        """`docker login`, the credential kept in this daemon's own client config folder."""
        args = [_needs("docker"), "-H", f"unix://{self.socket}", "login", "--username", user, "--password-stdin",
                registry]
        result = subprocess.run(args, input=password, capture_output=True, text=True, timeout=120,
                                env=self._cli_env())
        if result.returncode != 0:
            raise ClientError(f"docker login {registry} failed: {result.stderr.strip()[-800:]}")
        return result.stdout

    def _cli_env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_CONFIG": str(self.workdir / "client-config")}

    def remove_all(self) -> None:
        docker = [_needs("docker"), "-H", f"unix://{self.socket}"]
        listed = _run([*docker, "images", "-q"], "docker images").stdout.split()
        if listed:
            _run([*docker, "rmi", "--force", *sorted(set(listed))], "docker rmi")

    def stop(self) -> None:
        processes.stop(self.proc, timeout=20)
        if self.run_dir:
            # dockerd starts its containerd in a session of its own: stopped with dockerd when all goes well,
            # by its PID here when it does not
            _stop_pid_file(self.run_dir / "exec" / "containerd" / "containerd.pid", "containerd")
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _stop_pid_file(pid_file: Path, name: str, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, the process `pid_file` names, if it is still that program."""
    try:
        pid = int(pid_file.read_text().strip())
        if name not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return  # gone, and its PID reused
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def apply_printed(printed: str, title: str, root: Path, reroot: dict[str, Path] | None = None) -> dict[str, Path]:
    """Apply one section of `artifactory-mirror clients`' output as a user pastes it: each `==> path <==` file
    written, each `install SRC DEST` copy made, with every absolute path moved under `root` (or under
    `reroot[prefix]` for a path starting with that prefix). Returns each printed path -> where it went."""
    placed: dict[str, Path] = {}

    def where(path: str) -> Path:
        for prefix, target in (reroot or {}).items():
            if path.startswith(prefix):
                return target / path[len(prefix):].lstrip("/")
        return root / path.lstrip("/")
    section = _section(printed, title)
    path, lines = None, []
    for line in [*section, "==> <=="]:
        if line.startswith("==> ") and line.endswith(" <=="):
            if path:
                placed[path] = where(path)
                placed[path].parent.mkdir(parents=True, exist_ok=True)
                placed[path].write_text("\n".join(lines).strip("\n") + "\n")
            path, lines = line[4:-4].strip(), []
        elif line.startswith("$ install "):
            *_, source, dest = line.split()
            placed[dest] = where(dest)
            placed[dest].parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, placed[dest])
        elif path and not line.startswith("$ "):
            lines.append(line)
    if not placed:
        raise ClientError(f"no files printed for {title!r}:\n{printed}")
    return placed


def _section(printed: str, title: str) -> list[str]:
    lines = printed.splitlines()
    try:
        start = lines.index(f"#### {title}") + 1
    except ValueError:
        raise ClientError(f"no section {title!r} in:\n{printed}") from None
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#### ")), len(lines))
    return lines[start:end]
