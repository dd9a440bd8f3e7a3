"""`./run.sh bench-clients`: how long docker, containerd and podman take to pull through the mirror, cold and warm,
against pulling the upstream directly (root; the clients are Debian's docker.io, containerd and podman).

The upstream is the Artifactory-compatible front behind the wire server serving TLS, as Artifactory would; the
mirror serves TLS too. Both listen on a veth address (docker skips TLS checks on 127.0.0.0/8), and dockerd
runs in the namespace at the other end. Each client is configured with what `artifactory-mirror clients`
prints (no fallback). Every cold and every direct pull is of an image nobody has pulled yet (layers of their
own), so no cache of the mirror, the upstream or the page cache favours either; a warm pull repeats the cold
one's image after the client forgot it. Rounds alternate the clients' order and each pull follows a `sync`.
Prints every sample and the medians, and saves them to bench/results/clients.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from devtools import seed
from devtools.client_drivers import Containerd, Dockerd, Podman, apply_printed
from devtools.netpath import HOST_SIDE, MtuPath
from devtools.ports import free_port
from devtools.upstream_harness import UpstreamHarness
from devtools.wire import WireHarness
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load
from registry_mirror.tls import certs

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ("docker", "containerd", "podman")
MODES = ("direct", "cold", "warm")


def image(name: str, seed_base: int, mb: int) -> seed.Image:
    """Two gzip'd tar layers, three quarters and a quarter of `mb`."""
    big, small = mb * seed.MIB * 3 // 4, mb * seed.MIB // 4
    return seed.build_image(name, "1.0", [seed.tar_layer(big, seed_base), seed.tar_layer(small, seed_base + 1)])


class Bed:
    """The upstream (front + TLS wire), the mirror, and each client configured for it and for direct pulls."""

    def __init__(self, workdir: Path, path: MtuPath):
        self.workdir = workdir
        self.upstream = UpstreamHarness(workdir / "upstream", auth="none").start()
        self.wire = WireHarness(self.upstream.url, workdir / "wire", tls=True, host=HOST_SIDE).start()
        self.wire_host = f"{HOST_SIDE}:{self.wire.port}"
        config = workdir / "mirror.yaml"
        config.write_text(yaml.safe_dump({
            "upstream": {"url": self.wire.url, "repository": self.upstream.repository, "anonymous": True,
                         "ca_file": self.wire.ca_file},
            "mirror": {"listen": f"{HOST_SIDE}:{free_port(HOST_SIDE)}", "storage": str(workdir / "storage"),
                       "tls_cert": str(workdir / "certs/mirror.crt"), "tls_key": str(workdir / "certs/mirror.key")},
            "rewriter": {"listen": f"127.0.0.1:{free_port()}"},
            "cache": {"spool_dir": str(workdir / "spool")}}))
        cfg = load(config)
        certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key, extra_names=(HOST_SIDE,))
        self.mirror = Supervisor(cfg, workdir / "mirror-logs")
        self.mirror.start()
        self.mirror_host = str(cfg.mirror.listen)
        printed = subprocess.run([str(Path(sys.executable).with_name("artifactory-mirror")), "clients", "--config",
                                  str(config)], capture_output=True, text=True, check=True).stdout
        root = workdir / "via-mirror"
        apply_printed(printed, f"containerd (without the fallback to {self.wire_host})", root)
        self.podman_conf = next(p for path, p in apply_printed(
            printed, f"podman and CRI-O (without the fallback to {self.wire_host})", root).items()
            if path.endswith(".conf"))
        self.hosts_dir = root / "etc/containerd/certs.d"
        self.mirror_certs = root / f"etc/containers/certs.d/{self.mirror_host}"
        self.direct_hosts = workdir / "direct/certs.d"  # containerd's default: the reference's host, its CA
        (self.direct_hosts / self.wire_host).mkdir(parents=True)
        (self.direct_hosts / self.wire_host / "hosts.toml").write_text(  # 1.6 wants a [host] table
            f'server = "https://{self.wire_host}"\nca = "{self.wire.ca_file}"\n\n[host."https://{self.wire_host}"]\n'
            f'  capabilities = ["pull", "resolve"]\n  ca = "{self.wire.ca_file}"\n')
        self.direct_certs = workdir / "direct/ca"
        self.direct_certs.mkdir(parents=True)
        (self.direct_certs / "ca.crt").write_bytes(Path(self.wire.ca_file).read_bytes())
        self.podman_direct_conf = workdir / "direct/registries.conf"
        self.podman_direct_conf.write_text("")
        self.containerd = Containerd(workdir / "containerd").start()
        self.podman = Podman(workdir / "podman").start()
        self.docker = Dockerd(workdir / "docker", path.netns).start()
        self.docker.trust(self.wire_host, self.wire.ca_file)
        apply_printed(printed, "docker", workdir / "unused", reroot={"/etc/docker": self.docker.etc_docker})

    def pull(self, client: str, mode: str, name: str) -> float:
        direct = mode == "direct"
        started = time.monotonic()
        if client == "docker":
            self.docker.pull(f"{self.wire_host if direct else self.mirror_host}/{name}:1.0")
        elif client == "containerd":
            self.containerd.pull(f"{self.wire_host}/{name}:1.0", self.direct_hosts if direct else self.hosts_dir)
        else:
            self.podman.pull(f"{self.wire_host}/{name}:1.0", self.podman_direct_conf if direct else self.podman_conf,
                             self.direct_certs if direct else self.mirror_certs)
        return time.monotonic() - started

    def cold_pulls_counted(self) -> int:
        """Tags the mirror fetched from the upstream: one per cold pull that went through it."""
        url = self.mirror.cfg.rewriter.listen.local_url("/_mirror/stats.json")
        with urllib.request.urlopen(url, timeout=30) as resp:
            served = json.load(resp)["served"]
        return served.get("manifest-by-tag", {}).get("miss", {}).get("requests", 0)

    def forget(self, client: str) -> None:
        {"docker": self.docker, "containerd": self.containerd, "podman": self.podman}[client].remove_all()

    def stop(self) -> None:
        for part in (self.docker, self.podman, self.containerd, self.mirror, self.wire, self.upstream):
            part.stop()


