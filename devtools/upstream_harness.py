"""Start and stop an Artifactory-like upstream: a plain docker-registry behind the front addon."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devtools.netns import launcher
from devtools.ports import free_port, plain_registry_config
from registry_mirror.cli import processes
from registry_mirror.tls import certs

CONTROL_TIMEOUT = 60

TLS_NAME = "artifactory.test"  # a DNS name its certificate holds besides its address (nginx checks names only)
FRONT_ADDON = Path(__file__).resolve().with_name("artifactory_front.py")


@dataclass
class UpstreamHarness:
    workdir: Path
    auth: str = "token"  # token, basic, bearer or none
    username: str = "deployer"
    password: str = "s3cret-Pa55word"
    static_token: str = "static-access-token-0123456789"
    # other users, each reading only names under its prefixes: {"dev": ("password", ("tools/",))}
    users: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    token_ttl: int = 300
    token_uses: int = 0
    repository: str = "docker-local"
    realm: str = ""
    host: str = "127.0.0.1"  # where clients (the mirror) reach the front
    netns: str | None = None  # run inside this network namespace...
    control_host: str = "127.0.0.1"  # ...reached by this driver here (stats, seeding, readiness)
    tls: bool = False  # serve HTTPS, as Artifactory does, with a certificate of its own (`ca_file`)
    nice: int = 0  # run at this priority: a bench's upstream stands for another host, never starved by the bench
    front_port: int = 0
    registry_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.front_port}"

    @property
    def ca_file(self) -> str:
        """The front's self-signed certificate, which its TLS clients trust."""
        return str(self.workdir / "front.crt")

    @property
    def registry_url(self) -> str:
        """The plain registry itself: for seeding, never for the mirror."""
        return f"http://{self.control_host}:{self.registry_port}"

    def start(self) -> "UpstreamHarness":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.registry_port = self.registry_port or free_port()
        self.front_port = self.front_port or free_port(self.host if not self.netns else "127.0.0.1")
        bind = "0.0.0.0" if self.netns else "127.0.0.1"
        cfg = self.workdir / "upstream-registry.yml"
        cfg.write_text(yaml.safe_dump(plain_registry_config(f"{bind}:{self.registry_port}",
                                                            str(self.workdir / "upstream-storage"))))
        log = self.workdir / "upstream-registry.log"
        launch = launcher(self.netns)
        reg = launch.start([*self._niced(), processes.registry_binary(), "serve", str(cfg)], log)
        self.procs.append(reg)
        launch.wait_for_port("127.0.0.1", self.registry_port, reg, what="upstream registry", log_path=log)
        secrets_file = self.workdir / "front-secrets.yml"
        secrets_file.write_text(yaml.safe_dump({
            "username": self.username, "password": self.password, "static_token": self.static_token,
            "users": [{"username": u, "password": p, "read": list(read)} for u, (p, read) in self.users.items()]}))
        secrets_file.chmod(0o600)
        args = [processes.venv_tool("mitmdump"), "-s", str(FRONT_ADDON), "--mode",
                f"reverse:http://127.0.0.1:{self.registry_port}@{bind if self.netns else self.host}:{self.front_port}",
                "--set", "connection_strategy=lazy", "--set", "stream_large_bodies=1m", "--set", "flow_detail=0",
                "--set", f"front_auth={self.auth}", "--set", f"front_secrets={secrets_file}",
                "--set", f"front_token_ttl={self.token_ttl}", "--set", f"front_token_uses={self.token_uses}",
                "--set", f"front_repository={self.repository}",
                "--set", "front_root_v2=true"]
        if self.realm:
            args += ["--set", f"front_realm={self.realm}"]
        if self.tls:  # mitmproxy tells TLS from plain HTTP per connection: the control calls stay plain
            args += ["--set", f"certs=*={self._certificate_pem()}"]
        log = self.workdir / "upstream-front.log"
        front = launch.start([*self._niced(), *args], log)
        self.procs.append(front)
        ready_host = "127.0.0.1" if self.netns else self.host
        launch.wait_until_ready(f"http://{ready_host}:{self.front_port}/_front/ready", front,
                                what="upstream front", log_path=log)
        return self

    def _niced(self) -> list[str]:
        return ["nice", "-n", str(self.nice)] if self.nice else []  # nice execs: the PID stays the process's

    def _certificate_pem(self) -> Path:
        """Certificate and key in one file, as mitmproxy's `certs` option takes them."""
        key = self.workdir / "front.key"
        certs.ensure_self_signed(self.ca_file, str(key), extra_names=(self.host, TLS_NAME))
        pem = self.workdir / "front.pem"
        pem.write_bytes(Path(self.ca_file).read_bytes() + key.read_bytes())
        pem.chmod(0o600)
        return pem

    def stop(self) -> None:
        for proc in reversed(self.procs):
            processes.stop(proc)
        self.procs.clear()

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://{self.control_host}:{self.front_port}/_front/stats",
                                    timeout=CONTROL_TIMEOUT) as resp:
            return json.load(resp)

    def settled_stats(self, timeout: float = 60.0) -> dict:
        """`stats()` once no request is open: a streamed blob's record is written after its last byte."""
        wait_for(lambda: self.stats()["open"] == 0, "the upstream to end its open requests", timeout)
        return self.stats()

    def fault(self, mode: str = "none", **params) -> None:
        """Inject a fault (devtools/faults.py); `fault()` clears it."""
        query = urllib.parse.urlencode({"mode": mode, **params})
        self.control(f"fault?{query}")

    def control(self, action: str) -> None:
        req = urllib.request.Request(f"http://{self.control_host}:{self.front_port}/_front/{action}", method="POST",
                                     data=b"")
        urllib.request.urlopen(req, timeout=CONTROL_TIMEOUT).close()


def stored_digests(storage: Path) -> set[str]:
    """The digests of the blobs a registry's filesystem storage holds."""
    root = Path(storage) / "docker/registry/v2/blobs"
    return {f"{p.parent.parent.parent.name}:{p.parent.name}" for p in root.glob("*/*/*/data")}


def wait_until_settled(harness: UpstreamHarness, storage: Path, mirror_stats_url: str, digests=(),
                       timeout: float = 120.0) -> None:
    """Wait until the mirror's storage holds every blob in `digests`, the mirror has no blob transfer open and
    the upstream answers no request: the stock registry finishes its background fetches (storeLocal) after the
    client's pull has returned. Raises if that state is not reached within `timeout`."""
    wanted = set(digests)

    def settled() -> bool:
        with urllib.request.urlopen(mirror_stats_url, timeout=CONTROL_TIMEOUT) as resp:
            transfers = json.load(resp)["transfers"]
        return wanted <= stored_digests(storage) and not transfers and harness.stats()["open"] == 0
    wait_for(settled, f"the mirror to store {len(wanted)} blobs and end its upstream requests", timeout)


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; an AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def wait_until_quiet(harness: UpstreamHarness, quiet: float = 1.0, timeout: float = 60.0) -> None:
    """The benchmark's wait, for designs that report no state of their own (a plain proxy registry, HAProxy):
    until the upstream saw no new request for `quiet` seconds. Tests wait on state: `wait_until_settled`."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        stats = harness.stats()
        count = (len(stats["requests"]), stats["body_bytes"])
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the upstream did not go quiet within {timeout:.0f} s")
