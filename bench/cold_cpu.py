"""`./run.sh bench-cpu`: where a cold pull's CPU goes, process by process, on loopback.

Each round pulls the seed's 230 MB image directly from the Artifactory-compatible front, then cold through a
new, empty mirror, and reads each process's user + system CPU time from /proc around the pull: the front,
the registry behind it, the addon's mitmdump and the mirror's stock registry (skopeo's own is not counted).
Then the floor: the mirror's registry restarted with empty storage while every blob is still in the addon's
spool, so the pull goes through the stock registry and the addon but nothing crosses to the upstream.
Also the megabytes written to the disk during each pull (/proc/diskstats). Prints every round and the
medians, and saves them to bench/results/cpu.md: what bounds a cold pull on a small machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.procstat import cpu_seconds
from devtools import seed
from devtools.demo import write_mirror_config
from devtools.ports import free_port
from devtools.skopeo import pull
from devtools.upstream_harness import UpstreamHarness, wait_until_quiet
from registry_mirror.cli import processes
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load
from registry_mirror.tls import certs

ROOT = Path(__file__).resolve().parents[1]


def disk_written_mb(path: Path) -> float:
    """Megabytes written so far to the block device holding `path` (from /proc/diskstats)."""
    dev = os.stat(path).st_dev
    sysfs = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    name = sysfs.resolve().name if sysfs.exists() else ""
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if fields[2] == name:
            return int(fields[9]) * 512 / 1e6
    return float("nan")  # not a block device (tmpfs, overlay): not measured


def measured(pids: dict[str, int], action, settle=lambda: None, disk: Path | None = None):
    """The action's wall time, each process's CPU time from its start until `settle` returns, and the
    megabytes written to `disk`'s device meanwhile."""
    before = {name: cpu_seconds([pid]) for name, pid in pids.items()}
    written = disk_written_mb(disk) if disk else 0.0
    seconds = action()
    settle()
    cpu = {name: cpu_seconds([pid]) - before[name] for name, pid in pids.items()}
    return seconds, cpu, (disk_written_mb(disk) - written if disk else 0.0)


@dataclass
class Round:
    direct: float  # seconds
    direct_cpu: dict[str, float]  # CPU-seconds by process
    direct_disk: float  # MB written to the disk
    cold: float
    cold_cpu: dict[str, float]
    cold_disk: float
    floor: float

    def line(self) -> str:
        return (f"direct {self.direct:.2f} s ({_cpu(self.direct_cpu)}; {self.direct_disk:.0f} MB to disk); cold via "
                f"mirror {self.cold:.2f} s ({_cpu(self.cold_cpu)}; {self.cold_disk:.0f} MB to disk); floor "
                f"{self.floor:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(prog="run.sh bench-cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=str(ROOT / "data" / "bench-cpu"))
    parser.add_argument("--layer-cache", default=str(ROOT / "data" / "layers"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    upstream = UpstreamHarness(workdir / "upstream", auth="basic")
    rounds: list[Round] = []
    try:
        upstream.start()
        java = seed.seed_demo_images(upstream.registry_url, Path(args.layer_cache))["java"]
        ref = f"{java.name}:{java.tag}"
        front = {"front": upstream.procs[1].pid, "upstream registry": upstream.procs[0].pid}
        for i in range(args.rounds):
            run = workdir / f"round{i}"
            run.mkdir(parents=True)
            direct, direct_cpu, direct_disk = measured(front, partial(
                pull, f"127.0.0.1:{upstream.front_port}/{ref}", run / "direct", tls_verify=False,
                creds=f"{upstream.username}:{upstream.password}"), disk=run)
            cfg_path = write_mirror_config(run, upstream.url, upstream.username, upstream.password,
                                           free_port(), free_port())
            with cfg_path.open("a") as f:  # the floor pull is served from the spools of the cold one
                f.write("cache:\n  spool_keep: 600\n  tag_ttl: 600\n")
            cfg = load(cfg_path)
            certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key)
            mirror = Supervisor(cfg, run / "logs")
            try:
                mirror.start()
                wait_until_quiet(upstream, quiet=0.5)
                pids = {**front, "addon": mirror.mitm.pid, "mirror registry": mirror.registry.pid}
                trust = certs.trust_folder(cfg.mirror.tls_cert)  # written by start()
                # the registry's background fetch that outlives the pull is counted too
                cold, cold_cpu, cold_disk = measured(pids, partial(pull, f"{cfg.mirror.listen}/{ref}", run / "cold",
                                                                   cert_dir=trust),
                                                     partial(wait_until_quiet, upstream, quiet=1.0), disk=run)
                restart_registry_empty(mirror)
                fetched_before = upstream.stats()["body_bytes"]
                floor = pull(f"{cfg.mirror.listen}/{ref}", run / "floor", cert_dir=trust)
                assert upstream.stats()["body_bytes"] == fetched_before, "the floor pull reached the upstream"
            finally:
                mirror.stop()
            rounds.append(Round(direct, direct_cpu, direct_disk, cold, cold_cpu, cold_disk, floor))
            print(f"round {i + 1}: {rounds[-1].line()}", flush=True)
            for pulled in ("direct", "cold", "floor"):
                shutil.rmtree(run / pulled)
        summary = summarize(rounds, java.size)
        print("\n" + summary)
        results = ROOT / "bench" / "results" / "cpu.md"
        lines = "\n".join(f"- round {i + 1}: {r.line()}" for i, r in enumerate(rounds))
        results.write_text(f"# Where a cold pull's CPU goes (loopback)\n\nMeasured {time.strftime('%Y-%m-%d')} with "
                           f"`./run.sh bench-cpu --rounds {args.rounds}` on a {os.cpu_count()}-core machine.\n\n"
                           f"{lines}\n\n{summary}\n")
        print(f"bench-cpu: saved {results}")
        return 0
    finally:
        upstream.stop()


def summarize(rounds: list[Round], image_size: int) -> str:
    def median(field: str) -> float:
        return statistics.median(getattr(r, field) for r in rounds)
    direct, cold, floor, direct_disk, cold_disk = map(median, ("direct", "cold", "floor", "direct_disk", "cold_disk"))
    medians = {n: statistics.median(r.cold_cpu[n] for r in rounds) for n in rounds[0].cold_cpu}
    return (f"Medians over {len(rounds)} rounds, {image_size / 1e6:.1f} MB image: direct {direct:.2f} s, "
            f"cold via mirror {cold:.2f} s ({cold / direct:.2f}x); CPU seconds of the cold pull: {_cpu(medians)}; "
            f"written to disk during the pull: direct {direct_disk:.0f} MB, cold {cold_disk:.0f} MB (the client's "
            f"copy and the mirror registry's; the addon's spool stays in the page cache); floor (empty registry, "
            f"blobs in the addon's spool, nothing from the upstream) {floor:.2f} s ({floor / direct:.2f}x).")


def restart_registry_empty(mirror: Supervisor) -> None:
    """The mirror's stock registry again, with empty storage; the addon, its caches and spools stay."""
    processes.stop(mirror.registry)
    shutil.rmtree(mirror.cfg.mirror.storage)
    mirror.start_registry()


def _cpu(by_process: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in by_process.items())


if __name__ == "__main__":
    sys.exit(main())