def run(args) -> int:
    rounds, mb = (1, args.size_mb) if args.quick else (args.rounds, args.size_mb)
    path = MtuPath(netns="ambclients").up()
    workdir = Path(tempfile.mkdtemp(prefix="bench-clients-"))
    samples = {(c, m): [] for c in CLIENTS for m in MODES}
    bed = None
    try:
        bed = Bed(workdir, path)
        images = {}
        for r in range(rounds):
            for i, client in enumerate(CLIENTS):
                for kind in ("direct", "cold"):
                    im = image(f"bench/{client}-{kind}-{r}", 1000 + 100 * r + 10 * i + (5 if kind == "cold" else 0), mb)
                    seed.push(bed.upstream.registry_url, im)
                    images[client, kind, r] = im
        for r in range(rounds):
            order = CLIENTS[r % len(CLIENTS):] + CLIENTS[:r % len(CLIENTS)]
            for client in order:
                for mode in (("direct", "cold", "warm") if r % 2 == 0 else ("cold", "warm", "direct")):
                    name = images[client, "cold" if mode == "warm" else mode, r].name
                    bed.forget(client)
                    subprocess.run(["sync"], check=True)
                    seconds = bed.pull(client, mode, name)
                    samples[client, mode].append(seconds)
                    print(f"round {r + 1} {client:10} {mode:6} {seconds:6.2f} s", flush=True)
        counted = bed.cold_pulls_counted()
        if counted != rounds * len(CLIENTS):  # a pull that bypassed the mirror would not be here
            raise SystemExit(f"bench-clients: the mirror counted {counted} cold pulls, not {rounds * len(CLIENTS)}")
    finally:
        if bed:
            bed.stop()
        path.down()
    report(samples, mb, rounds)
    return 0


def report(samples: dict, mb: int, rounds: int) -> None:
    lines = [f"| client | {' | '.join(MODES)} | cold / direct |", "|---|" + "---|" * (len(MODES) + 1)]
    for client in CLIENTS:
        medians = {m: statistics.median(samples[client, m]) for m in MODES}
        cells = [f"{medians[m]:.2f} s ({', '.join(f'{s:.2f}' for s in samples[client, m])})" for m in MODES]
        lines.append(f"| {client} | {' | '.join(cells)} | {medians['cold'] / medians['direct']:.2f}x |")
    table = "\n".join(lines)
    print(table)
    results = ROOT / "bench" / "results" / "clients.md"
    results.write_text(f"# Client pulls through the mirror (loopback veth, TLS everywhere)\n\nMeasured "
                       f"{time.strftime('%Y-%m-%d')} with `./run.sh bench-clients` ({rounds} rounds, a {mb} MB "
                       f"image of two gzip'd tar layers; medians, every sample in brackets; wall time of the "
                       f"client's pull command, unpacking included).\n\n{table}\n")
    print(f"bench-clients: saved {results}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="run.sh bench-clients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=64, help="the image's size (default 64)")
    parser.add_argument("--quick", action="store_true", help="one round")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
