"""`./run.sh demo`: the embedded default. Everything it starts runs on loopback and is stopped at the end.

An Artifactory-compatible upstream (a real docker-registry behind the front: repository-path prefix, Basic
credentials, the token flow) is seeded with the seed's Java service (160 MB + 60 MB of random bytes) and a
small image; the mirror is started as `./run.sh up` starts it; skopeo pulls cold, then warm, and the
table says what each pull cost in time and in upstream bytes.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from devtools.ports import free_port
from registry_mirror.cli import processes
from registry_mirror.cli.supervisor import Supervisor
from registry_mirror.config.load import load
from registry_mirror.stats.views import JSON_PATH
from registry_mirror.tls import certs

from . import seed
from .skopeo import pull
from .upstream_harness import UpstreamHarness, wait_until_settled

ROOT = Path(__file__).resolve().parents[1]


def write_mirror_config(workdir: Path, upstream_url: str, username: str, password: str,
                        mirror_port: int, rewriter_port: int, tls: bool = True) -> Path:
    """A mirror.yaml that uses only the documented keys; the password comes from a file, as in production."""
    secret = workdir / "upstream-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    path = workdir / "mirror.yaml"
    path.write_text(
        f"upstream:\n  url: {upstream_url}\n  repository: docker-local\n  username: {username}\n"
        f"  password_file: {secret}\n"
        f"mirror:\n  listen: 127.0.0.1:{mirror_port}\n  storage: {workdir / 'mirror-storage'}\n"
        f"  tls: {'true' if tls else 'false'}\n"
        f"  tls_cert: {workdir / 'certs/mirror.crt'}\n  tls_key: {workdir / 'certs/mirror.key'}\n"
        f"rewriter:\n  listen: 127.0.0.1:{rewriter_port}\n")
    return path


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory, from /proc (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def run(workdir: Path, layer_cache: Path, big: tuple[int, int]) -> int:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    upstream = UpstreamHarness(workdir / "upstream")
    mirror = None
    try:
        print("demo: starting the Artifactory-compatible upstream (docker-registry + front, token flow)")
        upstream.start()
        print(f"demo: seeding {_mb(sum(big))} of layers (cached in {layer_cache})")
        images = seed.seed_demo_images(upstream.registry_url, layer_cache, big)
        cfg_path = write_mirror_config(workdir, upstream.url, upstream.username, upstream.password,
                                       free_port(), free_port())
        cfg = load(cfg_path)
        certs.ensure_self_signed(cfg.mirror.tls_cert, cfg.mirror.tls_key)
        trust = certs.write_trust_folder(cfg.mirror.tls_cert, cfg.mirror.tls_cert)
        mirror = Supervisor(cfg, workdir / "mirror-logs")
        mirror.start()
        print(f"demo: mirror on https://{cfg.mirror.listen} (config {cfg_path}, logs {workdir / 'mirror-logs'})\n")
        rows = []
        for image in (images["java"], images["small"]):
            ref = f"{image.name}:{image.tag}"
            upstream_host = f"127.0.0.1:{upstream.front_port}"
            direct = pull(f"{upstream_host}/{ref}", workdir / "pulled", tls_verify=False,
                          creds=f"{upstream.username}:{upstream.password}")
            upstream.control("reset")
            cold = pull(f"{cfg.mirror.listen}/{ref}", workdir / "pulled", cert_dir=trust)
            # the stock registry's background fetches end after the client's pull
            wait_until_settled(upstream, cfg.mirror.storage, cfg.rewriter.listen.local_url(JSON_PATH),
                               [blob.digest for blob in (*image.layers, image.config)])
            cold_bytes = upstream.stats()["body_bytes"]
            upstream.control("reset")
            warm = pull(f"{cfg.mirror.listen}/{ref}", workdir / "pulled", cert_dir=trust)
            warm_bytes = upstream.stats()["body_bytes"]
            rows.append((ref, image.size, direct, cold, warm, cold_bytes, warm_bytes))
        print_table(rows)
        print(f"\nmitmdump (the addon) peak memory: {peak_rss_mb(mirror.mitm.pid):.0f} MB (VmHWM)")
        return 0
    except (processes.ProcessError, RuntimeError) as e:
        print(f"demo: failed: {e}", file=sys.stderr)
        return 1
    finally:
        if mirror:
            mirror.stop()
        upstream.stop()


def print_table(rows) -> None:
    header = ("image", "size", "direct pull", "cold via mirror", "warm via mirror", "upstream bytes cold",
              "upstream bytes warm")
    lines = [header]
    for ref, size, direct, cold, warm, cold_bytes, warm_bytes in rows:
        lines.append((ref, _mb(size), f"{direct:.2f} s", f"{cold:.2f} s", f"{warm:.2f} s",
                      f"{_mb(cold_bytes)} ({cold_bytes / size:.2f}x)", f"{_mb(warm_bytes)} ({warm_bytes / size:.2f}x)"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.sh demo", description=__doc__)
    parser.add_argument("--workdir", default=str(ROOT / "data" / "demo"))
    parser.add_argument("--layer-cache", default=str(ROOT / "data" / "layers"))
    parser.add_argument("--base-mb", type=int, default=160)
    parser.add_argument("--app-mb", type=int, default=60)
    args = parser.parse_args(argv)
    big = (args.base_mb * seed.MIB, args.app_mb * seed.MIB)
    return run(Path(args.workdir), Path(args.layer_cache), big)


if __name__ == "__main__":
    sys.exit(main())
