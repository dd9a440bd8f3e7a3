"""The stats page, its JSON and Prometheus forms, the exchange log, and `run.sh status`, against real pulls."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devtools import seed
from devtools.ports import free_port
from devtools.skopeo import PullError, pull

from .conftest import MIRROR_COMMAND, credentials_of, small_image, wait_for


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


@pytest.fixture
def pulled(upstream, mirror_factory, layer_cache, tmp_path):
    image = small_image(layer_cache, name="team/stats")
    seed.push(upstream.registry_url, image)
    mirror = mirror_factory(credentials_of(upstream), dump=False, rewriter={"log_format": "json"},
                            metrics={"listen": f"127.0.0.1:{free_port()}"})
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "cold", cert_dir=mirror.trust)
    mirror.settle(upstream, image)
    return upstream, mirror, image


def test_counters_and_bytes_match_an_actual_pull(pulled, tmp_path):
    upstream, mirror, image = pulled
    blobs = (*image.layers, image.config)
    blob_bytes = sum(b.size for b in blobs)
    snap = mirror.stats()
    up = snap["upstream"]
    assert up["state"] == "up" and up["token_refreshes"] == 1
    assert up["bytes"]["blob"] == blob_bytes  # each blob crossed once
    assert up["bytes"]["blob"] + up["bytes"]["manifest-by-tag"] == upstream.stats()["body_bytes"]
    served_blob = snap["served"]["blob"]
    # the stock registry asks for every blob twice (client stream + its store): one miss, one coalesced
    # (its blob HEADs count as blob misses too, with no body)
    assert served_blob["coalesced"]["requests"] == len(blobs)
    assert served_blob["miss"]["bytes"] == blob_bytes and served_blob["coalesced"]["bytes"] == blob_bytes
    assert snap["served"]["manifest-by-tag"]["miss"]["requests"] == 1
    assert snap["transfers"] == []
    # the registry's notifications: what the client received; a cold pull saves nothing on the WAN
    pulled_bytes = blob_bytes + len(image.manifest)
    wait_for(lambda: mirror.stats()["bytes"]["served_to_clients"] == pulled_bytes, "the cold pull's notifications")
    cold = mirror.stats()["bytes"]
    assert cold["saved"] == max(0, cold["served_to_clients"] - cold["fetched_from_upstream"])

    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "warm", cert_dir=mirror.trust)
    wait_for(lambda: mirror.stats()["bytes"]["served_to_clients"] == 2 * pulled_bytes, "the warm pull's")
    warm = mirror.stats()
    assert warm["bytes"]["saved"] == 2 * pulled_bytes - warm["bytes"]["fetched_from_upstream"] > blob_bytes * 0.99
    assert warm["registry_pulls"]["clients"]["blob"]["bytes"] == 2 * blob_bytes
    assert warm["served"]["manifest-by-tag"]["hit"]["requests"] >= 1
    assert warm["upstream"]["bytes"] == up["bytes"]  # nothing more crossed


def test_prometheus_text_and_json_log_lines(pulled):
    upstream, mirror, image = pulled
    metrics = get(f"{mirror.rewriter}/metrics").decode()
    blob_bytes = sum(b.size for b in (*image.layers, image.config))
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line and not line.startswith("#")}
    assert values['mirror_requests_total{class="blob",outcome="coalesced"}'] == len(image.layers) + 1
    assert values['mirror_upstream_bytes_total{class="blob"}'] == blob_bytes
    assert "mirror_upstream_up 1.0" in metrics and "mirror_token_refreshes_total 1.0" in metrics
    # the same on the metrics listener a fleet's Prometheus scrapes, with a health path and nothing else
    listener = f"http://{mirror.cfg.metrics.listen}"
    fleet = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
             for line in get(f"{listener}/metrics").decode().splitlines() if line and not line.startswith("#")}
    assert fleet['mirror_upstream_bytes_total{class="blob"}'] == blob_bytes
    assert json.loads(get(f"{listener}/healthz")) == {"healthy": True, "reason": ""}
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(f"{listener}/_mirror/stats.json")
    assert refused.value.code == 404
    lines = [json.loads(line.split("] ", 1)[1]) for line in mirror.logs().splitlines()
             if '] {"class"' in line]
    assert {(line["class"], line["status"]) for line in lines} >= {("token", 200), ("manifest-by-tag", 200),
                                                                   ("blob", 200)}
    assert all({"method", "what", "outcome", "bytes", "ms"} <= set(line) for line in lines)
    assert upstream.password not in mirror.logs()


def test_the_stats_page_in_headless_chromium(pulled, tmp_path):
    upstream, mirror, image = pulled
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed: ./run.sh test installs it (apt-get install chromium)"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    url = f"{mirror.rewriter}/_mirror/stats"
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert '<span id="state" class="up">up</span>' in dom
    assert 'id="answers"' in dom and ">blob<" in dom and ">coalesced<" in dom and ">miss<" in dom
    assert "WAN saved" in dom and 'http-equiv="refresh"' in dom
    assert 'id="upstream"' in dom and ">token<" in dom  # exchanges with the upstream, tokens included
    shot = Path(os.environ.get("MIRROR_SCREENSHOT", tmp_path / "stats.png"))
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1100,760", "--hide-scrollbars", url],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_sh_status_summarises_the_running_mirror(pulled):
    upstream, mirror, image = pulled
    result = subprocess.run([MIRROR_COMMAND, "--config", mirror.cfg.source, "status"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "UP" in result.stdout and "WAN saved" in result.stdout and "blob" in result.stdout


def test_a_missing_digest_shows_clients_500_and_the_page_says_why(pulled, tmp_path):
    upstream, mirror, image = pulled
    missing = "sha256:" + "0" * 64
    with pytest.raises(PullError):  # the stock registry answers 500 whatever the addon says
        pull(f"{mirror.address}/{image.name}@{missing}", tmp_path / "missing", cert_dir=mirror.trust)
    snap = mirror.stats()
    assert snap["missing_digests"]["upstream"] >= 1
    assert f"{image.name}@{missing}: the upstream has no such manifest (404)" in snap["upstream"]["last_error"]
    assert snap["upstream"]["state"] == "up"  # an answer, not an outage
    result = subprocess.run([MIRROR_COMMAND, "--config", mirror.cfg.source, "status"],
                            capture_output=True, text=True, timeout=60)
    assert "manifests by digest the upstream does not have:" in result.stdout
