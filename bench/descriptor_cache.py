"""`./run.sh bench-descriptors`: what running the stock registry without its blob descriptor cache costs.

The mirror's expiry deletes blobs behind the registry, so the registry runs without `storage.cache.
blobdescriptor` (a cached descriptor of a deleted blob is served as 200 with no bytes). This measures warm
pulls' requests against the registry itself over TLS, as clients make them (HEAD and GET of each blob of a
stored image, by digest), for a fixed time with several clients, once as shipped and once with the
`inmemory` cache, alternating, after a `sync`. Prints every round and the medians, and saves them to
bench/results/descriptor-cache.md.
"""
from __future__ import annotations

import argparse
import http.client
import os
import ssl
import statistics
import tempfile
import threading
import time
from pathlib import Path

import yaml

from devtools import seed
from devtools.demo import write_mirror_config
from devtools.ports import free_port
from devtools.skopeo import pull
from devtools.upstream_harness import UpstreamHarness
from registry_mirror.cli import processes
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load
from registry_mirror.tls import certs

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("no cache (shipped)", "inmemory cache")


def restart_registry(mirror: Supervisor, cache: bool) -> None:
    processes.stop(mirror.registry)
    mirror.start_registry()
    if cache:  # the same generated configuration with the cache the mirror leaves out
        path = mirror.log_dir / "registry.yml"
        generated = yaml.safe_load(path.read_text())
        generated["storage"]["cache"] = {"blobdescriptor": "inmemory"}
        processes.stop(mirror.registry)
        path.write_text(yaml.safe_dump(generated))
        mirror.registry = processes.start([processes.registry_binary(), "serve", str(path)],
                                          mirror.log_dir / "registry.log")
        host, port = mirror.cfg.mirror.listen.host, mirror.cfg.mirror.listen.port
        processes.wait_for_port(host, port, mirror.registry, what="the stock registry")


def load_round(host: str, port: int, context: ssl.SSLContext, image: seed.Image, clients: int,
               seconds: float) -> float:
    """Requests per second: every client HEADs and GETs the image's blobs by digest, round and round."""
    paths = [f"/v2/{image.name}/blobs/{b.digest}" for b in (*image.layers, image.config)]
    counts = [0] * clients
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        conn = http.client.HTTPSConnection(host, port, context=context, timeout=30)
        while time.monotonic() < deadline:
            for path in paths:
                for method in ("HEAD", "GET"):
                    conn.request(method, path)
                    resp = conn.getresponse()
                    resp.read()
                    assert resp.status == 200, (method, path, resp.status)
                    counts[n] += 1
        conn.close()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant, alternating (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a round (default 10)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-descriptors-"))
    upstream = UpstreamHarness(workdir / "upstream")
    mirror = None
    try:
        upstream.start()
        layers = [seed.random_layer(workdir / "layers", 64 * 1024, 300 + n) for n in range(8)]
        image = seed.build_image("bench/small", "1.0", layers)
        seed.push(upstream.registry_url, image)
        cfg = load(write_mirror_config(workdir, upstream.url, upstream.username, upstream.password,
                                       free_port(), free_port()))
        certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key)
        mirror = Supervisor(cfg, workdir / "logs")
        mirror.start()
        pull(f"{cfg.mirror.listen}/{image.name}:{image.tag}", workdir / "warm",
             cert_dir=certs.trust_folder(cfg.mirror.tls_cert))
        context = ssl.create_default_context(cafile=cfg.mirror.tls_cert)
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for n in range(args.rounds):
            for variant in (VARIANTS if n % 2 == 0 else VARIANTS[::-1]):
                restart_registry(mirror, cache=variant != VARIANTS[0])
                os.sync()
                rps = load_round(cfg.mirror.listen.host, cfg.mirror.listen.port, context, image, args.clients,
                                 args.seconds)
                samples[variant].append(rps)
                print(f"round {n + 1}: {variant:20} {rps:8.0f} requests/s", flush=True)
        lines = ["# Warm blob requests against the stock registry, with and without its descriptor cache", "",
                 f"`./run.sh bench-descriptors` on {os.cpu_count()} cores, {args.clients} clients over TLS, "
                 f"HEAD and GET of 9 blobs by digest, {args.seconds:g} s rounds alternating after a sync.", "",
                 "| registry | median requests/s | samples |", "|---|---|---|"]
        for variant, values in samples.items():
            lines.append(f"| {variant} | {statistics.median(values):.0f} | "
                         f"{', '.join(f'{v:.0f}' for v in values)} |")
        ratio = statistics.median(samples[VARIANTS[0]]) / statistics.median(samples[VARIANTS[1]])
        lines += ["", f"Without the cache: {ratio:.2f}x the requests/s with it."]
        out = ROOT / "bench/results/descriptor-cache.md"
        out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    finally:
        if mirror:
            mirror.stop()
        upstream.stop()


if __name__ == "__main__":
    raise SystemExit(main())
