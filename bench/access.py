"""`python -m bench.access` (from the checkout: `PYTHONPATH=. .venv/bin/python -m bench.access`): what per-user
access (`access.users: artifactory`) costs.

An Artifactory-compatible upstream over TLS (token flow, a user `dev` who reads `tools/`), and three mirrors of it
on loopback, started together: open (`access.users: none`), per-user with decisions cached (`decision_ttl` 5m),
and per-user asking Artifactory every time (`decision_ttl: 0`). Measured, the mirrors taken in turn (alternating
order, after a `sync`):
- the token endpoint's answer to `repository:tools/lint:pull` with dev's credential (HTTPS, a new connection each
  time, as a client logs in), cold (Artifactory asked) and cached, --requests times each; and the requests
  Artifactory received per decision;
- a warm pull of tools/lint (already stored) by skopeo through each mirror, --pulls times each: its wall time
  and the requests Artifactory received per pull.
Printed, and saved to bench/results/access.md and .json (a --tag goes into the names).
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from devtools import seed
from devtools.ports import free_port
from devtools.skopeo import pull
from devtools.upstream_harness import UpstreamHarness, wait_until_quiet
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load
from registry_mirror.tls import certs

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "dev", "dev-Pa55word"
DESIGNS = {"open": None, "per-user, cached": "5m", "per-user, cold": 0}  # decision_ttl


def start_mirror(name: str, decision_ttl, workdir: Path, upstream: UpstreamHarness) -> Supervisor:
    folder = workdir / name.replace(", ", "-")
    folder.mkdir(parents=True)
    cert, key = str(folder / "certs/mirror.crt"), str(folder / "certs/mirror.key")
    certs.ensure_self_signed(cert, key)
    port = free_port()
    access = {"users": "artifactory", "listen": f"127.0.0.1:{port}", "url": f"https://127.0.0.1:{port}",
              "decision_ttl": decision_ttl} if decision_ttl is not None else {}
    cfg_path = folder / "mirror.yaml"
    cfg_path.touch(mode=0o600)  # it holds the upstream's credential
    cfg_path.write_text(yaml.safe_dump({
        "upstream": {"url": upstream.url, "repository": upstream.repository, "ca_file": upstream.ca_file,
                     "username": upstream.username, "password": upstream.password},
        "mirror": {"listen": f"127.0.0.1:{free_port()}", "storage": str(folder / "storage"), "tls_cert": cert,
                   "tls_key": key, "min_free": "64MiB"},
        "rewriter": {"listen": f"127.0.0.1:{free_port()}"},
        "cache": {"spool_dir": str(folder / "spool")},
        **({"access": access} if access else {})}))
    mirror = Supervisor(load(cfg_path), folder / "logs")
    mirror.start()
    certs.write_trust_folder(cert, cert)
    return mirror


def ask_token(mirror: Supervisor) -> float:
    """Seconds for one token request on a new connection; it must be granted."""
    url = f"{mirror.cfg.access.url}/token?service=artifactory-mirror&scope=repository:tools/lint:pull"
    request = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()})
    context = ssl.create_default_context(cafile=mirror.cfg.mirror.tls_cert)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30, context=context) as resp:
        resp.read()
    return time.perf_counter() - started


def ms(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[math.ceil(0.95 * len(ordered)) - 1] * 1000, 1), "n": len(ordered)}  # nearest rank


def upstream_requests(upstream: UpstreamHarness) -> int:
    wait_until_quiet(upstream, quiet=0.2)
    return upstream.stats()["request_count"]


def run(args) -> dict:
    workdir = Path(args.workdir)
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    upstream = UpstreamHarness(workdir / "upstream", tls=True, users={USER: (PASSWORD, ("tools",))}).start()
    mirrors: dict[str, Supervisor] = {}
    try:
        image = seed.build_image("tools/lint", "1.0", [seed.random_layer(Path(args.layer_cache), seed.MIB, 9100)])
        seed.push(upstream.registry_url, image)
        for name, ttl in DESIGNS.items():
            mirrors[name] = start_mirror(name, ttl, workdir, upstream)
        creds = f"{USER}:{PASSWORD}"
        for name, mirror in mirrors.items():  # stored in each, and a first decision made
            pull(f"{mirror.cfg.mirror.listen}/tools/lint:1.0", workdir / "prime", cert_dir=certs.trust_folder(
                mirror.cfg.mirror.tls_cert), creds=creds if name != "open" else None)
        subprocess.run(["sync"], check=True)
        tokens: dict[str, list[float]] = {n: [] for n in DESIGNS if n != "open"}
        token_requests = {n: 0 for n in tokens}
        for i in range(args.requests):
            for name in (list(tokens) if i % 2 == 0 else list(reversed(tokens))):
                before = upstream_requests(upstream)
                tokens[name].append(ask_token(mirrors[name]))
                token_requests[name] += upstream_requests(upstream) - before
        pulls: dict[str, list[float]] = {n: [] for n in DESIGNS}
        pull_requests = {n: 0 for n in DESIGNS}
        for i in range(args.pulls):
            for name in (list(DESIGNS) if i % 2 == 0 else list(reversed(DESIGNS))):
                mirror = mirrors[name]
                before = upstream_requests(upstream)
                pulls[name].append(pull(f"{mirror.cfg.mirror.listen}/tools/lint:1.0", workdir / "out",
                                        cert_dir=certs.trust_folder(mirror.cfg.mirror.tls_cert),
                                        creds=creds if name != "open" else None))
                pull_requests[name] += upstream_requests(upstream) - before
    finally:
        for mirror in mirrors.values():
            mirror.stop()
        upstream.stop()
    return {"date": time.strftime("%Y-%m-%d"), "requests": args.requests, "pulls": args.pulls,
            "token": {n: {**ms(v), "upstream_requests_per_decision": round(token_requests[n] / len(v), 2)}
                      for n, v in tokens.items()},
            "pull": {n: {**ms(v), "upstream_requests_per_pull": round(pull_requests[n] / len(v), 2)}
                     for n, v in pulls.items()}}


def markdown(result: dict, command: str) -> str:
    lines = ["# What per-user access costs", "",
             f"Measured {result['date']} with `{command}` on loopback: an Artifactory-compatible upstream over TLS "
             "(token flow), three mirrors of it taken in turn. Token: the token endpoint's answer to one pull "
             f"scope with the user's credential, a new HTTPS connection each ({result['requests']} each). Pull: a "
             f"warm pull (the image stored) by skopeo ({result['pulls']} each). Requests: what Artifactory "
             "received, per token answer or per pull.", "",
             "| mirror | token p50 | token p95 | Artifactory requests per decision | warm pull p50 | warm pull p95 "
             "| Artifactory requests per pull |", "|---|---|---|---|---|---|---|"]
    for name, p in result["pull"].items():
        t = result["token"].get(name)
        token = f"{t['p50_ms']} ms | {t['p95_ms']} ms | {t['upstream_requests_per_decision']}" if t else "- | - | -"
        lines.append(f"| {name} | {token} | {p['p50_ms']} ms | {p['p95_ms']} ms | {p['upstream_requests_per_pull']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.access", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100, help="token requests per mirror")
    parser.add_argument("--pulls", type=int, default=10, help="warm pulls per mirror")
    parser.add_argument("--tag", default="", help="a name added to the result files' names")
    parser.add_argument("--workdir", default=str(ROOT / "data" / "access"))
    parser.add_argument("--layer-cache", default=str(ROOT / "data" / "layers"))
    args = parser.parse_args()
    result = run(args)
    command = "./run.sh bench-access" + "".join(f" {a}" for a in sys.argv[1:])
    text = markdown(result, command)
    print(text)
    name = "access" + (f"-{args.tag}" if args.tag else "")
    out = ROOT / "bench" / "results"
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
