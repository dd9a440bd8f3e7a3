"""The running pair, supervised: mitmdump (or mitmweb) with the addon, then the stock registry.

mitmproxy starts first and the registry only once the addon says it is ready, because the registry pings
its remote at start and panics if nothing listens; if either process dies the other is stopped.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import argon2
import yaml

from . import certs, processes
from .config import Config
from .notifications import notification_secret
from .registry_config import proxy_registry_config
from .stats_views import READY_PATH

ADDON = Path(__file__).resolve().parent / "script" / "mirror.py"


class Mirror:
    """The running pair: the addon's mitmproxy and the stock registry."""

    def __init__(self, cfg: Config, log_dir: Path, web: bool = False, dump: str | None = None,
                 netns: str | None = None):
        """`netns`: run both processes inside that network namespace (the benchmark's data center)."""
        self.cfg, self.log_dir, self.web, self.dump, self.netns = cfg, log_dir, web, dump, netns
        self.mitm: subprocess.Popen | None = None
        self.registry: subprocess.Popen | None = None

    def mitm_args(self) -> list[str]:
        rw = self.cfg.rewriter
        args = [processes.venv_tool("mitmweb" if self.web else "mitmdump"), "-s", str(ADDON),
                "--mode", f"reverse:{self.cfg.upstream.origin}@{rw.listen.host}:{rw.listen.port}",
                "--set", f"mirror_config={self.cfg.source}", "--set", "connection_strategy=lazy",
                "--set", "stream_large_bodies=1m", "--set", "flow_detail=0"]
        if self.web:
            args += ["--set", f"web_host={rw.web_listen.host}", "--set", f"web_port={rw.web_listen.port}",
                     "--set", "web_open_browser=false"]
            if rw.web_password:  # an argon2 hash: the command line (visible in ps) never holds the password
                args += ["--set", f"web_password={argon2.PasswordHasher().hash(rw.web_password)}"]
        if self.dump:
            args += ["-w", self.dump]
        return args

    def start(self) -> None:
        cfg = self.cfg
        rw = cfg.rewriter
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if cfg.mirror.tls:
            try:
                certs.write_trust_folder(cfg.mirror.trusted_ca, cfg.mirror.tls_cert)
            except certs.CertError as e:  # a convenience for clients: the mirror serves without it
                print(f"artifactory-mirror: {e}", file=sys.stderr)
        if self.dump:
            private_dump_file(self.dump)
        mitm_log = self.log_dir / "mitmproxy.log"
        # the addon never logs the webhook secret; its log is redacted of it all the same
        webhook_secret = (cfg.webhooks.secret,) if cfg.webhooks.secret else ()
        self.mitm = processes.start(self.mitm_args(), mitm_log, netns=self.netns, redact=webhook_secret)
        processes.wait_until_ready(rw.listen.local_url(READY_PATH), self.mitm,
                                   what="mitmproxy with the addon", log_path=mitm_log, netns=self.netns)
        self.start_registry()

    def start_registry(self) -> None:
        """The stock registry, with a configuration generated from mirror.yaml (again after a restart)."""
        cfg = self.cfg
        Path(cfg.mirror.storage).mkdir(parents=True, exist_ok=True)
        registry_yml = self.log_dir / "registry.yml"
        registry_yml.unlink(missing_ok=True)
        # created 0600: it may hold the redis password, and no one else may read it even for a moment
        with os.fdopen(os.open(registry_yml, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(yaml.safe_dump(proxy_registry_config(cfg, f"http://{cfg.rewriter.listen}")))
        registry_log = self.log_dir / "registry.log"
        self.registry = processes.start([processes.registry_binary(), "serve", str(registry_yml)], registry_log,
                                        netns=self.netns, redact=(notification_secret(cfg.mirror.storage),))
        processes.wait_for_port(cfg.mirror.listen.host, cfg.mirror.listen.port, self.registry,
                                what="the stock registry", log_path=registry_log, netns=self.netns)

    def wait(self) -> int:
        """Block until one process exits; return non-zero naming it."""
        while True:
            for name, proc in (("mitmproxy", self.mitm), ("registry", self.registry)):
                if proc is not None and proc.poll() is not None:
                    print(f"artifactory-mirror: {name} exited with status {proc.returncode}; stopping the other "
                          f"(logs in {self.log_dir})", file=sys.stderr)
                    return proc.returncode or 1
            time.sleep(0.2)

    def stop(self) -> None:
        processes.stop(self.registry)
        processes.stop(self.mitm)


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
    if cfg.webhooks.enabled:
        listens.append(("webhooks.listen", cfg.webhooks.listen))
    for key, addr in listens:
        if processes.port_in_use(addr.host, addr.port):
            problems.append(f"{key}: {addr} is already in use; stop what listens there or choose another port")
    try:
        processes.registry_binary()
        processes.venv_tool("mitmweb" if web else "mitmdump")
    except processes.ProcessError as e:
        problems.append(str(e))
    return problems
