"""`./run.sh bench-load`: many clients at once through the mirror, with the upstream steady, flapping, down.

Bounded in rounds and time. Loopback: an Artifactory-compatible upstream (token flow), the mirror, and N
concurrent skopeo clients pulling a mix of images that share a base layer. Rounds: cold, warm, and cold
again with the upstream flapping (503 for 1 s out of every 3). Then the outage check: pulls of a cached image
by tag and by digest with the upstream up, refused and hung. Prints and saves `bench/results/load.md`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from devtools import seed
from devtools.demo import peak_rss_mb
from devtools.ports import free_port
from devtools.skopeo import PullError, pull
from devtools.upstream_harness import UpstreamHarness, wait_until_quiet
from registry_mirror import certs
from registry_mirror.config import load
from registry_mirror.stats import percentile
from registry_mirror.supervisor import Mirror

ROOT = Path(__file__).resolve().parents[1]


def make_images(cache: Path, count: int, tag: str, seed_base: int) -> list[seed.Image]:
    base = seed.random_layer(cache, 8 * seed.MIB, 900)  # shared by every image, as a JDK base would be
    return [seed.build_image(f"svc/app{i}", tag, [base, seed.random_layer(cache, (1 + i % 4) * seed.MIB,
                                                                          seed_base + i)])
            for i in range(count)]


def run_round(label: str, mirror_addr: str, images: list[seed.Image], clients: int, workdir: Path,
              trust: Path, timeout: float) -> dict:
    def one(i: int) -> tuple[float, str]:
        image = images[i % len(images)]
        started = time.monotonic()
        try:
            pull(f"{mirror_addr}/{image.name}:{image.tag}", workdir / f"{label}-{i}", cert_dir=trust,
                 timeout=timeout)
            return time.monotonic() - started, ""
        except PullError as e:
            return time.monotonic() - started, str(e)[-300:]
        finally:
            shutil.rmtree(workdir / f"{label}-{i}", ignore_errors=True)
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients)))
    times = sorted(t for t, err in results if not err)
    errors = [err for _, err in results if err]

    def pct(p: float) -> float:
        value = percentile(times, p)
        return float("nan") if value is None else round(value, 2)
    return {"round": label, "clients": clients, "errors": len(errors), "p50_s": pct(0.5),
            "p99_s": pct(0.99), "wall_s": round(time.monotonic() - started, 2),
            "first_error": errors[0] if errors else ""}


class Flapper(threading.Thread):
    """Makes the upstream answer 503 for `down` seconds out of every `period`."""

    def __init__(self, upstream: UpstreamHarness, down: float = 1.0, period: float = 3.0):
        super().__init__(daemon=True)
        self.upstream, self.down, self.period = upstream, down, period
        self.stopping = threading.Event()
        self.flaps = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            self.upstream.fault(mode="status", code=503)
            self.flaps += 1
            self.stopping.wait(self.down)
            self.upstream.fault()
            self.stopping.wait(self.period - self.down)

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.upstream.fault()


def outage_check(mirror_addr: str, image: seed.Image, upstream: UpstreamHarness, workdir: Path, trust: Path,
                 repeats: int) -> list[dict]:
    rows = []

    def median_pull(ref: str) -> float:
        times = sorted(pull(ref, workdir / "outage", cert_dir=trust, timeout=120) for _ in range(repeats))
        return times[len(times) // 2]
    for condition in ("up", "hung", "refused"):
        if condition == "hung":
            upstream.fault(mode="hang")
        elif condition == "refused":
            upstream.stop()
        time.sleep(1.2)  # past the tag TTL of this run
        rows.append({"upstream": condition,
                     "by_tag_s": round(median_pull(f"{mirror_addr}/{image.name}:{image.tag}"), 2),
                     "by_digest_s": round(median_pull(f"{mirror_addr}/{image.name}@{image.manifest_digest}"), 2)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="run.sh bench-load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=300, help="seconds a single pull may take")
    parser.add_argument("--workdir", default=str(ROOT / "data" / "bench-load"))
    parser.add_argument("--layer-cache", default=str(ROOT / "data" / "layers"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    cache = Path(args.layer_cache)
    upstream = UpstreamHarness(workdir / "upstream")
    mirror = None
    try:
        upstream.start()
        steady = make_images(cache, args.images, "1.0", 910)
        flapping = make_images(cache, args.images, "2.0", 930)
        for image in steady + flapping:
            seed.push(upstream.registry_url, image)
        cfg_path = workdir / "mirror.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "upstream": {"url": upstream.url, "repository": "docker-local", "username": upstream.username,
                         "password": upstream.password, "request_timeout": 5, "connect_timeout": 2},
            "mirror": {"listen": f"127.0.0.1:{free_port()}", "storage": str(workdir / "storage"),
                       "tls_cert": str(workdir / "certs/mirror.crt"), "tls_key": str(workdir / "certs/mirror.key")},
            "rewriter": {"listen": f"127.0.0.1:{free_port()}"},
            "cache": {"tag_ttl": 1, "spool_dir": str(workdir / "spool")}}))
        cfg_path.chmod(0o600)
        cfg = load(cfg_path)
        certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key)
        trust = certs.write_trust_folder(cfg.mirror.tls_cert, cfg.mirror.tls_cert)
        mirror = Mirror(cfg, workdir / "mirror-logs")
        mirror.start()
        addr = str(cfg.mirror.listen)
        rounds = [run_round("cold", addr, steady, args.clients, workdir, trust, args.timeout)]
        print(f"load: {rounds[-1]}", flush=True)
        wait_until_quiet(upstream)
        rounds.append(run_round("warm", addr, steady, args.clients, workdir, trust, args.timeout))
        print(f"load: {rounds[-1]}", flush=True)
        flapper = Flapper(upstream)
        flapper.start()
        try:
            rounds.append(run_round("cold, upstream flapping", addr, flapping, args.clients, workdir, trust,
                                    args.timeout))
        finally:
            flapper.stop()
        rounds[-1]["flaps"] = flapper.flaps
        print(f"load: {rounds[-1]}", flush=True)
        peak = peak_rss_mb(mirror.mitm.pid)
        outage = outage_check(addr, steady[0], upstream, workdir, trust, repeats=5)
        report(rounds, outage, peak, args)
        return 0 if all(r["errors"] == 0 for r in rounds) else 1
    finally:
        if mirror:
            mirror.stop()
        upstream.stop()


def report(rounds: list[dict], outage: list[dict], peak: float, args) -> None:
    lines = [f"# {args.clients} concurrent clients, {args.images} images sharing an 8 MiB base layer (loopback)", "",
             f"Measured {time.strftime('%Y-%m-%d')} with `./run.sh bench-load --clients {args.clients}` on a "
             f"2-core machine; skopeo clients, no client retries.", "",
             "| round | clients | errors | p50 pull | p99 pull | wall |", "|---|---|---|---|---|---|"]
    for r in rounds:
        lines.append(f"| {r['round']} | {r['clients']} | {r['errors']} | {r['p50_s']:.2f} s | {r['p99_s']:.2f} s | "
                     f"{r['wall_s']:.2f} s |")
    lines += ["", f"The addon's peak memory over the three rounds: {peak:.0f} MB (VmHWM).", "",
              "Pulls of a cached image (median of 5; tag TTL 1 s, so every pull by tag asks the upstream):", "",
              "| upstream | by tag | by digest |", "|---|---|---|"]
    lines += [f"| {o['upstream']} | {o['by_tag_s']:.2f} s | {o['by_digest_s']:.2f} s |" for o in outage]
    errors = [r["first_error"] for r in rounds if r["first_error"]]
    if errors:
        lines += ["", "First error seen: `" + errors[0].replace("`", "'") + "`"]
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.md").write_text("\n".join(lines) + "\n")
    (out / "load.json").write_text(json.dumps({"rounds": rounds, "outage": outage, "addon_peak_mb": peak}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
