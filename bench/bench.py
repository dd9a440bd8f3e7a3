"""`./run.sh bench`: the seed's scenario over a simulated WAN, three designs, printed and saved.

Topology (root needed): network namespace `amb-up` holds the upstream (a docker-registry behind the
Artifactory-compatible front), `amb-dc` holds a data center (the mirror and the "machines", skopeo),
joined by a veth pair shaped with `tc tbf` (netem is not available here). The driver seeds and reads the
upstream through an unshaped control link, and probes the data center's services from inside it. Bytes
on the WAN are read from the WAN interface's counters. Where namespaces cannot be made, it says so and runs
on loopback, counting bytes at the upstream.

Designs: (a) direct pulls from the upstream, (b) the seed's design (the stock registry + HAProxy with the
seed's rewrite and a fixed Basic header), (c) this mirror, (d) this mirror as two replicas sharing one storage
folder and a redis-server, the machines taking them in turn as a round-robin load balancer would. Each deploys
the 160 + 60 MB image to N machines one after another and all at once, from an empty mirror.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from devtools import seed
from devtools.demo import peak_rss_mb
from devtools.ports import free_port, plain_registry_config
from devtools.redis_server import RedisServer
from devtools.skopeo import pull
from devtools.upstream_harness import UpstreamHarness, wait_until_quiet
from registry_mirror import certs, processes
from registry_mirror.config import load
from registry_mirror.supervisor import Mirror

ROOT = Path(__file__).resolve().parents[1]

UP_NS, DC_NS = "amb-up", "amb-dc"
REPLICAS = "artifactory-mirror, 2 replicas + redis"
WAN_UP, WAN_DC = "10.77.0.1", "10.77.0.2"
CTL_UP = ("10.78.0.1", "10.78.0.2")  # the driver's control link to the upstream: (root side, namespace side)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Network:
    """The two namespaces, the shaped WAN link between them, and the driver's control links."""

    def __init__(self, rate: str):
        self.rate = rate

    def up(self) -> None:
        self.down()
        for ns in (UP_NS, DC_NS):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "wan-up", "netns", UP_NS, "type", "veth", "peer", "name", "wan-dc", "netns", DC_NS)
        sh("ip", "-n", UP_NS, "addr", "add", f"{WAN_UP}/24", "dev", "wan-up")
        sh("ip", "-n", DC_NS, "addr", "add", f"{WAN_DC}/24", "dev", "wan-dc")
        for ns, dev in ((UP_NS, "wan-up"), (DC_NS, "wan-dc")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            # both directions shaped; the queue bound keeps latency sane under load
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", self.rate,
               "burst", "256kb", "latency", "100ms")
        sh("ip", "link", "add", "ctl-up", "type", "veth", "peer", "name", "ctl", "netns", UP_NS)
        sh("ip", "addr", "add", f"{CTL_UP[0]}/24", "dev", "ctl-up")
        sh("ip", "link", "set", "ctl-up", "up")
        sh("ip", "-n", UP_NS, "addr", "add", f"{CTL_UP[1]}/24", "dev", "ctl")
        sh("ip", "-n", UP_NS, "link", "set", "ctl", "up")

    def down(self) -> None:
        for ns in (UP_NS, DC_NS):
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", "ctl-up", check=False)

    @staticmethod
    def wan_bytes() -> int:
        """Bytes sent from the upstream's side of the WAN link toward the data center."""
        out = sh("ip", "-n", UP_NS, "-j", "-s", "link", "show", "dev", "wan-up").stdout
        return json.loads(out)[0]["stats64"]["tx"]["bytes"]


def namespaces_available() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "iproute2 (ip, tc) missing"
    probe = sh("ip", "netns", "add", "amb-probe", check=False)
    sh("ip", "netns", "del", "amb-probe", check=False)
    return None if probe.returncode == 0 else f"ip netns add failed: {probe.stderr.strip()}"


@dataclass
class Site:
    """Where things run and how the driver reaches them."""
    wan: bool
    dc_netns: str | None
    up_url_host: str  # how the data center reaches the upstream

    def bytes_counter(self, upstream: UpstreamHarness):
        if self.wan:
            return Network.wan_bytes
        return lambda: upstream.stats()["body_bytes"]


