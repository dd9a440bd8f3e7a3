"""`artifactory-mirror`: the operator's commands. The configuration is checked completely before anything runs."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from importlib.metadata import version
from pathlib import Path

from registry_mirror.access import tokens
from registry_mirror.access.server import TOKEN_PATH
from registry_mirror.cli import client_configs as clients
from registry_mirror.cli import processes
from registry_mirror.cli.supervisor import Supervisor, preflight
from registry_mirror.config.load import Config, ConfigError, any_address, config_path, load
from registry_mirror.expiry import forget
from registry_mirror.expiry.last_pulls import LastPulls
from registry_mirror.expiry.passes import Expiry
from registry_mirror.proxy import replica_events
from registry_mirror.proxy.notifications import SECRET_HEADER, notification_secret
from registry_mirror.stats.views import FORGET_PATH, JSON_PATH, summary_text
from registry_mirror.storage import bucket, quarantine, verify
from registry_mirror.storage.stores import Stores, open_stores
from registry_mirror.storage.verify import Checked
from registry_mirror.tls import certs
from registry_mirror.units import human_bytes
from registry_mirror.warming import pull as warm
from registry_mirror.warming.webhooks import WEBHOOK_PATH

PROG = "artifactory-mirror"


def _load_or_exit(path: str, read_secrets: bool = True) -> Config:
    """`read_secrets` False for a command that uses no secret (config/load.py)."""
    p = config_path(path)
    try:
        return load(p, read_secrets=read_secrets)
    except ConfigError as e:
        print(f"{PROG}: configuration error in {p}: {e}", file=sys.stderr)
        sys.exit(2)


def cmd_check(args, clock=time.time) -> int:
    cfg = _load_or_exit(args.config)
    cert = cfg.mirror.tls_cert
    if cfg.mirror.tls and Path(cert).exists():  # a missing pair is fine: `up` generates one
        # the registry never checks its certificate; the webhook listener serves it too
        if problem := certs.certificate_problem(cert, clock()):
            print(f"{PROG}: {problem[0]}: {problem[1]}", file=sys.stderr)
            if problem[0] == "error":
                return 2
    print(f"{cfg.source}: OK; upstream {cfg.upstream.origin}{cfg.upstream.prefix}/v2/, mirror on "
          f"{'https' if cfg.mirror.tls else 'http'}://{cfg.mirror.listen}, addon on {cfg.rewriter.listen}")
    if cfg.webhooks.enabled:
        print(f"  webhooks: {'https' if cfg.mirror.tls else 'http'}://{cfg.webhooks.listen}{WEBHOOK_PATH}")
    if cfg.access.enabled:
        if problem := _signer_problem(cfg, clock()):
            print(f"{PROG}: {problem[0]}: {problem[1]}", file=sys.stderr)
            if problem[0] == "error":
                return 2
        print(f"  access: each pull checked against the client's Artifactory user; tokens from "
              f"https://{cfg.access.listen}{TOKEN_PATH}")
    if cfg.mirror.s3:
        s3 = cfg.mirror.s3
        try:
            bucket.reach(s3)
        except bucket.BucketError as e:
            print(f"{PROG}: {e}", file=sys.stderr)
            return 1
        print(f"  storage: bucket {s3.bucket}{'/' + s3.prefix if s3.prefix else ''} at {s3.endpoint or 'AWS S3'}, "
              "reachable")
    for route in cfg.routes:
        asked = f"{route.match_prefix}/<name>" if route.match_prefix else "<name>"
        print(f"  {route.label}: {describe_match(route)}: /v2/{asked} -> "
              f"{route.origin}{route.prefix}/v2/{route.upstream_name(asked)}")
    return 0


def _signer_problem(cfg: Config, now: float) -> tuple[str, str] | None:
    """What is wrong with the token signer on disk (a missing pair is fine: `up` generates one)."""
    cert, key = cfg.access.signing_cert, cfg.access.signing_key
    if not (cert and key and Path(cert).exists() and Path(key).exists()):
        return None
    try:
        return tokens.signer_problem(tokens.Signer.load(cert, key), cert, now)
    except ValueError as e:
        return "error", str(e)


def describe_match(route) -> str:
    parts = [f"names under {route.match_prefix}/"] if route.match_prefix else []
    parts += [f"ns {', '.join(route.match_ns)}"] if route.match_ns else []
    return " and ".join(parts)


def cmd_status(args) -> int:
    """A short terminal summary of the running mirror, from the addon's JSON stats."""
    cfg = _load_or_exit(args.config, read_secrets=False)
    url = cfg.rewriter.listen.local_url(JSON_PATH)
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            snap = json.load(resp)
    except (OSError, ValueError) as e:
        print(f"{PROG}: no stats at {url} ({e}); is `{PROG} up` running with this configuration?", file=sys.stderr)
        return 1
    print(summary_text(snap))
    return 0


