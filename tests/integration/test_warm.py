"""`run.sh warm`: every platform of an index lands in the mirror, which then serves it with the upstream gone."""
from __future__ import annotations

import subprocess
from pathlib import Path

from devtools import seed
from devtools.skopeo import pull

from .conftest import MIRROR_COMMAND, assert_storage_intact, credentials_of, small_image, stored_digests


def run_warm(mirror, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MIRROR_COMMAND, "warm", "--config", mirror.cfg.source, *args],
                          capture_output=True, text=True, timeout=300, input=stdin)


def test_warm_fetches_every_platform_then_serves_without_the_upstream(upstream, mirror_factory, layer_cache,
                                                                      tmp_path):
    amd64 = small_image(layer_cache, name="team/multi", tag="amd64", seed_base=70)
    arm64 = small_image(layer_cache, name="team/multi", tag="arm64", seed_base=80)
    seed.push_index(upstream.registry_url, "team/multi", "1.0", {"linux/amd64": amd64, "linux/arm64": arm64})
    plain = small_image(layer_cache, name="team/plain", seed_base=90)
    seed.push(upstream.registry_url, plain)
    mirror = mirror_factory(credentials_of(upstream), dump=False)

    refs = tmp_path / "deploy.txt"
    refs.write_text("# tomorrow's deploy\nteam/multi:1.0\n\n")
    result = run_warm(mirror, "-f", str(refs), f"team/plain@{plain.manifest_digest}")
    assert result.returncode == 0, result.stderr
    assert "2 of 2 images" in result.stdout and "MB in" in result.stdout
    assert "team/multi:1.0: 2 platform(s)" in result.stderr and "%" in result.stderr
    wanted = {b.digest for image in (amd64, arm64, plain) for b in (*image.layers, image.config)}
    storage = Path(mirror.cfg.mirror.storage)
    assert wanted <= stored_digests(storage)
    assert_storage_intact(storage)

    upstream.stop()  # the deploy happens while the central registry is away
    for arch in ("amd64", "arm64"):
        subprocess.run(["skopeo", "--insecure-policy", "--override-arch", arch, "copy", "--src-cert-dir",
                        str(mirror.trust), f"docker://{mirror.address}/team/multi:1.0", f"dir:{tmp_path / arch}"],
                       check=True, capture_output=True, timeout=120)
    pull(f"{mirror.address}/team/plain@{plain.manifest_digest}", tmp_path / "plain", cert_dir=mirror.trust)


def test_warm_names_bad_references_and_unknown_images(upstream, mirror_factory):
    mirror = mirror_factory(credentials_of(upstream), dump=False)
    result = run_warm(mirror, "Team/App:1.0", "team/missing:1.0")
    assert result.returncode == 1
    assert "'Team/App:1.0' is not an image reference like team/app:1.0" in result.stderr
    assert "team/missing:1.0: the mirror answered 404" in result.stderr
    assert "0 of 2 images" in result.stdout