def start_seed_design(workdir: Path, site: Site, upstream: UpstreamHarness, cert: tuple[str, str]):
    """The seed's design: the stock registry in proxy mode + HAProxy rewriting /v2/ and adding fixed Basic."""
    ha_port, reg_port = free_port(), free_port()
    basic = base64.b64encode(f"{upstream.username}:{upstream.password}".encode()).decode()
    up_host = f"{site.up_url_host}:{upstream.front_port}"
    (workdir / "haproxy.cfg").write_text(f"""global
  maxconn 2000
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend mirror_in
  bind 127.0.0.1:{ha_port}
  default_backend artifactory
backend artifactory
  http-request replace-path ^/v2/(.*) /artifactory/api/docker/docker-local/v2/\\1
  http-request set-header Host {up_host}
  http-request set-header Authorization "Basic {basic}"
  server art {up_host}
""")
    (workdir / "haproxy.cfg").chmod(0o600)
    procs = []
    try:
        procs.append(processes.start(["haproxy", "-f", str(workdir / "haproxy.cfg")], workdir / "haproxy.log",
                                     netns=site.dc_netns))
        # the stock registry panics at start if its remote refuses the connection
        processes.wait_for_port("127.0.0.1", ha_port, procs[0], what="HAProxy", netns=site.dc_netns)
        cfg = plain_registry_config(f"127.0.0.1:{reg_port}", str(workdir / "seed-storage"))
        cfg["proxy"] = {"remoteurl": f"http://127.0.0.1:{ha_port}"}
        cfg["http"]["tls"] = {"certificate": cert[0], "key": cert[1]}
        (workdir / "seed-registry.yml").write_text(yaml.safe_dump(cfg))
        procs.append(processes.start([processes.registry_binary(), "serve", str(workdir / "seed-registry.yml")],
                                     workdir / "seed-registry.log", netns=site.dc_netns))
        processes.wait_for_port("127.0.0.1", reg_port, procs[1], what="seed-design registry", netns=site.dc_netns)
        return procs, f"127.0.0.1:{reg_port}"
    except BaseException:  # nothing it started outlives it
        for proc in procs:
            processes.stop(proc)
        raise


def start_mirror(workdir: Path, site: Site, upstream: UpstreamHarness, cert: tuple[str, str],
                 storage: Path | None = None, scale: dict | None = None, cache: dict | None = None):
    """One mirror; with `storage` and `scale`, one replica of several sharing them."""
    workdir.mkdir(exist_ok=True)
    mirror_port = free_port()
    cfg_path = workdir / "mirror.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "upstream": {"url": f"http://{site.up_url_host}:{upstream.front_port}", "repository": "docker-local",
                     "username": upstream.username, "password": upstream.password},
        "mirror": {"listen": f"127.0.0.1:{mirror_port}", "storage": str(storage or workdir / "mirror-storage"),
                   "tls_cert": cert[0], "tls_key": cert[1]},
        "rewriter": {"listen": f"127.0.0.1:{free_port()}"},
        "cache": {"spool_dir": str(workdir / "spool"), **(cache or {})},
        **({"scale": scale} if scale else {})}))
    cfg_path.chmod(0o600)
    mirror = Mirror(load(cfg_path), workdir / "mirror-logs", netns=site.dc_netns)
    try:
        mirror.start()
    except BaseException:
        mirror.stop()  # whatever of it started
        raise
    return mirror, f"127.0.0.1:{mirror_port}"


def start_replicas(workdir: Path, site: Site, upstream: UpstreamHarness, cert: tuple[str, str], count: int = 2):
    """`count` mirrors sharing one storage folder and a redis-server, all in the data center."""
    redis_server = RedisServer(workdir / "redis", netns=site.dc_netns).start()
    mirrors = []
    try:
        for i in range(count):
            mirrors.append(start_mirror(workdir / f"replica{i}", site, upstream, cert, workdir / "shared-storage",
                                        {"redis": redis_server.address, "listen": "127.0.0.1"})[0])
    except BaseException:
        for mirror in mirrors:
            mirror.stop()
        redis_server.stop()
        raise
    return mirrors, redis_server


def deploy(refs: list[str], machines: int, concurrent: bool, workdir: Path, site: Site, **pull_args) -> list[float]:
    """Machine i pulls refs[i % len(refs)]: several refs are replicas behind one name, taken in turn."""
    def one(i: int) -> float:
        return pull(refs[i % len(refs)], workdir / f"machine{i}", netns=site.dc_netns, **pull_args)
    if concurrent:
        with ThreadPoolExecutor(machines) as pool:
            return list(pool.map(one, range(machines)))
    return [one(i) for i in range(machines)]