def cmd_evictions(args) -> int:
    """What the next expiry pass would remove, least recently pulled first; nothing is changed."""
    cfg = _load_or_exit(args.config)
    with _open_stores(cfg) as stores:
        pulls = LastPulls(stores.pulls, replica="preview")  # every replica's, merged
        plan = Expiry(stores.registry, cfg.mirror.max_age, cfg.mirror.max_bytes, pulls).preview()
    for removal in plan.removals:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(removal.last_pull))
        print(f"{removal.image.repository}@{removal.image.digest}  last pulled {when}  ({removal.reason})")
    print(f"{len(plan.removals)} images, {len(plan.blobs)} blobs, {plan.bytes_freed} bytes would go; "
          f"{plan.bytes_kept} bytes stay (max_bytes: {cfg.mirror.max_bytes or 'none'})")
    return 0


@contextlib.contextmanager
def _open_stores(cfg: Config) -> Iterator[Stores]:
    """The storage, a folder or the bucket (storage/stores.py); a bucket that cannot be opened exits 2."""
    try:
        store = bucket.Bucket(cfg.mirror.s3) if cfg.mirror.s3 else None
    except bucket.BucketError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    try:
        yield open_stores(cfg.mirror.storage, store)
    finally:
        if store is not None:
            store.close()


