"""Slow faults of a week of running: a full disk, a full log folder, a stop during pulls. Each leaves cached
images pulling and the processes alive, and the mirror recovers on its own.

Before, mitmdump exited at the first log line or flow it could not write (the supervisor then stopped the
registry: cached images refused too), and a SIGTERM ended every pull in flight at once."""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from devtools import seed
from devtools.ports import free_port
from devtools.skopeo import PullError, pull
from registry_mirror.cli import processes
from registry_mirror.tls import certs

from .conftest import (
    assert_pulled_identical,
    assert_storage_intact,
    blob_gets,
    credentials_of,
    small_image,
    wait_for,
)
from .test_run import cli, write_config

pytestmark = pytest.mark.root
PULL_DEADLINE = 120


@pytest.fixture
def small_filesystem(tmp_path):
    """Mount a tmpfs of the given size at a new folder; unmounted (and its writers' files gone) after the test."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
        mounted.append(folder)
        return folder
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int, tries: int = 20) -> Path:
    """A file that takes all but `leave` bytes of the filesystem's free space. The mirror may write between the
    measure and the allocation (its logs can share the filesystem): then it is measured again."""
    filler = folder / "filler"
    for _ in range(tries):
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize + (filler.stat().st_size if filler.exists() else 0)
        try:
            with open(filler, "wb") as f:  # truncated: its old size is free space again
                if free > leave:
                    os.posix_fallocate(f.fileno(), 0, free - leave)
            return filler
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    raise AssertionError(f"could not fill {folder} to {leave} bytes free in {tries} tries: the mirror keeps writing")


def alive(mirror) -> bool:
    return mirror.mirror.mitm.poll() is None and mirror.mirror.registry.poll() is None


def pull_ok(mirror, image, dest: Path, ref: str | None = None) -> None:
    pull(f"{mirror.address}/{image.name}{ref or ':' + image.tag}", dest, cert_dir=mirror.trust,
         timeout=PULL_DEADLINE)
    assert_pulled_identical(dest, image)


@pytest.mark.parametrize("layout", ["everything", "storage"])
def test_a_full_disk_refuses_cold_fetches_serves_cached_images_and_recovers(upstream, mirror_factory, layer_cache,
                                                                           small_filesystem, tmp_path, layout):
    """`everything`: storage, spool, logs and the flow dump on one small filesystem, as they usually share one;
    `storage`: the storage and the spool there, logs elsewhere."""
    disk = small_filesystem("disk", "48m")
    cached = small_image(layer_cache, name="team/cached")
    uncached = small_image(layer_cache, name="team/uncached", seed_base=60)
    for image in (cached, uncached):
        seed.push(upstream.registry_url, image)
    where = {"workdir": disk} if layout == "everything" else \
        {"storage": disk / "storage", "cache": {"spool_dir": str(disk / "spool")}}
    mirror = mirror_factory(credentials_of(upstream), mirror_keys={"min_free": "16MiB"}, **where)
    pull_ok(mirror, cached, tmp_path / "warmup")
    mirror.settle(upstream, cached)

    filler = fill(disk, leave=8 * seed.MIB)  # under the reserve
    with pytest.raises(PullError):
        pull(f"{mirror.address}/{uncached.name}:{uncached.tag}", tmp_path / "refused", cert_dir=mirror.trust,
             timeout=PULL_DEADLINE)
    stats = mirror.stats()["disk"]
    assert stats["refused_fetches"] >= 1 and "mirror.min_free" in stats["last_refusal"]
    assert any(fs["low"] and fs["what"] == "storage" for fs in stats["filesystems"])
    assert not any(uncached.name in r["path"] for r in blob_gets(upstream.stats()))  # refused before the WAN
    pull_ok(mirror, cached, tmp_path / "by-tag")  # the registry's tag link is rewritten: the reserve holds it
    assert alive(mirror)

    fill(disk, leave=0)  # full: with `everything`, every log line and flow now fails to be written
    for n in range(3):
        pull_ok(mirror, cached, tmp_path / f"full-{n}", ref=f"@{cached.manifest_digest}")
    if layout == "everything":
        wait_for(lambda: mirror.stats()["disk"]["log_files"].get("mitmproxy.log", {}).get("dropped_lines", 0) > 0,
                 "the supervisor to report dropped log lines")
        assert mirror.stats()["disk"]["dump"]["dropped"] > 0
    assert alive(mirror)

    filler.unlink()  # space comes back: no restart
    pull_ok(mirror, uncached, tmp_path / "recovered")
    mirror.settle(upstream, uncached)
    assert alive(mirror)
    assert_storage_intact(mirror.storage)


def test_a_full_log_folder_drops_lines_and_the_mirror_keeps_serving(upstream, mirror_factory, layer_cache,
                                                                    small_filesystem, tmp_path):
    logs = small_filesystem("logs", "1m")
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), log_dir=logs)
    filler = fill(logs, leave=0)
    for n in range(3):
        pull_ok(mirror, image, tmp_path / f"pull-{n}")
    wait_for(lambda: mirror.stats()["disk"]["log_files"].get("mitmproxy.log", {}).get("dropped_lines", 0) > 0,
             "the supervisor to report dropped log lines")
    assert alive(mirror)
    size = (logs / "mitmproxy.log").stat().st_size
    filler.unlink()
    pull_ok(mirror, image, tmp_path / "after")
    wait_for(lambda: (logs / "mitmproxy.log").stat().st_size > size, "log lines to be written again")
    assert alive(mirror)


def test_sigterm_lets_a_blob_get_in_flight_finish(upstream, wire_factory, mirror_factory, layer_cache):
    """A stop (systemd restart, upgrade) during a pull: the registry refuses new connections at once, the blob GET
    it is serving ends whole, then both processes exit."""
    wire = wire_factory(upstream)
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream, via=wire), dump=False)
    layer = image.layers[0]
    wire.behave(target="blobs", hold_after=256 * 1024, hold_times=1)
    context = ssl.create_default_context(cafile=str(mirror.trust / "ca.crt"))
    got: dict = {}

    def get_blob():
        url = f"https://{mirror.address}/v2/{image.name}/blobs/{layer.digest}"
        try:
            with urllib.request.urlopen(url, timeout=PULL_DEADLINE, context=context) as resp:
                got["first"] = resp.read(1)
                got["body"] = got["first"] + resp.read()
        except (OSError, http.client.HTTPException) as e:
            got["error"] = e
    client = threading.Thread(target=get_blob)
    client.start()
    wait_for(lambda: wire.stats()["holding"] == 1 and "first" in got, "the blob to be held mid-way")
    stopper = threading.Thread(target=mirror.mirror.stop)
    stopper.start()
    host, port = mirror.cfg.mirror.listen.host, mirror.cfg.mirror.listen.port
    wait_for(lambda: not accepts(host, port), "the registry to close its listener")
    assert mirror.mirror.registry.poll() is None  # still draining
    wire.release()
    client.join(PULL_DEADLINE)
    stopper.join(PULL_DEADLINE)
    assert "error" not in got, got.get("error")
    assert "sha256:" + hashlib.sha256(got["body"]).hexdigest() == layer.digest
    assert mirror.mirror.registry.returncode == 0 and mirror.mirror.mitm.poll() is not None


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def served_certificate(host: str, port: int) -> bytes:
    """The certificate a TLS client is shown now (DER), whoever signed it."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