def run(args) -> int:
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    why_not = None if args.loopback else namespaces_available()
    wan = why_not is None and not args.loopback
    if not wan:
        print(f"bench: network namespaces unavailable ({why_not or '--loopback'}): running on loopback, "
              f"bytes counted at the upstream")
    net = Network(args.rate)
    if wan:
        net.up()
    site = Site(wan=wan, dc_netns=DC_NS if wan else None, up_url_host=WAN_UP if wan else "127.0.0.1")
    upstream = UpstreamHarness(workdir / "upstream", auth="basic", netns=UP_NS if wan else None,
                               host=WAN_UP if wan else "127.0.0.1", control_host=CTL_UP[1] if wan else "127.0.0.1")
    rows = []
    try:
        upstream.start()
        layers = [seed.random_layer(Path(args.layer_cache), args.base_mb * seed.MIB, 1),
                  seed.random_layer(Path(args.layer_cache), args.app_mb * seed.MIB, 2)]
        image = seed.build_image("team/java-service", "1.0", layers)
        seed.push(upstream.registry_url, image)
        cert = (str(workdir / "certs/mirror.crt"), str(workdir / "certs/mirror.key"))
        certs.ensure_self_signed(*cert)
        trust = certs.write_trust_folder(cert[0], cert[0])
        counter = site.bytes_counter(upstream)
        ref_path = f"{image.name}:{image.tag}"
        print(f"bench: image {image.size / 1e6:.1f} MB, {args.machines} machines, "
              f"{'WAN ' + args.rate + ' (tc tbf)' if wan else 'loopback'}")
        for design in ("direct", "seed design (registry + HAProxy)", "artifactory-mirror", REPLICAS):
            for concurrent in (False, True):
                run_dir = workdir / f"{design.split()[0].strip(',')}{'-replicas' if design == REPLICAS else ''}-" \
                                    f"{'conc' if concurrent else 'seq'}"
                run_dir.mkdir()
                procs, mirrors, redis_server = [], [], None
                try:
                    if design == "direct":
                        ref, pull_args = (f"{site.up_url_host}:{upstream.front_port}/{ref_path}",
                                          {"tls_verify": False, "creds": f"{upstream.username}:{upstream.password}"})
                    elif design.startswith("seed"):
                        procs, addr = start_seed_design(run_dir, site, upstream, cert)
                        ref, pull_args = f"{addr}/{ref_path}", {"cert_dir": trust}
                    elif design == REPLICAS:
                        mirrors, redis_server = start_replicas(run_dir, site, upstream, cert)
                        ref, pull_args = [f"{m.cfg.mirror.listen}/{ref_path}" for m in mirrors], {"cert_dir": trust}
                    else:
                        mirror, addr = start_mirror(run_dir, site, upstream, cert)
                        mirrors, ref, pull_args = [mirror], f"{addr}/{ref_path}", {"cert_dir": trust}
                    wait_until_quiet(upstream, quiet=0.5)
                    before, t0 = counter(), time.monotonic()
                    times = deploy(ref if isinstance(ref, list) else [ref], args.machines, concurrent, run_dir, site,
                                   **pull_args)
                    wall = time.monotonic() - t0
                    wait_until_quiet(upstream, quiet=1.5)  # the stock registry's background fetches
                    wan_bytes = counter() - before
                    peak = max((peak_rss_mb(m.mitm.pid) for m in mirrors), default=None)
                    rows.append({"design": design, "mode": "all at once" if concurrent else "one after another",
                                 "machines": args.machines, "wall_s": round(wall, 2), "times": times,
                                 "first_pull_s": round(times[0], 2), "wan_bytes": wan_bytes,
                                 "wan_x_image": round(wan_bytes / image.size, 3),
                                 "addon_peak_mb": round(peak) if peak else None})
                    print(f"bench: {design:34} {rows[-1]['mode']:18} wall {wall:7.2f} s  "
                          f"WAN {wan_bytes / 1e6:9.1f} MB ({wan_bytes / image.size:5.2f}x)"
                          + (f"  addon peak {peak:.0f} MB" if peak else ""), flush=True)
                finally:
                    for mirror in mirrors:
                        mirror.stop()
                    if redis_server:
                        redis_server.stop()
                    for proc in procs:
                        processes.stop(proc)
        cold = [next(r["times"][0] for r in rows if r["design"] == "artifactory-mirror")]
        cold += [cold_pull(workdir / f"mirror-cold{i}", site, upstream, cert, trust, ref_path)
                 for i in range(1, args.cold_rounds)]
        single = single_pulls(rows, cold, workdir, site, upstream, cert, trust, ref_path, args.machines)
        report(rows, single, image.size, wan, args, results_dir)
        return 0
    finally:
        upstream.stop()
        if wan:
            net.down()


