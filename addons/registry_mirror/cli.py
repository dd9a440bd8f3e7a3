"""`python -m registry_mirror.cli up|web|check`: validate the configuration, then run the mirror's two processes.

The configuration is checked completely before any process starts. mitmdump (or mitmweb) with the addon
starts first, because the stock registry pings its remote at start and panics if nothing listens; if either
process dies the other is stopped and the exit status is non-zero.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import argon2
import yaml

from . import certs, processes
from .config import Config, ConfigError, config_path, load
from .expiry import Expiry
from .notifications import notification_secret
from .pulls import LastPulls, pulls_folder
from .registry_config import proxy_registry_config
from .stats_views import JSON_PATH, READY_PATH, summary_text

ADDON = Path(__file__).resolve().parent.parent / "mirror.py"


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
        if self.dump:
            private_dump_file(self.dump)
        mitm_log = self.log_dir / "mitmproxy.log"
        self.mitm = processes.start(self.mitm_args(), mitm_log, netns=self.netns)
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
                    print(f"mirror: {name} exited with status {proc.returncode}; stopping the other "
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
    for key, addr in listens:
        if processes.port_in_use(addr.host, addr.port):
            problems.append(f"{key}: {addr} is already in use; stop what listens there or choose another port")
    try:
        processes.registry_binary()
        processes.venv_tool("mitmweb" if web else "mitmdump")
    except processes.ProcessError as e:
        problems.append(str(e))
    return problems


def _load_or_exit(path: str) -> Config:
    p = config_path(path)
    try:
        return load(p)
    except ConfigError as e:
        print(f"mirror: configuration error in {p}: {e}", file=sys.stderr)
        sys.exit(2)


def cmd_check(args) -> int:
    cfg = _load_or_exit(args.config)
    print(f"{cfg.source}: OK; upstream {cfg.upstream.origin}{cfg.upstream.prefix}/v2/, mirror on "
          f"{'https' if cfg.mirror.tls else 'http'}://{cfg.mirror.listen}, addon on {cfg.rewriter.listen}")
    for route in cfg.routes:
        asked = f"{route.match_prefix}/<name>" if route.match_prefix else "<name>"
        print(f"  {route.label}: {describe_match(route)}: /v2/{asked} -> "
              f"{route.origin}{route.prefix}/v2/{route.upstream_name(asked)}")
    return 0


def describe_match(route) -> str:
    parts = [f"names under {route.match_prefix}/"] if route.match_prefix else []
    parts += [f"ns {', '.join(route.match_ns)}"] if route.match_ns else []
    return " and ".join(parts)


def cmd_status(args) -> int:
    """A short terminal summary of the running mirror, from the addon's JSON stats."""
    cfg = _load_or_exit(args.config)
    url = cfg.rewriter.listen.local_url(JSON_PATH)
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            snap = json.load(resp)
    except (OSError, ValueError) as e:
        print(f"mirror: no stats at {url} ({e}); is ./run.sh up running with this configuration?", file=sys.stderr)
        return 1
    print(summary_text(snap))
    return 0


def cmd_evictions(args) -> int:
    """What the next expiry pass would remove, least recently pulled first; nothing is changed."""
    cfg = _load_or_exit(args.config)
    storage = cfg.mirror.storage
    pulls = LastPulls(pulls_folder(storage), replica="preview")  # every replica's, merged
    plan = Expiry(storage, cfg.mirror.max_age, cfg.mirror.max_bytes, pulls).preview()
    for removal in plan.removals:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(removal.last_pull))
        print(f"{removal.image.repository}@{removal.image.digest}  last pulled {when}  ({removal.reason})")
    print(f"{len(plan.removals)} images, {len(plan.blobs)} blobs, {plan.bytes_freed} bytes would go; "
          f"{plan.bytes_kept} bytes stay (max_bytes: {cfg.mirror.max_bytes or 'none'})")
    return 0


def cmd_up(args) -> int:
    cfg = _load_or_exit(args.config)
    problems = preflight(cfg, args.web)
    if problems:
        for p in problems:
            print(f"mirror: {p}", file=sys.stderr)
        return 2
    if cfg.mirror.tls:
        listen_host = cfg.mirror.listen.host
        try:  # the address clients are told to use must be in it
            if certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key, extra_names=(listen_host,)):
                print(f"mirror: generated a self-signed certificate {cfg.mirror.tls_cert}")
        except certs.CertError as e:
            print(f"mirror: {e}", file=sys.stderr)
            return 2
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="artifactory-mirror-"))
    mirror = Mirror(cfg, log_dir, web=args.web, dump=args.dump)
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)
        raise KeyboardInterrupt
    for signum in (signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal that ran it closed
        signal.signal(signum, on_signal)
    try:
        mirror.start()
        scheme = "https" if cfg.mirror.tls else "http"
        print(f"mirror: serving {scheme}://{cfg.mirror.listen} -> addon {cfg.rewriter.listen} -> "
              f"{cfg.upstream.origin}{cfg.upstream.prefix}/v2/ (logs in {log_dir})", flush=True)
        if cfg.mirror.tls:
            print("mirror: " + certs.trust_hint(cfg.mirror.tls_cert, cfg.mirror.listen.host, cfg.mirror.listen.port))
        if args.web:
            login = "password from rewriter.web_password" if cfg.rewriter.web_password else \
                f"token in {log_dir / 'mitmproxy.log'}"
            print(f"mirror: mitmweb on http://{cfg.rewriter.web_listen}/ ({login})")
        return mirror.wait()
    except KeyboardInterrupt:
        print("mirror: stopping", file=sys.stderr)
        return 0
    except processes.ProcessError as e:
        print(f"mirror: {e}", file=sys.stderr)
        return 1
    finally:
        mirror.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.sh", description=__doc__)
    parser.add_argument("--config", default="", help="mirror.yaml path (default: $MIRROR_CONFIG or ./mirror.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate the configuration and exit").set_defaults(func=cmd_check)
    sub.add_parser("status", help="a summary of the running mirror's stats").set_defaults(func=cmd_status)
    sub.add_parser("evictions", help="what the next expiry pass would remove (changes nothing)").set_defaults(
        func=cmd_evictions)
    for name, web in (("up", False), ("web", True)):
        p = sub.add_parser(name, help="run the mirror" + (" with mitmweb" if web else ""))
        p.add_argument("--log-dir", help="where the processes' logs go (default: a new temporary folder)")
        p.add_argument("--dump", help="also write flows to this file (mitmdump -w); credentials are never in them")
        p.set_defaults(func=cmd_up, web=web)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
