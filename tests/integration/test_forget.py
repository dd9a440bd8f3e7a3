"""`artifactory-mirror forget`: an image deleted upstream (a leaked secret) stops being served, even while
Artifactory is down, when the stock registry would otherwise answer from its own tag."""
from __future__ import annotations

import subprocess

import pytest

from devtools import seed
from devtools.skopeo import PullError, pull

from .conftest import MIRROR_COMMAND, assert_storage_intact, credentials_of, small_image

PULL_DEADLINE = 120


def test_a_forgotten_tag_is_not_served_from_storage_while_the_upstream_fails(upstream, mirror_factory, layer_cache,
                                                                             tmp_path):
    image = small_image(layer_cache)
    kept = small_image(layer_cache, name="team/kept", seed_base=70)
    for each in (image, kept):
        seed.push(upstream.registry_url, each)
    mirror = mirror_factory(credentials_of(upstream), cache={"tag_ttl": 0})
    for each in (image, kept):
        pull(f"{mirror.address}/{each.name}:{each.tag}", tmp_path / each.name, cert_dir=mirror.trust,
             timeout=PULL_DEADLINE)
    mirror.settle(upstream, image, kept)
    upstream.fault(mode="status", code=503)  # cached tags are served from the registry's storage now

    command = [MIRROR_COMMAND, "--config", mirror.cfg.source, "forget"]
    dry = subprocess.run([*command, "--dry-run", f"{image.name}:{image.tag}"], capture_output=True, text=True)
    assert dry.returncode == 0 and f"would forget {image.name}@{image.manifest_digest}" in dry.stdout
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "still", cert_dir=mirror.trust,
         timeout=PULL_DEADLINE)  # a dry run changes nothing
    done = subprocess.run([*command, f"{image.name}:{image.tag}"], capture_output=True, text=True)
    assert done.returncode == 0 and f"forgot {image.name}@{image.manifest_digest}" in done.stdout
    assert "the running mirror" in done.stdout

    for ref in (f":{image.tag}", f"@{image.manifest_digest}"):
        with pytest.raises(PullError):
            pull(f"{mirror.address}/{image.name}{ref}", tmp_path / "gone", cert_dir=mirror.trust,
                 timeout=PULL_DEADLINE)
    pull(f"{mirror.address}/{kept.name}:{kept.tag}", tmp_path / "kept", cert_dir=mirror.trust,
         timeout=PULL_DEADLINE)  # another image: still served
    assert mirror.stats()["storage"]["images_forgotten"] == 1
    assert_storage_intact(mirror.storage)