def cold_pull(run_dir: Path, site: Site, upstream: UpstreamHarness, cert: tuple[str, str], trust: Path,
              ref_path: str) -> float:
    """One pull through a new, empty mirror: a further sample of the cold time, which varies run to run."""
    run_dir.mkdir()
    mirror, addr = start_mirror(run_dir, site, upstream, cert)
    try:
        wait_until_quiet(upstream, quiet=0.5)
        seconds = pull(f"{addr}/{ref_path}", run_dir / "machine", netns=site.dc_netns, cert_dir=trust)
        wait_until_quiet(upstream, quiet=1.5)
        print(f"bench: another cold pull through a new mirror: {seconds:.2f} s", flush=True)
        return seconds
    finally:
        mirror.stop()


def single_pulls(rows: list[dict], cold: list[float], workdir: Path, site: Site, upstream: UpstreamHarness,
                 cert: tuple[str, str], trust: Path, ref_path: str, machines: int) -> dict:
    """One machine's pull: direct (every direct pull is cold), cold through new mirrors, and warm through a
    mirror against a plain local registry holding the same image. Warm and local pulls take turns, so both
    meet the same machine (page cache, disk, neighbours): measured in separate stretches, they drifted apart
    by more than the difference under test. Medians, since single pulls vary by several tenths of a second."""
    seq = {r["design"]: r["times"] for r in rows if r["mode"] == "one after another"}
    local_dir = workdir / "local-registry"
    local_dir.mkdir()
    port = free_port()
    cfg = plain_registry_config(f"127.0.0.1:{port}", str(local_dir / "storage"))
    cfg["http"]["tls"] = {"certificate": cert[0], "key": cert[1]}
    (local_dir / "registry.yml").write_text(yaml.safe_dump(cfg))
    reg = processes.start([processes.registry_binary(), "serve", str(local_dir / "registry.yml")],
                          local_dir / "registry.log", netns=site.dc_netns)
    mirror = None
    try:
        processes.wait_for_port("127.0.0.1", port, reg, what="plain local registry", netns=site.dc_netns)
        source = workdir / "artifactory-mirror-seq" / "machine0"
        # the same bytes under the same digests: pushed as they are, not recompressed
        subprocess.run(processes.in_netns(["skopeo", "--insecure-policy", "copy", "--preserve-digests",
                                           "--dest-cert-dir", str(trust), f"dir:{source}",
                                           f"docker://127.0.0.1:{port}/{ref_path}"], site.dc_netns),
                       check=True, capture_output=True)
        # a tag TTL longer than the turns: every warm pull is "within the TTL"
        mirror, addr = start_mirror(workdir / "mirror-warm", site, upstream, cert, cache={"tag_ttl": 3600})
        pull(f"{addr}/{ref_path}", workdir / "mirror-warm" / "first", netns=site.dc_netns, cert_dir=trust)
        wait_until_quiet(upstream, quiet=1.5)
        requests_before = upstream.stats()["request_count"]
        warm, local = [], []
        (workdir / "turns").mkdir()
        # one untimed pull from each first: the mirror's registry may still be writing the cold pull's copy,
        # the local one its push; the turns measure the steady state
        for registry in (addr, f"127.0.0.1:{port}"):
            pull(f"{registry}/{ref_path}", workdir / "turns" / "untimed", netns=site.dc_netns, cert_dir=trust)
        for i in range(machines):  # in turns, each going first every other time
            turn = [(warm, addr), (local, f"127.0.0.1:{port}")]
            for times, registry in (turn if i % 2 == 0 else turn[::-1]):
                times.append(pull(f"{registry}/{ref_path}", workdir / "turns" / f"machine{i}-{len(times)}",
                                  netns=site.dc_netns, cert_dir=trust))
        upstream_requests = upstream.stats()["request_count"] - requests_before
    finally:
        if mirror:
            mirror.stop()
        processes.stop(reg)
    deploy_warm = seq["artifactory-mirror"][1:]
    return {"direct_s": round(statistics.median(seq["direct"]), 2), "mirror_cold_s": round(statistics.median(cold), 2),
            "mirror_cold_samples_s": [round(t, 2) for t in cold],
            "mirror_warm_median_s": round(statistics.median(warm), 2),
            "local_registry_median_s": round(statistics.median(local), 2),
            "warm_pulls_upstream_requests": upstream_requests,
            "mirror_warm_in_deploy_median_s": round(statistics.median(deploy_warm), 2) if deploy_warm else None,
            "seed_cold_s": round(seq["seed design (registry + HAProxy)"][0], 2)}


