"""The running pair, supervised: mitmdump (or mitmweb) with the addon, then the stock registry.

mitmproxy starts first and the registry only once the addon says it is ready, because the registry pings
its remote at start and panics if nothing listens; if either process dies the other is stopped. A stop drains:
the registry closes its listener and finishes the requests in flight (`mirror.drain_timeout`) while the addon
still serves them, then the addon stops.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Protocol

import argon2
import yaml

from registry_mirror.access import signers
from registry_mirror.access.server import realm_url
from registry_mirror.cli import processes
from registry_mirror.cli.logfiles import LogFile
from registry_mirror.cli.registry_config import proxy_registry_config
from registry_mirror.config.load import Config
from registry_mirror.proxy.notifications import SECRET_HEADER, notification_secret
from registry_mirror.stats.views import JSON_PATH, LOGS_PATH, READY_PATH
from registry_mirror.tls import certs
from registry_mirror.tls.cert_watch import CaWatch, CertWatch

ADDON = Path(__file__).resolve().parents[1] / "script" / "mirror.py"
STOP_MARGIN = 5.0  # seconds past the drain timeout before a registry that has not exited is killed
LOG_REPORT_SECONDS = 2.0  # how often dropped log lines are reported to the addon (its stats page)
CERT_POLL_SECONDS = 5.0  # how often the mirror's certificate and key are checked for a renewal


class Launcher(Protocol):
    """How the supervisor starts its processes and tells when they are up. cli/processes.py's functions are the
    default (this host); another implementation may start them elsewhere, and must probe them there too."""

    def start(self, args: list[str], log: Path | LogFile, *, env: dict[str, str] | None = None,
              redact: tuple[str, ...] = (), unset: tuple[str, ...] = ()) -> subprocess.Popen: ...

    def wait_until_ready(self, url: str, proc: subprocess.Popen, *, what: str,
                         log_path: Path | None = None) -> None: ...

    def wait_for_port(self, host: str, port: int, proc: subprocess.Popen, *, what: str,
                      log_path: Path | None = None) -> None: ...


class Supervisor:
    """The running pair: the addon's mitmproxy and the stock registry."""

    def __init__(self, cfg: Config, log_dir: Path, web: bool = False, dump: str | None = None,
                 launcher: Launcher = processes):
        """`launcher`: how both processes are started and probed; by default on this host."""
        self.cfg, self.log_dir, self.web, self.dump, self.launcher = cfg, log_dir, web, dump, launcher
        self.mitm: subprocess.Popen | None = None
        self.registry: subprocess.Popen | None = None
        # one file per process across registry restarts; a line that cannot be written is dropped and counted
        self.logs = {name: LogFile(log_dir / f"{name}.log") for name in ("mitmproxy", "registry")}
        self.draining: list[subprocess.Popen] = []  # registries replaced by a restart, finishing their requests
        self.cert_watch: CertWatch | None = None
        self.ca_watch: CaWatch | None = None
        self.signer_bundle: str | None = None  # what the registry verifies tokens against (access.users)
        self._stopping = threading.Event()

    def mitm_args(self) -> list[str]:
        rw = self.cfg.rewriter
        args = [processes.venv_tool("mitmweb" if self.web else "mitmdump"), "-s", str(ADDON),
                "--mode", f"reverse:{self.cfg.upstream.origin}@{rw.listen.host}:{rw.listen.port}",
                "--set", f"mirror_config={self.cfg.source}", "--set", "connection_strategy=lazy",
                "--set", "stream_large_bodies=1m", "--set", "flow_detail=0",
                "--set", f"mirror_log_dir={self.log_dir}"]
        if self.web:
            args += ["--set", f"web_host={rw.web_listen.host}", "--set", f"web_port={rw.web_listen.port}",
                     "--set", "web_open_browser=false"]
            if rw.web_password:  # an argon2 hash: the command line (visible in ps) never holds the password
                args += ["--set", f"web_password={argon2.PasswordHasher().hash(rw.web_password)}"]
        if self.dump:  # written by the addon (proxy/flow_dump.py): a failed write drops that flow, not the process
            args += ["--set", f"mirror_dump={self.dump}"]
        return args

    def start(self) -> None:
        cfg = self.cfg
        rw = cfg.rewriter
        self.log_dir.mkdir(parents=True, exist_ok=True)
        raise_open_files_limit()
        if cfg.mirror.tls:
            try:
                certs.write_trust_folder(cfg.mirror.trusted_ca, cfg.mirror.tls_cert)
            except certs.CertError as e:  # a convenience for clients: the mirror serves without it
                print(f"artifactory-mirror: {e}", file=sys.stderr)
        self.own_pairs()
        if self.dump:
            private_dump_file(self.dump)
        # the addon never logs the webhook secret; its log is redacted of it all the same
        webhook_secret = (cfg.webhooks.secret,) if cfg.webhooks.secret else ()
        self.mitm = self.launcher.start(self.mitm_args(), self.logs["mitmproxy"], redact=webhook_secret)
        self.launcher.wait_until_ready(rw.listen.local_url(READY_PATH), self.mitm, what="mitmproxy with the addon",
                                       log_path=self.logs["mitmproxy"].path)
        self.start_registry()
        threading.Thread(target=self._report_dropped_lines, daemon=True).start()

    def own_pairs(self) -> None:
        """The pairs the mirror uses itself, generated when missing: the token signer (`access.users`), and the
        client certificate of its own warms (`mirror.client_ca`)."""
        cfg = self.cfg
        access = cfg.access
        if access.enabled and access.signing_cert and access.signing_key:
            self.signer_bundle = str(signers.prepare(access.signing_cert, access.signing_key, time.time(),
                                                     access.signing_generated))
        if cfg.mirror.client_ca:
            cert, key = certs.own_client_pair(cfg.mirror.tls_cert)
            certs.ensure_own_pair(cert, key, "artifactory-mirror", f"the mirror's client pair {cert} / {key}")

    def realm(self) -> str | None:
        access = self.cfg.access
        if not access.enabled:
            return None
        try:
            return realm_url(access.url, Path(self.cfg.mirror.tls_cert).read_bytes(), access.listen.port)
        except OSError as e:
            raise certs.CertError(f"cannot read mirror.tls_cert {self.cfg.mirror.tls_cert}: {e.strerror}") from e

    def start_registry(self) -> None:
        """The stock registry, with a configuration generated from mirror.yaml (again after a restart)."""
        cfg = self.cfg
        Path(cfg.mirror.storage).mkdir(parents=True, exist_ok=True)
        registry_yml = self.log_dir / "registry.yml"
        registry_yml.unlink(missing_ok=True)
        # created 0600: it may hold the redis password, and no one else may read it even for a moment
        with os.fdopen(os.open(registry_yml, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(yaml.safe_dump(proxy_registry_config(cfg, f"http://{cfg.rewriter.listen}", realm=self.realm(),
                                                 signer_bundle=self.signer_bundle)))
        log = self.logs["registry"]
        # the pair on disk as the registry reads it at its start: a renewal from now on is a change
        self.cert_watch = CertWatch(cfg.mirror.tls_cert, cfg.mirror.tls_key) if cfg.mirror.tls else None
        self.ca_watch = CaWatch(cfg.mirror.client_ca) if cfg.mirror.client_ca else None
        env, unset, redact = self.registry_environment()
        self.registry = self.launcher.start([processes.registry_binary(), "serve", str(registry_yml)], log,
                                            env=env, unset=unset, redact=(notification_secret(cfg.mirror.storage),
                                                                          *redact))
        self.launcher.wait_for_port(cfg.mirror.listen.host, cfg.mirror.listen.port, self.registry,
                                    what="the stock registry", log_path=log.path)

    def registry_environment(self) -> tuple[dict[str, str], tuple[str, ...], tuple[str, ...]]:
        """What the registry's environment adds and drops, and what its log is redacted of: on `mirror.s3`, the
        driver panics at start with AWS_CA_BUNDLE set, and Go takes one CA bundle (SSL_CERT_FILE) in place of the
        system's, so `ca_file` comes with the system's CAs."""
        s3 = self.cfg.mirror.s3
        if s3 is None:
            return {}, (), ()
        env = {"SSL_CERT_FILE": str(certs.write_ca_bundle(s3.ca_file, self.log_dir / "s3-ca-bundle.pem"))} \
            if s3.ca_file else {}
        aws_bundle = os.environ.get("AWS_CA_BUNDLE")
        if not env and aws_bundle and not os.environ.get("SSL_CERT_FILE"):  # the CAs it meant, as Go takes them
            env["SSL_CERT_FILE"] = aws_bundle
        return env, ("AWS_CA_BUNDLE",), (str(s3.credentials[1]),) if s3.credentials else ()

    def wait(self) -> int:
        """Block until one process exits; return non-zero naming it. A renewed certificate restarts the registry."""
        next_check = time.monotonic() + CERT_POLL_SECONDS
        while True:
            for name, proc in (("mitmproxy", self.mitm), ("registry", self.registry)):
                if proc is not None and proc.poll() is not None:
                    print(f"artifactory-mirror: {name} exited with status {proc.returncode}; stopping the other "
                          f"(logs in {self.log_dir})", file=sys.stderr)
                    return proc.returncode or 1
            self.draining = [proc for proc in self.draining if proc.poll() is None]
            if self.cert_watch and time.monotonic() >= next_check:
                next_check = time.monotonic() + CERT_POLL_SECONDS
                # a renewed pair, or a new clients' CA: both are read by the registry at its start only
                if self.cert_watch.changed() | bool(self.ca_watch and self.ca_watch.changed()):
                    self.restart_registry()
            time.sleep(0.2)

    def restart_registry(self) -> None:
        """A new registry (it reads its certificate only at start) while the old one drains: the old one closes its
        listener at once and finishes its requests; the new one binds as soon as the port is free. The seconds no
        listener was there are logged."""
        old, listen = self.registry, self.cfg.mirror.listen
        if old is not None:  # started: it drains
            try:
                os.killpg(old.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass  # it has just exited: the wait loop says so
            self.draining.append(old)
        deadline = time.monotonic() + 30
        while processes.port_in_use(listen.host, listen.port) and time.monotonic() < deadline:
            time.sleep(0.01)  # the old listener closing: a SIGTERM handler's moment
        closed = time.monotonic()
        self.start_registry()
        gap = time.monotonic() - closed
        try:
            expiry = certs.date_text(certs.certificate_expiry(self.cfg.mirror.tls_cert))
        except certs.CertError as e:  # replaced once more meanwhile: the next poll takes it
            expiry = str(e)
        print(f"artifactory-mirror: {self.cfg.mirror.tls_cert} changed: the registry restarted with it (valid until "
              f"{expiry}); no listener for {gap * 1000:.0f} ms, the previous registry finishes its requests",
              file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Drain: the registry stops taking connections and finishes its requests within the drain timeout,
        the addon serving them meanwhile; then the addon stops. What the timeout cut is logged."""
        self._stopping.set()
        drain = self.cfg.mirror.drain_timeout
        current = self.registry if self.registry is not None and self.registry.poll() is None else None
        deadline = time.monotonic() + drain + STOP_MARGIN  # one deadline for every registry draining
        for registry in (*self.draining, self.registry):
            cut = processes.stop(registry, timeout=max(0.0, deadline - time.monotonic()))
        if current is not None and drain and (cut or current.returncode != 0):
            print(f"artifactory-mirror: the registry did not finish its requests within mirror.drain_timeout "
                  f"({drain:g} s); {self._in_flight() or 'requests in flight'} cut", file=sys.stderr)
        processes.stop(self.mitm)

    def _in_flight(self) -> str:
        """The addon's blob transfers in flight, for the message of a drain cut short."""
        try:
            with urllib.request.urlopen(self.cfg.rewriter.listen.local_url(JSON_PATH), timeout=2) as resp:
                transfers = json.load(resp)["transfers"]
        except (OSError, ValueError, KeyError):
            return ""
        return f"{len(transfers)} blob transfers ({', '.join(t['digest'][:19] for t in transfers[:5])})" \
            if transfers else ""

    def _report_dropped_lines(self) -> None:
        """Tell the addon (its stats page, /metrics) of log lines dropped since the last report."""
        reported: dict = {}
        while not self._stopping.wait(LOG_REPORT_SECONDS):
            state = {f"{name}.log": {"dropped_lines": log.dropped_lines, "last_error": log.last_error}
                     for name, log in self.logs.items()}
            if state == reported:
                continue
            try:
                request = urllib.request.Request(
                    self.cfg.rewriter.listen.local_url(LOGS_PATH), data=json.dumps(state).encode(), method="POST",
                    headers={"Content-Type": "application/json",
                             SECRET_HEADER: notification_secret(self.cfg.mirror.storage)})
                with urllib.request.urlopen(request, timeout=5):
                    reported = state
            except OSError:
                pass  # the addon is stopping or busy, or the disk full: the next round tells it


def raise_open_files_limit() -> None:
    """The soft limit of open files up to the hard one, for both processes (they inherit it): each blob in
    flight holds a client connection, an upstream connection and spool files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:  # a container's odd limits: run with the soft one
            print(f"artifactory-mirror: cannot raise the open-files limit from {soft} to {hard}: {e}", file=sys.stderr)


def private_dump_file(spec: str) -> Path:
    """Create mitmproxy's `-w` file (`+path` appends) readable by its owner only, before mitmproxy opens it: the
    flows hold every request's URL and headers, and blob redirects' tickets; mitmproxy itself would create it
    world-readable (mode 0666 less the umask). An existing file is kept, made 0600."""
    path = Path(spec[1:] if spec.startswith("+") else spec).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the file opened, not whatever the name points to by now
        finally:
            os.close(fd)
    except OSError as e:
        raise processes.ProcessError(f"--dump {spec}: cannot create it readable only by its owner ({e}); "
                                     f"choose a path in a folder you can write to") from e
    return path


def preflight(cfg: Config, web: bool) -> list[str]:
    """Problems that would stop start-up, found before any process starts."""
    problems = []
    listens = [("mirror.listen", cfg.mirror.listen), ("rewriter.listen", cfg.rewriter.listen)]
    if web:
        listens.append(("rewriter.web_listen", cfg.rewriter.web_listen))
    if cfg.webhooks.listen is not None:  # webhooks enabled
        listens.append(("webhooks.listen", cfg.webhooks.listen))
    if cfg.access.enabled:
        listens.append(("access.listen", cfg.access.listen))
    if cfg.metrics.listen is not None:
        listens.append(("metrics.listen", cfg.metrics.listen))
    for key, addr in listens:
        if processes.port_in_use(addr.host, addr.port):
            problems.append(f"{key}: {addr} is already in use; stop what listens there or choose another port")
    try:
        processes.registry_binary()
        processes.venv_tool("mitmweb" if web else "mitmdump")
    except processes.ProcessError as e:
        problems.append(str(e))
    return problems
