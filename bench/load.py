"""`./run.sh bench-load`: many clients at once through the mirror, with the upstream steady, flapping, down.

Bounded in rounds and time. Loopback: an Artifactory-compatible upstream (token flow), the mirror, and N
concurrent skopeo clients pulling a mix of images that share a base layer. Rounds: cold, warm, and cold
again with the upstream flapping (503 for 1 s out of every 3). Then the outage check: pulls of a cached image
by tag and by digest with the upstream up, refused and hung.

Then "distinct cold layers over a slow upstream" (`--only distinct` runs just that): a fresh upstream holding
200 distinct blobs (256 KiB to 1 MiB) behind a relay that paces every upstream connection to 128 KiB/s, so
the transfers are held open together; a fresh mirror with its default timeouts; 200 concurrent GETs of the 200
blobs through the registry, and one cold manifest GET of another image once the first blob bytes have come.
Per blob: status, bytes against the size, sha256; truncations (200 with fewer bytes or a digest mismatch),
errors, the route's state, the addon's peak RSS and open descriptors.

Prints and saves `bench/results/load.md` and `load.json` (`--only` replaces its own part of them).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import ssl
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import yaml

from bench.code_state import code_state
from devtools import seed
from devtools.demo import peak_rss_mb
from devtools.ports import free_port
from devtools.skopeo import PullError, pull
from devtools.upstream_harness import UpstreamHarness, wait_until_quiet
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load
from registry_mirror.stats.counters import percentile
from registry_mirror.stats.views import JSON_PATH
from registry_mirror.tls import certs

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


KIB = 1024
DISTINCT_HEADING = "## Distinct cold layers over a slow upstream"
RESULTS = ROOT / "bench" / "results"


# --- the relay that makes the upstream slow: every connection's answers paced to `rate` bytes/s ----------------

OPEN, PEAK_OPEN, CONNECTIONS, BYTES_DOWN, DROPPED = range(5)
DROP_AFTER = 64 * KIB  # a dropped connection carries this many bytes of answers first


def _relay_process(listen_port: int, target_port: int, rate: int, drop_every: int, counters, ready) -> None:
    asyncio.run(_relay(listen_port, target_port, rate, drop_every, counters, ready))


async def _relay(listen_port: int, target_port: int, rate: int, drop_every: int, counters, ready) -> None:
    """A TCP relay on 127.0.0.1:`listen_port` to `target_port`: requests pass at once, each connection's answers
    at `rate` bytes/s at most (a slow WAN per connection, as a far Artifactory is). With `drop_every` N, every
    Nth connection is reset after DROP_AFTER bytes of answers (mid-body, for the mirror's resumes). Runs until
    killed."""
    chunk = max(1024, min(16 * KIB, rate // 8))

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, paced: bool,
                   drop: bool = False) -> None:
        sent = 0
        while data := await reader.read(chunk if paced else 64 * KIB):
            if drop and sent + len(data) > DROP_AFTER:
                counters[DROPPED] += 1
                return  # the caller aborts both sides: a reset, not a clean close
            writer.write(data)
            await writer.drain()
            if paced:
                sent += len(data)
                counters[BYTES_DOWN] += len(data)
                await asyncio.sleep(len(data) / rate)

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        counters[OPEN] += 1
        counters[CONNECTIONS] += 1
        counters[PEAK_OPEN] = max(counters[PEAK_OPEN], counters[OPEN])
        drop = bool(drop_every) and counters[CONNECTIONS] % drop_every == 0
        tasks = [asyncio.create_task(pump(client_reader, up_writer, False)),
                 asyncio.create_task(pump(up_reader, client_writer, True, drop))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # a reset on either side ends both
            counters[OPEN] -= 1
            for w in (client_writer, up_writer):
                if drop:
                    w.transport.abort()
                else:
                    w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, backlog=1024)
    ready.set()
    async with server:
        await server.serve_forever()


class SlowLink:
    """The relay in a process of its own: its pacing never waits on this process's clients."""

    def __init__(self, rate: int, drop_every: int = 0):
        self.port, self.rate, self.drop_every = free_port(), rate, drop_every  # the port: the token realm names it
        self._mp = multiprocessing.get_context("spawn")
        self.counters = self._mp.RawArray("q", 5)
        self._ready = self._mp.Event()
        self.proc = None

    def start(self, target_port: int) -> "SlowLink":
        self.proc = self._mp.Process(target=_relay_process, daemon=True,
                                     args=(self.port, target_port, self.rate, self.drop_every, self.counters,
                                           self._ready))
        self.proc.start()
        if not self._ready.wait(30):
            raise RuntimeError("the slow relay did not start")
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.pid is None:  # never started
            return
        if self.proc.is_alive():
            self.proc.terminate()  # this relay's own process, by its handle
        self.proc.join(10)

    def stats(self) -> dict:
        return {"open": self.counters[OPEN], "peak_open": self.counters[PEAK_OPEN],
                "connections": self.counters[CONNECTIONS], "bytes_down": self.counters[BYTES_DOWN],
                "dropped": self.counters[DROPPED], "drop_every": self.drop_every}


# --- samplers -----------------------------------------------------------------------------------------------------

class ProcSampler(threading.Thread):
    """Samples processes' resident memory and open descriptors from /proc every `interval` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.stopping = threading.Event()
        self.peak_rss_kb = dict.fromkeys(pids, 0)
        self.peak_fds = dict.fromkeys(pids, 0)
        self.samples = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            for name, pid in self.pids.items():
                try:
                    fds = len(os.listdir(f"/proc/{pid}/fd"))
                    rss = _status_kb(pid, "VmRSS:")
                except OSError:
                    continue  # it exited
                self.peak_fds[name] = max(self.peak_fds[name], fds)
                self.peak_rss_kb[name] = max(self.peak_rss_kb[name], rss)
            self.samples += 1
            self.stopping.wait(self.interval)

    def stop(self) -> dict:
        self.stopping.set()
        self.join()
        out = {}
        for name, pid in self.pids.items():
            try:
                hwm = _status_kb(pid, "VmHWM:")
            except OSError:
                hwm = 0
            out[name] = {"peak_rss_mb": round(max(hwm, self.peak_rss_kb[name]) / 1024, 1),
                         "peak_fds": self.peak_fds[name], "max_open_files": _max_open_files(pid)}
        return out


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _max_open_files(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return "/".join(line.split()[3:5])  # soft/hard
    except OSError:
        pass
    return "?"


def raise_nofile_limit() -> tuple[int, int]:
    """This process's RLIMIT_NOFILE soft limit up to its hard limit (200 client connections and more); the mirror's
    processes, started from here, inherit it. Returns (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            print(f"load: could not raise RLIMIT_NOFILE ({soft}/{hard}): {e}", file=sys.stderr)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --- the scenario: distinct cold layers over a slow upstream ------------------------------------------------------

def distinct_blobs(cache: Path, count: int, smallest: int, largest: int) -> list[seed.Blob]:
    sizes = random.Random(2200).choices(range(smallest, largest + 1), k=count)
    return [seed.random_layer(cache, size, 5000 + i) for i, size in enumerate(sizes)]


async def _fetch_blob(session: aiohttp.ClientSession, url: str, blob: seed.Blob, t0: float, bound: float,
                      first_bytes: asyncio.Event) -> dict:
    rec = {"digest": blob.digest, "size": blob.size, "status": None, "bytes": 0, "sha256_ok": False,
           "first_byte_s": None, "done_s": None, "outcome": "", "error": ""}
    h = hashlib.sha256()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=bound)) as resp:
            rec["status"] = resp.status
            if resp.status != 200:
                rec["error"] = (await resp.content.read(300)).decode(errors="replace").strip()
            else:
                async for data in resp.content.iter_any():
                    if rec["first_byte_s"] is None:
                        rec["first_byte_s"] = round(time.monotonic() - t0, 3)
                        first_bytes.set()
                    h.update(data)
                    rec["bytes"] += len(data)
    except TimeoutError:
        rec["error"] = f"no whole answer within the client's {bound:.0f} s"
        rec["outcome"] = "stalled"
    except (aiohttp.ClientError, OSError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"[:300]
    rec["done_s"] = round(time.monotonic() - t0, 3)
    rec["sha256_ok"] = rec["status"] == 200 and "sha256:" + h.hexdigest() == blob.digest
    if not rec["outcome"]:
        if rec["status"] == 200 and rec["sha256_ok"] and rec["bytes"] == blob.size:
            rec["outcome"] = "ok"
        elif rec["status"] == 200:  # short, or the right length with wrong bytes
            rec["outcome"] = "truncated"
        else:
            rec["outcome"] = "error"
    elif rec["status"] == 200 and rec["bytes"] < blob.size:
        rec["error"] += f" (200, {rec['bytes']} of {blob.size} bytes by then)"
    return rec


async def _fetch_manifest(session: aiohttp.ClientSession, url: str, t0: float, bound: float,
                          first_bytes: asyncio.Event) -> dict:
    try:
        await asyncio.wait_for(first_bytes.wait(), min(bound, 30))
    except TimeoutError:
        pass  # no blob byte came at all: ask anyway
    asked = time.monotonic()
    rec = {"asked_at_s": round(asked - t0, 3), "status": None, "time_s": None, "error": ""}
    accept = ", ".join((seed.MANIFEST_TYPE, seed.INDEX_TYPE, "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"))
    try:
        async with session.get(url, headers={"Accept": accept},
                               timeout=aiohttp.ClientTimeout(total=bound)) as resp:
            body = await resp.read()
            rec["status"] = resp.status
            if resp.status != 200:
                rec["error"] = body[:300].decode(errors="replace").strip()
    except TimeoutError:
        rec["error"] = f"no answer within {bound:.0f} s"
    except (aiohttp.ClientError, OSError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"[:300]
    rec["time_s"] = round(time.monotonic() - asked, 3)
    return rec


async def _watch_routes(session: aiohttp.ClientSession, url: str, done: asyncio.Event, seen: dict) -> None:
    """Polls the mirror's stats while the clients run: whether a route was ever down, the most open transfers."""
    while not done.is_set():
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                snap = await resp.json()
            for r in snap.get("routes", []):
                if r["state"] == "down" and r["route"] not in seen["down_routes"]:
                    seen["down_routes"][r["route"]] = {"at_s": round(time.monotonic() - seen["t0"], 2),
                                                       "last_error": r["last_error"]}
                seen["max_consecutive_failures"] = max(seen["max_consecutive_failures"], r["consecutive_failures"])
            seen["peak_open_transfers"] = max(seen["peak_open_transfers"], len(snap.get("transfers", [])))
            seen["polls"] += 1
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            seen["failed_polls"] += 1
        try:
            await asyncio.wait_for(done.wait(), 0.25)
        except TimeoutError:
            pass


async def _distinct_clients(mirror_addr: str, stats_url: str, name: str, blobs: list[seed.Blob], probe: seed.Image,
                            ca_file: str, bound: float) -> dict:
    ctx = ssl.create_default_context(cafile=ca_file)
    t0 = time.monotonic()
    first_bytes, done = asyncio.Event(), asyncio.Event()
    seen = {"t0": t0, "down_routes": {}, "max_consecutive_failures": 0, "peak_open_transfers": 0, "polls": 0,
            "failed_polls": 0}
    # one connection per request, no pool limit: 200 clients, as 200 machines would be
    connector = aiohttp.TCPConnector(ssl=ctx, limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session, \
            aiohttp.ClientSession() as control:
        watcher = asyncio.create_task(_watch_routes(control, stats_url, done, seen))
        blob_tasks = [asyncio.create_task(_fetch_blob(session, f"https://{mirror_addr}/v2/{name}/blobs/{b.digest}",
                                                      b, t0, bound, first_bytes)) for b in blobs]
        manifest_task = asyncio.create_task(_fetch_manifest(
            session, f"https://{mirror_addr}/v2/{probe.name}/manifests/{probe.tag}", t0, bound, first_bytes))
        try:
            async with asyncio.timeout(bound + 30):  # the overall bound, beyond each request's own
                records = await asyncio.gather(*blob_tasks)
                manifest = await manifest_task
        finally:
            wall = time.monotonic() - t0
            done.set()
            await watcher
    seen.pop("t0")
    return {"records": records, "manifest": manifest, "wall_s": round(wall, 2), "watched": seen}


def run_distinct(args, cache: Path) -> dict:
    workdir = Path(args.workdir) / "distinct"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    rate = args.distinct_rate_kib * KIB
    upstream = UpstreamHarness(workdir / "upstream")
    link = SlowLink(rate, args.distinct_drop_every)  # the front's token realm points through it too
    upstream.realm = f"http://127.0.0.1:{link.port}/artifactory/api/docker/{upstream.repository}/v2/token"
    mirror = None
    try:
        upstream.start()
        link.start(upstream.front_port)
        blobs = distinct_blobs(cache, args.distinct_blobs, args.distinct_min_kib * KIB, args.distinct_max_kib * KIB)
        name = "bench/distinct"
        seed.push(upstream.registry_url, seed.build_image(name, "1.0", blobs))  # 200 layers in one manifest
        probe = seed.build_image("bench/cold-probe", "1.0", [seed.random_layer(cache, 64 * KIB, 5999)])
        seed.push(upstream.registry_url, probe)
        cfg_path = workdir / "mirror.yaml"
        cfg_path.write_text(yaml.safe_dump({  # the mirror's default timeouts, limits and routes
            "upstream": {"url": f"http://127.0.0.1:{link.port}", "repository": upstream.repository,
                         "username": upstream.username, "password": upstream.password},
            "mirror": {"listen": f"127.0.0.1:{free_port()}", "storage": str(workdir / "storage"),
                       "tls_cert": str(workdir / "certs/mirror.crt"), "tls_key": str(workdir / "certs/mirror.key")},
            "rewriter": {"listen": f"127.0.0.1:{free_port()}"},
            "cache": {"spool_dir": str(workdir / "spool")}}))
        cfg_path.chmod(0o600)
        cfg = load(cfg_path)
        certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key)
        mirror = Supervisor(cfg, workdir / "mirror-logs")
        mirror.start()
        stats_url = cfg.rewriter.listen.local_url(JSON_PATH)
        sampler = ProcSampler({"addon": mirror.mitm.pid, "registry": mirror.registry.pid})
        sampler.start()
        print(f"load: distinct: {len(blobs)} blobs ({sum(b.size for b in blobs) / seed.MIB:.1f} MiB) at once, the "
              f"upstream paced to {args.distinct_rate_kib} KiB/s per connection", flush=True)
        try:
            run = asyncio.run(_distinct_clients(str(cfg.mirror.listen), stats_url, name, blobs, probe,
                                                cfg.mirror.tls_cert, args.distinct_timeout))
        finally:
            procs = sampler.stop()
        with urllib.request.urlopen(stats_url, timeout=30) as resp:
            snap = json.load(resp)
        log = (workdir / "mirror-logs" / "mitmproxy.log").read_text(errors="replace")
        # upstream/health.py's words
        declared = {"down": log.count("assumed down for"), "back": log.count("upstream is back")}
        return summarize_distinct(run, snap, procs, link.stats(), declared, blobs, args)
    finally:  # each stopped even if stopping another raised: nothing of this run outlives it
        try:
            if mirror:
                mirror.stop()
        finally:
            try:
                link.stop()
            finally:
                upstream.stop()


def summarize_distinct(run: dict, snap: dict, procs: dict, link: dict, declared: dict, blobs: list[seed.Blob],
                       args) -> dict:
    records = run["records"]
    outcomes = {k: sum(r["outcome"] == k for r in records) for k in ("ok", "truncated", "error", "stalled")}
    ok_times = sorted(r["done_s"] for r in records if r["outcome"] == "ok")
    all_times = sorted(r["done_s"] for r in records)

    def pct(values: list[float], p: float) -> float | None:
        value = percentile(values, p)
        return None if value is None else round(value, 2)
    truncated = [r for r in records if r["outcome"] == "truncated"]
    failed = [r for r in records if r["outcome"] in ("error", "stalled")]
    return {
        "measured": time.strftime("%Y-%m-%d %H:%M"), "code": args.code_label or code_state(),
        "command": " ".join(["./run.sh bench-load", *sys.argv[1:]]),
        "blobs": len(blobs), "blob_bytes": sum(b.size for b in blobs),
        "blob_size_kib": [args.distinct_min_kib, args.distinct_max_kib], "rate_kib_s": args.distinct_rate_kib,
        "client_timeout_s": args.distinct_timeout, **outcomes,
        "short": sum(r["bytes"] < r["size"] for r in truncated),
        "digest_mismatch_full_length": sum(r["bytes"] == r["size"] for r in truncated),
        "bytes_received": sum(r["bytes"] for r in records),
        "statuses": {str(s): sum(r["status"] == s for r in records) for s in sorted({r["status"] for r in records},
                                                                                      key=str)},
        "p50_ok_s": pct(ok_times, 0.5), "p99_ok_s": pct(ok_times, 0.99),
        "p50_all_s": pct(all_times, 0.5), "p99_all_s": pct(all_times, 0.99), "wall_s": run["wall_s"],
        "first_byte_p50_s": pct(sorted(r["first_byte_s"] for r in records if r["first_byte_s"] is not None), 0.5),
        "manifest": run["manifest"],
        "routes_end": [{k: r[k] for k in ("route", "state", "consecutive_failures", "last_error")}
                       for r in snap.get("routes", [])],
        "upstream_end": {k: snap["upstream"][k] for k in ("state", "consecutive_failures", "last_error")},
        "watched": run["watched"], "declared_in_log": declared, "integrity": snap.get("integrity", {}),
        "upstream_requests": snap["upstream"].get("requests", {}),
        "processes": procs, "bench_nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "upstream_connections": link,
        "first_truncated": truncated[0] if truncated else None, "first_failed": failed[0] if failed else None,
        "per_blob": records,
    }


def distinct_lines(d: dict) -> list[str]:
    route_end = ", ".join(f"{r['route']} {r['state']}" for r in d["routes_end"]) or "?"
    downs = d["watched"]["down_routes"]
    down_seen = ", ".join(f"{k} at {v['at_s']:.1f} s" for k, v in downs.items()) or "not seen"
    declared = d["declared_in_log"]
    down_seen += f" (the addon's log: declared down {declared['down']} times, back {declared['back']})"
    m = d["manifest"]
    manifest = (f"{m['status']} in {m['time_s']:.2f} s" if m["status"] is not None else
                f"no answer ({m['error']}) after {m['time_s']:.2f} s")
    fmt = lambda v: "-" if v is None else f"{v:.2f} s"  # noqa: E731
    addon, registry = d["processes"]["addon"], d["processes"]["registry"]
    link = d["upstream_connections"]
    drops = (f", and resets every {link['drop_every']}th connection after {DROP_AFTER // KIB} KiB of answers "
             f"({link['dropped']} resets)" if link["drop_every"] else "")
    lines = [f"{DISTINCT_HEADING}: {d['blobs']} at once", "",
             f"Measured {d['measured']} with `{d['command']}` on a {os.cpu_count()}-core machine, "
             f"the code at {d['code']}. One repository holding {d['blobs']} distinct blobs of random bytes "
             f"({d['blob_size_kib'][0]} KiB to {d['blob_size_kib'][1]} KiB, {d['blob_bytes'] / seed.MIB:.1f} MiB "
             f"in all); a relay between the mirror and the upstream paces each connection's answers to "
             f"{d['rate_kib_s']} KiB/s{drops}; the mirror with its default timeouts and limits. {d['blobs']} "
             f"concurrent GETs of `/v2/<name>/blobs/<digest>` through the registry (aiohttp, one connection each, "
             f"{d['client_timeout_s']:.0f} s bound), and one cold manifest GET of another image asked "
             f"{m['asked_at_s']:.2f} s in, once the first blob bytes had come.", "",
             "| blobs | ok | truncated (200, short or wrong sha256) | errors | stalled | statuses | p50 / p99 done, ok "
             "| p50 / p99 done, all | wall |", "|---|---|---|---|---|---|---|---|---|",
             f"| {d['blobs']} | {d['ok']} | {d['truncated']} ({d['short']} short, {d['digest_mismatch_full_length']} "
             f"wrong bytes at full length) | {d['error']} | {d['stalled']} | "
             + ", ".join(f"{k}: {v}" for k, v in d["statuses"].items())
             + f" | {fmt(d['p50_ok_s'])} / {fmt(d['p99_ok_s'])} | {fmt(d['p50_all_s'])} / {fmt(d['p99_all_s'])} "
               f"| {d['wall_s']:.2f} s |", "",
             "| cold manifest | routes at the end | a route down during the run (stats polled every 0.25 s) "
             "| addon peak RSS | addon peak fds "
             "| registry peak fds | upstream connections, peak |", "|---|---|---|---|---|---|---|",
             f"| {manifest} | {route_end} | {down_seen} | {addon['peak_rss_mb']:.0f} MB | {addon['peak_fds']} "
             f"| {registry['peak_fds']} | {d['upstream_connections']['peak_open']} |", "",
             f"Received {d['bytes_received'] / seed.MIB:.1f} of {d['blob_bytes'] / seed.MIB:.1f} MiB; the mirror's "
             f"integrity counters: {json.dumps(d['integrity'])}; most consecutive failures seen on a route: "
             f"{d['watched']['max_consecutive_failures']}; most open transfers seen: "
             f"{d['watched']['peak_open_transfers']}. Open-file limits (soft/hard): addon "
             f"{addon['max_open_files']}, registry {registry['max_open_files']}, this bench "
             f"{d['bench_nofile'][0]}/{d['bench_nofile'][1]}."]
    for r in d["routes_end"]:
        if r["last_error"]:
            lines += ["", f"Route {r['route']}'s last error: `" + r["last_error"].replace("`", "'")[:300] + "`"]
    for label, key in (("First truncated blob", "first_truncated"), ("First failed blob", "first_failed")):
        if d[key]:
            r = d[key]
            lines += ["", f"{label}: status {r['status']}, {r['bytes']} of {r['size']} bytes, done at "
                      f"{r['done_s']:.2f} s" + (f": `{r['error'].replace('`', chr(39))[:300]}`" if r["error"] else "")]
    if m["error"]:
        lines += ["", "The cold manifest's answer: `" + m["error"].replace("`", "'")[:300] + "`"]
    return lines


def run_rounds(args, cache: Path) -> dict:
    workdir = Path(args.workdir)
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
        mirror = Supervisor(cfg, workdir / "mirror-logs")
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
        return {"rounds": rounds, "outage": outage, "addon_peak_mb": peak}
    finally:
        if mirror:
            mirror.stop()
        upstream.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="run.sh bench-load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("rounds", "distinct"),
                        help="run only the 50-client rounds and the outage check, or only the distinct-layers scenario")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=300, help="seconds a single pull may take")
    parser.add_argument("--distinct-blobs", type=int, default=200, help="distinct blobs fetched at once")
    parser.add_argument("--distinct-rate-kib", type=int, default=128,
                        help="KiB/s each upstream connection's answers are paced to")
    parser.add_argument("--distinct-min-kib", type=int, default=256)
    parser.add_argument("--distinct-max-kib", type=int, default=1024)
    parser.add_argument("--distinct-drop-every", type=int, default=0,
                        help="reset every Nth upstream connection after 64 KiB of answers (0: none, the default)")
    parser.add_argument("--distinct-timeout", type=float, default=120,
                        help="seconds each GET of the distinct scenario may take")
    parser.add_argument("--code-label", default="",
                        help="what the results call the addon code (default: this checkout's commit, or the folder "
                             "`registry_mirror` was imported from, e.g. PYTHONPATH=<snapshot>/addons)")
    parser.add_argument("--workdir", default=str(ROOT / "data" / "bench-load"))
    parser.add_argument("--results", default=str(RESULTS), help="folder of load.md and load.json")
    parser.add_argument("--layer-cache", default=str(ROOT / "data" / "layers"))
    args = parser.parse_args()
    soft, hard = raise_nofile_limit()
    print(f"load: RLIMIT_NOFILE {soft}/{hard}", flush=True)
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    cache = Path(args.layer_cache)
    failed = False
    if args.only != "distinct":
        result = run_rounds(args, cache)
        save(Path(args.results), rounds_lines=report(result["rounds"], result["outage"], result["addon_peak_mb"], args),
             json_part=result)
        failed |= any(r["errors"] for r in result["rounds"])
    if args.only != "rounds":
        d = run_distinct(args, cache)
        lines = distinct_lines(d)
        print("\n".join(lines), flush=True)
        save(Path(args.results), distinct_lines=lines, json_part={"distinct": d})
        failed |= bool(d["truncated"] or d["error"] or d["stalled"] or d["manifest"]["status"] != 200
                       or any(r["state"] != "up" for r in d["routes_end"]))
    return 1 if failed else 0


def report(rounds: list[dict], outage: list[dict], peak: float, args) -> list[str]:
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
    print("\n".join(lines))
    return lines


def save(results: Path, rounds_lines: list[str] | None = None, distinct_lines: list[str] | None = None,
         json_part: dict | None = None) -> None:
    """`load.md`: the rounds' part, then the distinct scenario's section; each run replaces only what it measured
    (the other part stays as the last run that measured it left it). `load.json` likewise, by key."""
    results.mkdir(parents=True, exist_ok=True)
    md, js = results / "load.md", results / "load.json"
    text = md.read_text() if md.exists() else ""
    head, marker, tail = text.partition(DISTINCT_HEADING)
    head_lines = head.rstrip("\n").split("\n") if head.strip() else []
    section = (marker + tail).rstrip("\n").split("\n") if marker else []
    head_lines = rounds_lines if rounds_lines is not None else head_lines
    section = distinct_lines if distinct_lines is not None else section
    md.write_text("\n".join([*head_lines, *([""] if head_lines and section else []), *section]) + "\n")
    data = {}
    if js.exists():
        try:
            data = json.loads(js.read_text())
        except ValueError:
            data = {}
    data.update(json_part or {})
    js.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    sys.exit(main())