def report(rows: list[dict], single: dict, image_size: int, wan: bool, args, results_dir: Path) -> None:
    link = f"{args.rate} WAN link (veth + tc tbf, two network namespaces)" if wan else "loopback"
    lines = [f"# Deploying the {image_size / 1e6:.1f} MB image to {args.machines} machines over {link}", "",
             f"Measured {time.strftime('%Y-%m-%d')} with `./run.sh bench{' --loopback' if not wan else ''} "
             f"--rate {args.rate} --machines {args.machines}` on a 2-core machine. WAN bytes: "
             f"{'the WAN interface counters' if wan else 'bytes the upstream sent'}.", "",
             "| design | machines deploy | wall time | first pull | bytes on the WAN | x image | addon peak RSS |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['design']} | {r['mode']} | {r['wall_s']:.2f} s | {r['first_pull_s']:.2f} s | "
                     f"{r['wan_bytes'] / 1e6:,.1f} MB | {r['wan_x_image']:.2f}x | "
                     f"{str(r['addon_peak_mb']) + ' MB' if r['addon_peak_mb'] else '-'} |")
    d, cold, warm, local = (single["direct_s"], single["mirror_cold_s"], single["mirror_warm_median_s"],
                            single["local_registry_median_s"])
    samples = ", ".join(f"{t:.2f}" for t in single["mirror_cold_samples_s"])
    in_deploy = single["mirror_warm_in_deploy_median_s"]
    deploy_warm = f"; the deploy's own warm pulls, 2 to {args.machines}: {in_deploy:.2f}" if in_deploy else ""
    lines += ["", f"One machine's pull, seconds, medians: direct of {args.machines} pulls, mirror cold of "
              f"{len(single['mirror_cold_samples_s'])} new mirrors ({samples}), mirror warm and plain local registry "
              f"of {args.machines} pulls each, taken in turns after one untimed pull each "
              f"({single['warm_pulls_upstream_requests']} upstream "
              f"requests during the warm pulls{deploy_warm}); seed cold: its first pull:", "",
              "| direct | seed design, cold | mirror, cold | mirror cold / direct | mirror, warm (tag cached) | "
              "plain local registry | mirror warm / local |", "|---|---|---|---|---|---|---|",
              f"| {d:.2f} | {single['seed_cold_s']:.2f} | {cold:.2f} | {cold / d:.2f}x | {warm:.2f} | {local:.2f} | "
              f"{warm / local:.2f}x |"]
    name = "wan" if wan else "loopback"
    (results_dir / f"{name}.md").write_text("\n".join(lines) + "\n")
    for r in rows:
        r["times"] = [round(t, 3) for t in r["times"]]
    (results_dir / f"{name}.json").write_text(json.dumps({"runs": rows, "single_pull": single}, indent=1) + "\n")
    print("\n".join(lines))
    chart(rows, results_dir / f"{name}.png", link)


def chart(rows: list[dict], path: Path, link: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib missing, no chart (./run.sh bench installs it)")
        return
    designs = list(dict.fromkeys(r["design"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.38
    for ax, key, title in ((axes[0], "wan_x_image", "bytes on the WAN (x image size)"),
                           (axes[1], "wall_s", "wall time of the whole deploy (s)")):
        for j, mode in enumerate(modes):
            values = [next(r[key] for r in rows if r["design"] == d and r["mode"] == mode) for d in designs]
            bars = ax.bar([i + (j - 0.5) * width for i in range(len(designs))], values, width, label=mode)
            ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(designs)), [d.replace(" (", "\n(") for d in designs], fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{rows[0]['machines']} machines pull the seed's 220 MB image over {link}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"bench: chart {path}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="run.sh bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", default="200mbit", help="WAN rate for tc tbf (default 200mbit)")
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--base-mb", type=int, default=160)
    parser.add_argument("--app-mb", type=int, default=60)
    parser.add_argument("--cold-rounds", type=int, default=3, help="cold pulls through new mirrors (median)")
    parser.add_argument("--loopback", action="store_true", help="skip namespaces: loopback, upstream byte counts")
    parser.add_argument("--workdir", default=str(ROOT / "data" / "bench"))
    parser.add_argument("--layer-cache", default=str(ROOT / "data" / "layers"))
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