def served_or_none(host: str, port: int) -> bytes | None:
    """The certificate served, or None in the moment between the old registry's listener and the new one's."""
    try:
        return served_certificate(host, port)
    except OSError:
        return None


def test_a_renewed_certificate_restarts_the_registry_onto_it(tmp_path):
    """Registry 2.8 reads its certificate only at start: `up` notices the new pair and restarts it, draining."""
    mirror_port = free_port()
    cfg = write_config(tmp_path, mirror_port, free_port())
    proc = cli(tmp_path, "--config", str(cfg), "up", "--log-dir", str(tmp_path / "logs"))
    try:
        processes.wait_for_port("127.0.0.1", mirror_port, proc, timeout=60, what="artifactory-mirror up")
        first = served_certificate("127.0.0.1", mirror_port)
        renewed = tmp_path / "renewed"
        certs.ensure_self_signed(str(renewed / "mirror.crt"), str(renewed / "mirror.key"), extra_names=("127.0.0.1",))
        # as a renewal lands: the key, then the certificate, each replaced whole
        os.replace(renewed / "mirror.key", tmp_path / "c/mirror.key")
        os.replace(renewed / "mirror.crt", tmp_path / "c/mirror.crt")
        wait_for(lambda: served_or_none("127.0.0.1", mirror_port) not in (first, None),
                 "the renewed certificate served")
        assert served_certificate("127.0.0.1", mirror_port) == ssl.PEM_cert_to_DER_cert(
            (tmp_path / "c/mirror.crt").read_text())
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert "changed: the registry restarted with it" in err and "no listener for" in err
    finally:
        processes.stop(proc)