def cmd_verify(args, clock=time.time) -> int:
    """One pass over the registry's blob data (files, or a bucket's objects), each hashed in bounded memory; one
    whose bytes do not match its digest is moved aside (the next pull fetches a good copy) and the exit status
    is 1."""
    cfg = _load_or_exit(args.config)
    if cfg.mirror.s3 is None:
        root = Path(cfg.mirror.storage)
        return _report_checks(verify.verify_storage(root, clock), str(root), str(quarantine.folder(root)))
    try:
        store = bucket.Bucket(cfg.mirror.s3)
    except bucket.BucketError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    try:
        return _report_checks(store.verify_storage(), f"bucket {store.name}", "quarantine/")
    except Exception as e:  # the listing failed: what was checked so far is said
        print(f"{PROG}: cannot list bucket {store.name!r}: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _report_checks(checks: Iterable[Checked], where: str, aside: str) -> int:
    """Each mismatch as it is found, then the totals; 1 if there was one."""
    good = bad = nbytes = 0
    for checked in checks:
        nbytes += checked.size
        if checked.ok:
            good += 1
            continue
        bad += 1
        moved = f"moved to {checked.moved_to}" if checked.moved_to else \
            "not moved: gone, replaced by a good copy, or it could not be moved (logged)"
        print(f"MISMATCH {checked.digest}: {checked.size} bytes read as {checked.actual}; {moved}", flush=True)
    print(f"{good + bad} blobs ({human_bytes(nbytes)}) checked in {where}: {good} good, {bad} corrupt"
          + (f", moved to {aside}: the next pull of each fetches it from the upstream" if bad else ""))
    return 1 if bad else 0


def cmd_forget(args) -> int:
    """Remove an image from the mirror: through the running addon (its storage and caches), else from the storage
    alone (nothing is cached while it does not run). With replicas the other addons drop it from their caches."""
    cfg = _load_or_exit(args.config)
    try:
        target = forget.parse_target(args.image)
    except forget.TargetError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    request = urllib.request.Request(
        cfg.rewriter.listen.local_url(FORGET_PATH), method="POST",
        data=json.dumps({"image": str(target), "dry_run": args.dry_run}).encode(),
        headers={"Content-Type": "application/json", SECRET_HEADER: notification_secret(cfg.mirror.storage)})
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the secret never goes to a proxy
    try:
        with direct.open(request, timeout=600) as resp:
            done, where = json.load(resp), "the running mirror (storage and caches)"
    except urllib.error.HTTPError as e:
        print(f"{PROG}: the mirror refused: {e.read()[:300].decode(errors='replace')}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        if not isinstance(getattr(e, "reason", e), ConnectionRefusedError):  # it runs and did not answer
            print(f"{PROG}: the mirror at {cfg.rewriter.listen} did not answer ({e}); nothing was forgotten, try "
                  f"again", file=sys.stderr)
            return 1
        # nothing listens: the storage alone
        with _open_stores(cfg) as stores:
            pulls = LastPulls(stores.pulls, replica="forget")
            plan = asyncio.run(Expiry(stores.registry, cfg.mirror.max_age, None, pulls).forget(target, args.dry_run))
            where = f"the storage {stores.registry.name} (no mirror answers at {cfg.rewriter.listen})"
        done = {"images": [f"{r.image.repository}@{r.image.digest}" for r in plan.removals],
                "blobs": len(plan.blobs), "bytes": plan.bytes_freed,
                "replicas": None if args.dry_run else _tell_replicas(cfg, target, plan)}
    for image in done["images"]:
        print(f"{'would forget' if args.dry_run else 'forgot'} {image}")
    replicas = f"; {done['replicas']}" if done.get("replicas") else ""
    print(f"{len(done['images'])} images, {done['blobs']} blobs ({human_bytes(done['bytes'])}) "
          f"{'would go from' if args.dry_run else 'removed from'} {where}{replicas}")
    return 0


def _tell_replicas(cfg: Config, target: forget.Target, plan) -> str | None:
    """The storage alone was acted on: the running replicas sharing it still have the image in their caches."""
    if not cfg.scale.enabled:
        return None
    inv = replica_events.Invalidation(f"the forget command on {socket.gethostname()}", target.repository, target.tag,
                                      replica_events.forgotten_digests(target, (r.image.digest for r in plan.removals)))
    heard = asyncio.run(replica_events.publish_once(cfg.scale, inv))
    return replica_events.told_text(heard, cfg.cache)


def cmd_warm(args) -> int:
    cfg = _load_or_exit(args.config)
    try:
        refs = warm.read_refs(args.images, args.file)
    except OSError as e:
        print(f"warm: cannot read the list of images {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    if not refs:
        args.parser.error("name at least one image, or -f FILE")
    return warm.warm(cfg, refs)


def cmd_clients(args) -> int:
    """Each client's configuration for this mirror, from its address and certificate."""
    cfg = _load_or_exit(args.config, read_secrets=False)
    if not cfg.mirror.tls:
        print(f"{PROG}: mirror.tls is off; clients need a TLS mirror (or each its own insecure setting)",
              file=sys.stderr)
        return 2
    if not Path(cfg.mirror.tls_cert).exists():
        print(f"{PROG}: mirror.tls_cert {cfg.mirror.tls_cert} does not exist yet: start the mirror once (`up` "
              f"generates a self-signed pair) or put your certificate and key there", file=sys.stderr)
        return 2
    try:
        trust = certs.write_trust_folder(cfg.mirror.trusted_ca, cfg.mirror.tls_cert)
    except certs.CertError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    listen = cfg.mirror.listen
    mirror = args.address or f"{machine_name() if any_address(listen.host) else listen.host}:{listen.port}"
    host = address_host(mirror)
    try:
        names = certs.certificate_names(cfg.mirror.tls_cert)
    except certs.CertError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    if not certs.names_host(names, host):
        print(f"{PROG}: the mirror's certificate {cfg.mirror.tls_cert} is not valid for {host} (it names "
              f"{', '.join(names) or 'no host'}): clients would fail with `x509: certificate is valid for ...`. Use "
              f"one of those names with --address, or get a certificate that carries {host}: from your CA, or for the "
              f"generated self-signed pair delete {cfg.mirror.tls_cert} and {cfg.mirror.tls_key}, set mirror.listen "
              f"to {host}:{listen.port} (or keep 0.0.0.0 on a machine named {host}) and start `up` again",
              file=sys.stderr)
        return 2
    # containerd and podman mirror one registry host: upstream's. The stock registry drops containerd's ns, so a
    # route with a url of its own is chosen by its image-name prefix: its clients pull by the mirror's name
    upstream = clients.UpstreamRegistry.from_url(cfg.upstream.origin, cfg.upstream.repository,
                                         cfg.upstream.repository_path_names)
    others = sorted({f"{route.match_prefix}/" for route in cfg.routes if route.origin != cfg.upstream.origin
                     and route.match_prefix})
    if bool(args.client_cert) != bool(args.client_key):
        print(f"{PROG}: give --client-cert and --client-key together (the client's certificate and its key)",
              file=sys.stderr)
        return 2
    access = clients.Access(client_cert=bool(cfg.mirror.client_ca), login=cfg.access.enabled)
    found = clients.all_clients(mirror, upstream, str(trust), others, access)
    pair = (args.client_cert, args.client_key) if args.client_cert else None
    print(clients.render(found, str(trust / "ca.crt"), pair))
    return 0


def address_host(address: str) -> str:
    """The host of host[:port], [v6][:port] or a bare IPv6 address."""
    if address.startswith("["):
        return address[1:address.index("]")] if "]" in address else address
    return address.rpartition(":")[0] if address.count(":") == 1 else address


def machine_name() -> str:
    """This machine's name as clients elsewhere use it (its certificate names both)."""
    fqdn = socket.getfqdn()
    return socket.gethostname() if fqdn.startswith("localhost") else fqdn


def cmd_up(args) -> int:
    cfg = _load_or_exit(args.config)
    problems = preflight(cfg, args.web)
    if problems:
        for p in problems:
            print(f"{PROG}: {p}", file=sys.stderr)
        return 2
    if cfg.mirror.tls:
        try:  # the address clients are told to use must be in it
            if certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key, extra_names=(cfg.mirror.listen.host,)):
                print(f"{PROG}: generated a self-signed certificate {cfg.mirror.tls_cert}")
        except certs.CertError as e:
            print(f"{PROG}: {e}", file=sys.stderr)
            return 2
        # served all the same: clients that trust it otherwise still get their cached images
        if problem := certs.certificate_problem(cfg.mirror.tls_cert, time.time()):
            print(f"{PROG}: {problem[0]}: {problem[1]}", file=sys.stderr)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="artifactory-mirror-"))
    mirror = Supervisor(cfg, log_dir, web=args.web, dump=args.dump)

    def on_signal(_signum, _frame):
        raise KeyboardInterrupt
    for signum in (signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal that ran it closed
        signal.signal(signum, on_signal)
    try:
        mirror.start()
        scheme = "https" if cfg.mirror.tls else "http"
        print(f"{PROG}: serving {scheme}://{cfg.mirror.listen} -> addon {cfg.rewriter.listen} -> "
              f"{cfg.upstream.origin}{cfg.upstream.prefix}/v2/ (logs in {log_dir})", flush=True)
        if cfg.mirror.tls:
            print(f"{PROG}: " + certs.trust_hint(cfg.mirror.tls_cert))
        if args.web:
            login = "password from rewriter.web_password" if cfg.rewriter.web_password else \
                f"token in {log_dir / 'mitmproxy.log'}"
            print(f"{PROG}: mitmweb on http://{cfg.rewriter.web_listen}/ ({login})")
        return mirror.wait()
    except KeyboardInterrupt:
        print(f"{PROG}: stopping: the registry finishes the pulls in flight (mirror.drain_timeout "
              f"{cfg.mirror.drain_timeout:g} s)", file=sys.stderr)
        return 0
    except processes.ProcessError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # a second one would cut the drain short
            signal.signal(signum, signal.SIG_IGN)
        mirror.stop()


def parser() -> argparse.ArgumentParser:
    config_help = "mirror.yaml path (default: $MIRROR_CONFIG or ./mirror.yaml)"
    top = argparse.ArgumentParser(prog=PROG, description="A pull-through mirror of JFrog Artifactory: the stock "
                                  "registry in proxy mode behind a mitmproxy addon.")
    top.add_argument("--version", action="version", version=f"%(prog)s {version('artifactory-mirror')}")
    top.add_argument("--config", default="", help=config_help)
    # --config also after the command; SUPPRESS keeps the top-level value when it is not repeated there
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func, parser=p)
        return p
    for name, web in (("up", False), ("web", True)):
        p = command(name, cmd_up, "run the mirror in the foreground" + (" with mitmweb for inspecting flows" if web
                                                                         else ""))
        p.add_argument("--log-dir", help="where the processes' logs go (default: a new temporary folder)")
        p.add_argument("--dump", help="also write flows to this file (mitmdump -w); credentials are never in them")
        p.set_defaults(web=web)
    command("check", cmd_check, "validate the configuration and exit")
    command("status", cmd_status, "a summary of the running mirror's stats")
    w = command("warm", cmd_warm, "pull images (every platform) into the running mirror before a deploy")
    w.add_argument("images", nargs="*", help="team/app:1.0 or team/app@sha256:...")
    w.add_argument("-f", "--file", help="a file of references, one per line (- for stdin; # comments)")
    c = command("clients", cmd_clients, "print docker's, containerd's, Kubernetes', podman's and skopeo's "
                "configuration for this mirror")
    c.add_argument("--address", help="HOST:PORT clients reach the mirror at (default: mirror.listen, or this "
                   "machine's name when it listens on every address); the certificate must name it")
    c.add_argument("--client-cert", help="with mirror.client_ca: the client's certificate, copied where each client "
                   "looks for it (default: a placeholder)")
    c.add_argument("--client-key", help="the key of --client-cert")
    command("evictions", cmd_evictions, "what the next expiry pass would remove (changes nothing)")
    f = command("forget", cmd_forget, "remove an image from the mirror's storage and caches (deleted upstream)")
    f.add_argument("image", help="team/app (every image of it), team/app:1.0 or team/app@sha256:...")
    f.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")
    command("verify", cmd_verify, "hash every blob in the storage; move corrupt ones aside (exit 1 if any)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
